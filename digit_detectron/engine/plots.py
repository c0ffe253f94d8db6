"""
PNG plots of a training run's ``metrics.json`` (detectron2's JSONWriter: one json object per line):
``loss.png`` (loss terms), ``schedule.png`` (learning rate, IoU-loss lambda), ``validation.png`` (AP,
AR, number accuracy), ``time.png`` (s/iteration, data time) and ``learning_curve.png`` (AP, AP50 and
number accuracy against minutes of training).

``plot_metrics`` survives what real runs leave behind: missing keys, NaN, a partial last line of a
killed run (glued to the first line of the resumed run, since JSONWriter appends) and the iterations
a resumed run logs again (the resumed run's values win).
"""

import json
import logging
import math
import os
from collections import defaultdict

import numpy as np
from matplotlib.figure import Figure

from ..utils.errors import DigitError
from ..utils.io import atomic_open

logger = logging.getLogger(__name__)

# Every PNG is FIGSIZE inches at DPI: 1200 x 800 px.
FIGSIZE = (12, 8)
DPI = 100
# Fewest points the moving average of the loss curves spans (see `smooth`).
SMOOTHING_MIN_SPAN = 4
AP_KEYS = ("bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/APs", "bbox/APm", "bbox/APl")
# Evaluation results that are counts, not scores: not plotted.
COUNT_KEYS = ("number/num_images",)


class MetricsError(DigitError, ValueError):
    """A metrics file is missing or holds no metrics; the message names the file."""


def _is_train_record(record):
    return any(k.startswith("loss") or k == "total_loss" for k in record)


