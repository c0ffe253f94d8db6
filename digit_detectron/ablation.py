"""Compare training runs that differ in one setting (e.g. the IoU loss type): a table and a figure."""
import math
import os

from matplotlib.figure import Figure

from .plots import read_metrics, series
from .utils.io import atomic_open

ABLATION_METRICS = (
    "bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/APs", "bbox/APm", "bbox/APl", "bbox/AR100", "number/accuracy",
)


def _fmt(value):
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def summarize_ablation(runs, out_dir, title="Ablation"):
    """
    ``runs``: {name: metrics.json path}. Writes ``out_dir/ablation.md`` (last evaluation of each run
    and its best AP) and ``out_dir/ablation.png`` (each metric against iteration, a line per run).
    Returns both paths.
    """
    metrics = {name: read_metrics(path) for name, path in runs.items()}
    rows = ["| run | " + " | ".join(m.split("/")[-1] for m in ABLATION_METRICS) + " | best AP (iter) |",
            "|---" * (len(ABLATION_METRICS) + 2) + "|"]
    for name, m in metrics.items():
        last = {}
        for key in ABLATION_METRICS:
            its, values = series(m, key)
            last[key] = values[-1] if len(values) else None
        its, aps = series(m, "bbox/AP")
        best = f"{aps.max():.2f} ({int(its[aps.argmax()])})" if len(aps) else "-"
        rows.append(f"| {name} | " + " | ".join(_fmt(last[k]) for k in ABLATION_METRICS) + f" | {best} |")
    os.makedirs(out_dir, exist_ok=True)
    md_path = os.path.join(out_dir, "ablation.md")
    with atomic_open(md_path) as f:
        f.write(f"# {title}\n\nLast evaluation of each run (COCO metrics and number accuracy in percent).\n\n")
        f.write("\n".join(rows) + "\n")

    fig = Figure(figsize=(16, 8), dpi=100)
    axes = fig.subplots(2, 4).ravel()
    for ax, key in zip(axes, ABLATION_METRICS):
        for name, m in metrics.items():
            its, values = series(m, key)
            if len(values):
                ax.plot(its, values, marker="o", markersize=3, label=name)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    png_path = os.path.join(out_dir, "ablation.png")
    with atomic_open(png_path, "wb") as f:
        fig.savefig(f, format="png")
    return md_path, png_path
