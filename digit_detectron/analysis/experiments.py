"""Compare training runs that differ in one setting (e.g. the IoU loss type): a table and a figure."""

import json
import logging
import math
import os
import subprocess
import sys

import matplotlib
import numpy as np
import yaml
from matplotlib.figure import Figure

from ..engine.plots import read_metrics, series
from ..utils.io import atomic_open

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


# Metrics of the seed summary: (key in an eval_results.json dataset entry, column name).
SEED_METRICS = (("bbox/AP", "AP"), ("bbox/AP50", "AP50"), ("bbox/AP75", "AP75"), ("number/accuracy", "accuracy"))


def evaluate_runs(weights, datasets, train_net):
    """
    Evaluate each run's final model ({name: weights path}) on ``datasets`` with ``train_net --eval-only``
    into ``<run>/eval``; a run whose ``eval_results.json`` exists is not evaluated again. Returns
    {name: {dataset: {"bbox": {...}, "number": {...}}}}.
    """
    results = {}
    for i, (name, path) in enumerate(weights.items(), 1):
        out = os.path.join(os.path.dirname(path), "eval")
        json_path = os.path.join(out, "eval_results.json")
        if not os.path.isfile(json_path):
            cmd = [sys.executable, train_net, "--eval-only", "--weights", path, "DATASETS.TEST", repr(tuple(datasets))]
            cmd += ["DIGITS.REPORT", "False", "OUTPUT_DIR", out]
            logger.info(f"[{i}/{len(weights)} {name}] evaluating on {', '.join(datasets)}")
            subprocess.run(cmd, check=True)
        with open(json_path) as f:
            results[name] = json.load(f)
        missing = sorted(set(datasets) - set(results[name]))
        if missing:
            raise ValueError(f"{json_path}: no results for {', '.join(missing)} (delete it to evaluate again)")
    return results


def _lookup(entry, key):
    value = entry
    for part in key.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def seed_statistics(groups, results, datasets):
    """
    ``groups``: {setting: [run name per seed]}, ``results``: {run: {dataset: eval results}}. Returns
    {setting: {dataset: {column: {"values", "mean", "sd", "min", "max"}}}}; ``sd`` is the sample standard
    deviation (n - 1), None with one seed.
    """
    stats = {}
    for setting, names in groups.items():
        for dataset in datasets:
            for key, column in SEED_METRICS:
                values = [v for v in (_lookup(results[n].get(dataset, {}), key) for n in names) if v is not None]
                entry = {"values": values, "mean": None, "sd": None, "min": None, "max": None}
                if values:
                    arr = np.asarray(values)
                    entry.update(mean=float(arr.mean()), min=float(arr.min()), max=float(arr.max()))
                    entry["sd"] = float(arr.std(ddof=1)) if len(arr) > 1 else None
                stats.setdefault(setting, {}).setdefault(dataset, {})[column] = entry
    return stats


def compare_to_baseline(stats, baseline):
    """
    Per setting, dataset and column: the difference of means against ``baseline`` and its standard
    error sqrt(sd_a^2 / n_a + sd_b^2 / n_b) (None without two seeds on both sides). A difference is
    called clear when it is more than twice its standard error (Welch's t > 2: with 3 seeds a side, a
    rough two-sided 10% level); smaller ones are within the seeds' spread.
    """
    out = {}
    for setting, by_dataset in stats.items():
        if setting == baseline:
            continue
        for dataset, by_column in by_dataset.items():
            for column, entry in by_column.items():
                base = stats[baseline][dataset][column]
                if entry["mean"] is None or base["mean"] is None:
                    continue
                diff = entry["mean"] - base["mean"]
                se = None
                if entry["sd"] is not None and base["sd"] is not None:
                    se = math.sqrt(entry["sd"] ** 2 / len(entry["values"]) + base["sd"] ** 2 / len(base["values"]))
                clear = se is not None and se > 0 and abs(diff) > 2 * se
                out.setdefault(setting, {}).setdefault(dataset, {})[column] = {"diff": diff, "se": se, "clear": clear}
    return out


