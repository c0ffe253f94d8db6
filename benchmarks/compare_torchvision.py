#!/usr/bin/env python
"""
Speed of a digit_detectron config against the torchvision reference pipeline
(benchmarks/torchvision_baseline.py), measured in one run on the same dataset and machine::

    python benchmarks/compare_torchvision.py --dataset-root /tmp/speed_data \\
        --config-file configs/faster_rcnn_R_50_FPN_digits.yaml --output output/bench --threads 1

Each side runs in its own process (so each peak RSS is its own): tools/benchmark.py for the config,
with an empty MODEL.WEIGHTS (speed does not depend on the weights), then the baseline, per task.
Both take their images from the front of the same split in the same order (the baseline, being
~50x slower, times fewer of them). Writes OUTPUT/benchmark_<task>.json (ours),
OUTPUT/torchvision_<task>.json and OUTPUT/comparison.json, and prints the table with the ratios.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys

from tabulate import tabulate

from digit_detectron.utils.cli import argument_parser, run_tool
from digit_detectron.utils.io import atomic_write_json

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BENCHMARK = os.path.join(REPO_ROOT, "tools", "benchmark.py")
BASELINE = os.path.join(REPO_ROOT, "benchmarks", "torchvision_baseline.py")

HEADERS = [
    "task",
    "pipeline",
    "config",
    "batch",
    "timed iters",
    "s/iter",
    "CPU s/iter",
    "images/s",
    "padding",
    "peak RSS MiB",
]


def commands(args, task, output_dir):
    """The two command lines (ours, torchvision) that time ``task``, each writing its JSON."""
    threads = ["--threads", str(args.threads)] if args.threads else []
    ours = [
        sys.executable,
        BENCHMARK,
        "--config-file",
        args.config_file,
        "--task",
        task,
        "--dataset-root",
        args.dataset_root,
        "--images",
        str(args.images),
        "--warmup",
        str(args.warmup),
        "--output",
        output_dir,
        *threads,
        *(["--batch-size", str(args.inference_batch_size)] if task == "inference" else []),
        "MODEL.WEIGHTS",
        "",
        *args.opts,
    ]
    baseline = [
        sys.executable,
        BASELINE,
        "--task",
        task,
        "--dataset-root",
        args.dataset_root,
        "--images",
        str(args.baseline_images),
        "--batch-size",
        str(args.baseline_batch_size),
        "--warmup",
        str(args.baseline_warmup),
        "--min-size",
        str(args.baseline_min_size),
        "--max-size",
        str(args.baseline_max_size),
        "--output",
        output_dir,
        *threads,
    ]
    return ours, baseline


def run(cmd):
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True)


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def compare(results):
    """Rows of the comparison table and the ratios, from {task: (ours, torchvision)} results."""
    rows, ratios = [], {}
    for task, (ours, ref) in results.items():
        ratios[task] = ours["images_per_s"] / ref["images_per_s"]
        for name, r in (("digit_detectron", ours), ("torchvision reference", ref)):
            rows.append(
                [
                    task,
                    name,
                    r["config"],
                    r["batch_size"],
                    r["iterations_timed"],
                    r["s_per_iter"],
                    r["cpu_s_per_iter"],
                    r["images_per_s"],
                    r["padding_fraction"],
                    r["peak_rss_mb"],
                ]
            )
    return rows, ratios


def main(argv=None):
    args = get_parser().parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    results = {}
    for task in args.tasks:
        for cmd in commands(args, task, args.output):
            run(cmd)
        paths = [os.path.join(args.output, f"{side}_{task}.json") for side in ("benchmark", "torchvision")]
        results[task] = tuple(_read_json(p) for p in paths)
    rows, ratios = compare(results)
    machine = {k: results[args.tasks[0]][0][k] for k in ("cpu", "cores", "torch_threads", "torch")}
    print(tabulate(rows, HEADERS, tablefmt="github", floatfmt=".4g"))
    print(f"machine: {machine}")
    for task, ratio in ratios.items():
        print(f"{task}: digit_detectron processes {ratio:.1f}x the images per second of the torchvision reference")
    path = os.path.join(args.output, "comparison.json")
    atomic_write_json(
        path, {"ratios": ratios, "machine": machine, "rows": [dict(zip(HEADERS, r)) for r in rows]}, indent=2
    )
    print(f"Wrote {path}")
    return ratios


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--dataset-root", required=True, help="digit dataset in the HW2 layout (train + valid)")
    parser.add_argument("--config-file", default=os.path.join("configs", "faster_rcnn_R_50_FPN_digits.yaml"))
    parser.add_argument("--output", default=os.path.join("output", "bench"), help="folder for the JSON results")
    parser.add_argument("--tasks", nargs="+", choices=["train", "inference"], default=["train", "inference"])
    parser.add_argument("--images", type=int, default=32, help="images our config times per task (default 32)")
    parser.add_argument("--warmup", type=int, default=1, help="our warm-up batches (default 1)")
    parser.add_argument("--inference-batch-size", type=int, default=8, help="our inference batch (default 8)")
    parser.add_argument("--baseline-images", type=int, default=4, help="images the baseline times (default 4)")
    parser.add_argument(
        "--baseline-batch-size",
        type=int,
        default=2,
        help="baseline batch (reference: 8; default 2: a training step at 800 px takes ~35 s on one core)",
    )
    parser.add_argument("--baseline-min-size", type=int, default=800, help="baseline short side (reference: 800)")
    parser.add_argument("--baseline-max-size", type=int, default=1333, help="baseline resize cap (reference: 1333)")
    parser.add_argument("--baseline-warmup", type=int, default=1, help="baseline warm-up batches (default 1)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs for our side")
    return parser


if __name__ == "__main__":
    run_tool(main)