def _parse_line(line):
    """The dict of one line, or of its tail when a killed run's partial line precedes it."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        start = line.rfind("{")
        if start <= 0:
            raise
        return json.loads(line[start:])


def read_metrics(metrics_json):
    """
    Read a metrics.json into ``{iteration: {key: float}}`` sorted by iteration. Lines that do not
    parse are skipped with a warning; when a training line goes back in iteration (a resumed run),
    everything logged at or after that iteration before it is dropped.
    """
    try:
        with open(metrics_json) as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, IsADirectoryError):
        raise MetricsError(f"{metrics_json}: metrics file not found") from None
    except UnicodeDecodeError:
        raise MetricsError(f"{metrics_json}: not a text file") from None

    kept, last_train_iter, skipped = [], -1, 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = _parse_line(line)
        except json.JSONDecodeError:
            skipped += 1
            logger.warning(f"{metrics_json}:{lineno}: skipped a line that is not json (a killed run?)")
            continue
        iteration = record.get("iteration") if isinstance(record, dict) else None
        if not isinstance(iteration, (int, float)) or not math.isfinite(iteration):
            skipped += 1
            logger.warning(f"{metrics_json}:{lineno}: skipped a line without an 'iteration'")
            continue
        iteration = int(iteration)
        if _is_train_record(record):
            if iteration <= last_train_iter:
                logger.info(f"{metrics_json}:{lineno}: run resumed at iteration {iteration}")
                kept = [(it, r) for it, r in kept if it < iteration]
            last_train_iter = iteration
        kept.append((iteration, record))

    merged = defaultdict(dict)
    for iteration, record in kept:
        for key, value in record.items():
            if key != "iteration" and isinstance(value, (int, float)) and not isinstance(value, bool):
                merged[iteration][key] = float(value)
    if not merged:
        raise MetricsError(
            f"{metrics_json}: no metrics found ({len(lines)} lines, {skipped} unreadable); "
            "expected detectron2's metrics.json, one json object with an 'iteration' per line"
        )
    return dict(sorted(merged.items()))


def series(metrics, key):
    """``(iterations, values)`` arrays of the finite values of ``key``."""
    points = [(it, r[key]) for it, r in metrics.items() if key in r and math.isfinite(r[key])]
    if not points:
        return np.zeros(0), np.zeros(0)
    its, values = zip(*points)
    return np.asarray(its, dtype=float), np.asarray(values, dtype=float)


def smooth(values, span=None):
    """
    Debiased exponential moving average over ``span`` points (pandas' ``ewm(span)``); by default
    a fiftieth of the series (at least SMOOTHING_MIN_SPAN), so that long runs get a readable trend.
    """
    span = span or max(SMOOTHING_MIN_SPAN, len(values) // 50)
    weight = 1 - 2 / (span + 1)
    out, avg = np.empty(len(values)), 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * v
        out[i] = avg / (1 - weight ** (i + 1))
    return out


def iters_per_epoch_from(metrics):
    """Iterations per epoch implied by a logged fractional ``epoch`` (iteration / iters_per_epoch)."""
    its, epochs = series(metrics, "epoch")
    valid = epochs > 0
    if not valid.any():
        return None
    ipe = float(np.median(its[valid] / epochs[valid]))
    return ipe if ipe > 0 else None


def _keys(metrics, predicate):
    """Sorted keys that satisfy ``predicate`` and have at least one finite value."""
    return sorted({k for r in metrics.values() for k, v in r.items() if predicate(k) and math.isfinite(v)})


def _new_figure(nrows, title):
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    axes = fig.subplots(nrows, 1, squeeze=False)[:, 0]
    fig.suptitle(title)
    return fig, axes


def _save(fig, axes, path, metrics, iters_per_epoch):
    """
    Grid, legends, the run's whole iteration range below and the epoch axis on top; write the
    PNG atomically.
    """
    last = max(metrics)
    for ax in axes:
        ax.set_xlim(0, max(last, 1) * 1.02)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best", ncol=2)
    if iters_per_epoch:
        top = axes[0].secondary_xaxis("top", functions=(lambda i: i / iters_per_epoch, lambda e: e * iters_per_epoch))
        top.set_xlabel("epoch")
    axes[-1].set_xlabel("iteration")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)
    return path


def _plot_raw_and_smooth(ax, its, values, label, color):
    ax.plot(its, values, color=color, alpha=0.25, linewidth=0.8)
    ax.plot(its, smooth(values), color=color, linewidth=1.6, label=label)


def plot_losses(metrics, path, iters_per_epoch=None):
    """total_loss (top) and each loss term (bottom), raw (faint) and smoothed."""
    terms = _keys(metrics, lambda k: k.startswith("loss"))
    if not len(series(metrics, "total_loss")[0]) and not terms:
        return None
    fig, (ax_total, ax_terms) = _new_figure(2, "Training loss (faint: logged, solid: smoothed)")
    its, values = series(metrics, "total_loss")
    if len(its):
        _plot_raw_and_smooth(ax_total, its, values, "total_loss", "C0")
    for i, key in enumerate(terms):
        _plot_raw_and_smooth(ax_terms, *series(metrics, key), key, f"C{i % 10}")
    ax_total.set_ylabel("total loss")
    ax_terms.set_ylabel("loss terms")
    return _save(fig, [ax_total, ax_terms], path, metrics, iters_per_epoch)


def plot_schedule(metrics, path, iters_per_epoch=None):
    """Learning rate and, when logged, the IoU-loss lambda."""
    panels = [
        (k, label)
        for k, label in (("lr", "learning rate"), ("iou_loss_lambda", "IoU-loss lambda"))
        if len(series(metrics, k)[0])
    ]
    if not panels:
        return None
    fig, axes = _new_figure(len(panels), "Schedule")
    for ax, (key, label) in zip(axes, panels):
        ax.plot(*series(metrics, key), color="C0", label=key)
        ax.set_ylabel(label)
    return _save(fig, axes, path, metrics, iters_per_epoch)


def plot_validation(metrics, path, iters_per_epoch=None):
    """COCO AP, AR (if logged), per-digit AP and the number metrics, one marker per evaluation."""
    ap = [k for k in AP_KEYS if len(series(metrics, k)[0])]
    ar = _keys(metrics, lambda k: k.startswith("bbox/AR"))
    per_class = _keys(metrics, lambda k: k.startswith("bbox/AP-"))
    number = _keys(metrics, lambda k: k.startswith("number/") and k not in COUNT_KEYS)
    panels = [
        (keys, label)
        for keys, label in ((ap, "box AP"), (ar, "box AR"), (per_class, "AP per digit"), (number, "whole number"))
        if keys
    ]
    if not panels:
        return None
    fig, axes = _new_figure(len(panels), "Validation")
    for ax, (keys, label) in zip(axes, panels):
        for i, key in enumerate(keys):
            ax.plot(*series(metrics, key), marker="o", markersize=3, color=f"C{i % 10}", label=key.split("/", 1)[1])
        ax.set_ylabel(label)
    return _save(fig, axes, path, metrics, iters_per_epoch)


def plot_time(metrics, path, iters_per_epoch=None):
    """Seconds per iteration (and data time), elapsed wall time estimated from them, and the ETA."""
    its, sec = series(metrics, "time")
    eta_its, eta = series(metrics, "eta_seconds")
    if not len(its) and not len(eta_its):
        return None
    fig, (ax_iter, ax_wall) = _new_figure(2, "Wall time")
    if len(its):
        ax_iter.plot(its, sec, label="time")
        # Each logged time stands for the iterations since the previous log line.
        steps = np.diff(np.concatenate([[-1.0], its]))
        ax_wall.plot(its, np.cumsum(steps * sec) / 3600, label="elapsed (estimated)")
    ax_iter.plot(*series(metrics, "data_time"), label="data_time")
    if len(eta_its):
        ax_wall.plot(eta_its, eta / 3600, label="ETA")
    ax_iter.set_ylabel("seconds / iteration")
    ax_wall.set_ylabel("hours")
    return _save(fig, [ax_iter, ax_wall], path, metrics, iters_per_epoch)


def training_minutes(metrics):
    """
    ``(iterations, minutes, label)``: the logged ``wall_minutes``, else (older runs) the sum of the
    logged iteration times, which leaves out evaluation.
    """
    its, minutes = series(metrics, "wall_minutes")
    if len(its):
        return its, minutes, "minutes since training started"
    its, sec = series(metrics, "time")
    steps = np.diff(np.concatenate([[-1.0], its]))
    return its, np.cumsum(steps * sec) / 60, "minutes of training (sum of iteration times, evaluation excluded)"


def plot_learning_curve(metrics, path, iters_per_epoch=None):
    """Validation AP, AP50 and number accuracy against minutes of training."""
    its, minutes, xlabel = training_minutes(metrics)
    if not len(its) or not len(series(metrics, "bbox/AP")[0]):
        return None
    fig, (ax,) = _new_figure(1, "Learning curve")
    for key, label in (("bbox/AP", "mAP@[.5:.95]"), ("bbox/AP50", "AP50"), ("number/accuracy", "number accuracy %")):
        eval_its, values = series(metrics, key)
        if len(values):
            ax.plot(np.interp(eval_its, its, minutes), values, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("percent")
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)
    return path


PLOTS = {
    "loss.png": plot_losses,
    "schedule.png": plot_schedule,
    "validation.png": plot_validation,
    "time.png": plot_time,
    "learning_curve.png": plot_learning_curve,
}


def plot_metrics(metrics_json, out_dir, iters_per_epoch=None):
    """
    Draw loss.png, schedule.png, validation.png and time.png (those with data) of ``metrics_json``
    into ``out_dir``; the epoch axis uses ``iters_per_epoch`` or the logged ``epoch``. Returns the paths.
    """
    metrics = read_metrics(metrics_json)
    iters_per_epoch = iters_per_epoch or iters_per_epoch_from(metrics)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, plot in PLOTS.items():
        path = plot(metrics, os.path.join(out_dir, name), iters_per_epoch)
        if path:
            written.append(path)
    return written
