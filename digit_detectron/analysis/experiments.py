"""Compare training runs that differ in one setting (e.g. the IoU loss type): a table and a figure."""

import logging
import math
import os
import subprocess
import sys

import matplotlib
import numpy as np
import yaml
from matplotlib.figure import Figure

from ..utils.io import atomic_open
from .plots import read_metrics, series

logger = logging.getLogger(__name__)

ABLATION_METRICS = (
    "bbox/AP",
    "bbox/AP50",
    "bbox/AP75",
    "bbox/APs",
    "bbox/APm",
    "bbox/APl",
    "bbox/AR100",
    "number/accuracy",
)


def _fmt(value):
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def _batch_size(metrics_json):
    """SOLVER.IMS_PER_BATCH from the config.yaml detectron2 saved beside ``metrics_json``, else None."""
    path = os.path.join(os.path.dirname(str(metrics_json)), "config.yaml")
    try:
        with open(path) as f:
            return int(yaml.safe_load(f)["SOLVER"]["IMS_PER_BATCH"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


def _cost(metrics, batch_size):
    """Train images/s (median step time), evaluation images/s (last) and wall minutes, or None each."""
    _, step_times = series(metrics, "time")
    train = batch_size / float(np.median(step_times)) if batch_size and len(step_times) else None
    _, speeds = series(metrics, "speed/images_per_s")
    _, minutes = series(metrics, "wall_minutes")
    return (train, speeds[-1] if len(speeds) else None, minutes[-1] if len(minutes) else None)


def summarize_runs(runs, out_dir, title="Ablation"):
    """
    ``runs``: {name: metrics.json path}. Writes ``out_dir/ablation.md`` (last evaluation of each run,
    its best AP, training and evaluation images/s and minutes) and ``out_dir/ablation.png`` (each
    metric against iteration, or against images seen when the runs' batch sizes differ; a line per
    run). Returns both paths.
    """
    metrics = {name: read_metrics(path) for name, path in runs.items()}
    batches = {name: _batch_size(path) for name, path in runs.items()}
    cost_names = ("train img/s", "eval img/s", "minutes")
    rows = [
        "| run | "
        + " | ".join(m.split("/")[-1] for m in ABLATION_METRICS)
        + " | best AP (iter) | "
        + " | ".join(cost_names)
        + " |",
        "|---" * (len(ABLATION_METRICS) + 2 + len(cost_names)) + "|",
    ]
    for name, m in metrics.items():
        last = {}
        for key in ABLATION_METRICS:
            its, values = series(m, key)
            last[key] = values[-1] if len(values) else None
        its, aps = series(m, "bbox/AP")
        best = f"{aps.max():.2f} ({int(its[aps.argmax()])})" if len(aps) else "-"
        cost = _cost(m, batches[name])
        rows.append(
            f"| {name} | "
            + " | ".join(_fmt(last[k]) for k in ABLATION_METRICS)
            + f" | {best} | "
            + " | ".join(_fmt(c) for c in cost)
            + " |"
        )
    os.makedirs(out_dir, exist_ok=True)
    md_path = os.path.join(out_dir, "ablation.md")
    with atomic_open(md_path) as f:
        f.write(
            f"# {title}\n\nLast evaluation of each run (COCO metrics and number accuracy in percent); train img/s\n"
            "from the median step time, eval img/s of the last evaluation, minutes of training incl. evaluations.\n\n"
        )
        f.write("\n".join(rows) + "\n")

    # Runs with different batch sizes are compared at equal images seen, others at equal iterations.
    by_images = None not in batches.values() and len(set(batches.values())) > 1
    colours = matplotlib.colormaps["tab20"].colors if len(metrics) > 10 else matplotlib.colormaps["tab10"].colors
    fig = Figure(figsize=(16, 8), dpi=100)
    axes = fig.subplots(2, 4).ravel()
    for ax, key in zip(axes, ABLATION_METRICS):
        for i, (name, m) in enumerate(metrics.items()):
            its, values = series(m, key)
            if len(values):
                x = (its + 1) * batches[name] if by_images else its
                ax.plot(x, values, marker="o", markersize=3, label=name, color=colours[i % len(colours)])
        ax.set_title(key)
        ax.set_xlabel("images seen" if by_images else "iteration")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    png_path = os.path.join(out_dir, "ablation.png")
    with atomic_open(png_path, "wb") as f:
        fig.savefig(f, format="png")
    return md_path, png_path


def load_experiments(path):
    """
    Read an experiments file (YAML)::

        title: what is compared
        config_file: configs/digits_cpu.yaml   # default of every run
        opts: [SOLVER.MAX_ITER, 200]           # config KEY VALUE pairs of every run
        runs:
          baseline: []                         # a run: extra opts ...
          other: {config_file: configs/x.yaml, opts: [SOLVER.BASE_LR, 0.003]}  # ... or both

    Returns ``(title, {name: (config_file, opts)})``; raises ValueError naming the file and the problem.
    """
    try:
        with open(path) as f:
            spec = yaml.safe_load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the experiments file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), dict) or not spec["runs"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty 'runs' mapping")
    common = [str(v) for v in spec.get("opts") or []]
    runs = {}
    for name, run in spec["runs"].items():
        run = {"opts": run} if run is None or isinstance(run, list) else run
        if not isinstance(run, dict) or not isinstance(run.get("opts") or [], list):
            raise ValueError(f"{path}: run {name!r} must be a list of opts or a mapping with config_file / opts")
        config_file = run.get("config_file", spec.get("config_file"))
        opts = common + [str(v) for v in run.get("opts") or []]
        if not config_file:
            raise ValueError(f"{path}: run {name!r} has no config_file (and the file sets no default)")
        if len(opts) % 2:
            raise ValueError(f"{path}: run {name!r} has an odd number of opts (KEY VALUE pairs expected)")
        runs[str(name)] = (config_file, opts)
    return str(spec.get("title", os.path.basename(str(path)))), runs


def train_runs(runs, output_dir, train_net):
    """
    Train each run of ``runs`` ({name: (config_file, opts)}) into ``output_dir/name`` with the
    ``train_net`` script, one after another. A finished run (``model_final.pth``) is kept; an
    interrupted one resumes from its last checkpoint. Returns {name: metrics.json path}.
    """
    metrics = {}
    for i, (name, (config_file, opts)) in enumerate(runs.items(), 1):
        out = os.path.join(output_dir, name)
        metrics[name] = os.path.join(out, "metrics.json")
        if os.path.isfile(os.path.join(out, "model_final.pth")):
            logger.info(f"[{i}/{len(runs)} {name}] finished earlier: {out}")
            continue
        cmd = [sys.executable, train_net, "--config-file", config_file, *opts, "OUTPUT_DIR", out]
        if os.path.isfile(os.path.join(out, "last_checkpoint")):
            cmd.insert(2, "--resume")
        logger.info(f"[{i}/{len(runs)} {name}] training: {' '.join(cmd)}")
        subprocess.run(cmd, check=True)
    return metrics


def train_and_summarize(runs, output_dir, train_net, title):
    """``train_runs`` then ``summarize_runs``; returns ``(table path, figure path, text to print)``."""
    metrics = train_runs(runs, output_dir, train_net)
    md, png = summarize_runs(metrics, output_dir, title=title)
    with open(md) as f:
        table = f.read()
    return md, png, f"{table}\nTable: {md}\nFigure: {png}"