def summarize_seeds(groups, results, datasets, out_dir, title="Seed ablation", labels=None):
    """
    Mean and spread over seeds of each setting ({setting: [run names]}) on each dataset: writes
    ``seeds.md`` (mean +- sd [min..max], the difference from the first setting with its standard error),
    ``seeds.json`` (every value) and ``seeds.png`` (each seed a dot, the mean a bar; a panel per
    metric and dataset). ``labels``: {dataset: what the split is, e.g. "out-of-style"}. Returns the paths.
    """
    labels = labels or {}
    stats = seed_statistics(groups, results, datasets)
    baseline = next(iter(groups))
    diffs = compare_to_baseline(stats, baseline)
    columns = [c for _, c in SEED_METRICS]
    lines = [
        f"# {title}\n",
        f"Mean +- sample sd [min..max] over seeds ({', '.join(f'{s}: {len(n)}' for s, n in groups.items())}), "
        "COCO metrics and number accuracy in percent. Below each setting: its difference from "
        f"`{baseline}` +- the standard error of that difference; **bold** where it exceeds twice its "
        "standard error (clear), otherwise it is within the seeds' spread.\n",
    ]
    for dataset in datasets:
        name = f"{dataset} ({labels[dataset]})" if dataset in labels else dataset
        lines += [f"## {name}\n", "| setting | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for setting in groups:
            cells = []
            for column in columns:
                e = stats[setting][dataset][column]
                if e["mean"] is None:
                    cells.append("-")
                    continue
                sd = f" +- {e['sd']:.2f}" if e["sd"] is not None else ""
                cells.append(f"{e['mean']:.2f}{sd} [{e['min']:.1f}..{e['max']:.1f}]")
            lines.append(f"| {setting} | " + " | ".join(cells) + " |")
            if setting in diffs and dataset in diffs[setting]:
                cells = []
                for column in columns:
                    d = diffs[setting][dataset].get(column)
                    if d is None:
                        cells.append("-")
                        continue
                    text = f"{d['diff']:+.2f}" + (f" +- {d['se']:.2f}" if d["se"] is not None else "")
                    cells.append(f"**{text}**" if d["clear"] else text)
                lines.append(f"| {setting} - {baseline} | " + " | ".join(cells) + " |")
        lines.append("")
    os.makedirs(out_dir, exist_ok=True)
    md_path = os.path.join(out_dir, "seeds.md")
    with atomic_open(md_path) as f:
        f.write("\n".join(lines))
    json_path = os.path.join(out_dir, "seeds.json")
    with atomic_open(json_path) as f:
        json.dump({"groups": groups, "baseline": baseline, "stats": stats, "differences": diffs}, f, indent=2)

    colours = matplotlib.colormaps["tab10"].colors
    fig = Figure(figsize=(3.2 * len(columns), 2.8 * len(datasets)), dpi=100)
    axes = np.asarray(fig.subplots(len(datasets), len(columns), squeeze=False))
    for r, dataset in enumerate(datasets):
        for c, column in enumerate(columns):
            ax = axes[r, c]
            for i, setting in enumerate(groups):
                e = stats[setting][dataset][column]
                if e["mean"] is None:
                    continue
                ax.bar(i, e["mean"], color=colours[i % len(colours)], alpha=0.35, width=0.6)
                ax.scatter([i] * len(e["values"]), e["values"], color=colours[i % len(colours)], s=18, zorder=3)
            ax.set_xticks(range(len(groups)), list(groups), fontsize="small")
            values = [v for s in groups for v in stats[s][dataset][column]["values"]]
            if values:
                span = max(values) - min(values)
                ax.set_ylim(min(values) - max(span, 1.0), max(values) + max(span, 1.0) * 0.5)
            style = f" ({labels[dataset]})" if dataset in labels else ""
            ax.set_title(f"{column}: {dataset}{style}", fontsize="small")
            ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    fig.tight_layout()
    png_path = os.path.join(out_dir, "seeds.png")
    with atomic_open(png_path, "wb") as f:
        fig.savefig(f, format="png")
    return md_path, json_path, png_path
