#!/usr/bin/env python
"""
The thread policy against torch's defaults, idle and beside CPU-bound competitors, train and predict::

    python benchmarks/thread_policy.py --config-file configs/digits_cpu.yaml --output output/bench_threads \\
        --dataset digits_test_ood MODEL.WEIGHTS output/demo/train/model_best.pth

Every cell is one ``tools/benchmark.py`` process (its own torch, so that the OpenMP wait policy,
read once when torch loads, is the cell's): policy "torch" (``DIGITS_THREAD_POLICY=torch``: torch's
thread count, spinning OpenMP threads) or "digit_detectron" (utils/threads.py), with 0 or
``--competitors`` busy-loop processes started by the benchmark around its timed steps. Prints a table
of images/s and each cell's share of its policy's idle speed (and of torch's idle speed); writes
``thread_policy.json`` and ``thread_policy.md`` into ``--output``.
"""

import argparse
import json
import os
import subprocess
import sys

from digit_detectron.analysis.benchmark import child_env, write_table
from digit_detectron.utils.cli import argument_parser, run_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICIES = ("torch", "digit_detectron")


def run_cell(args, task, policy, competitors, folder):
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools", "benchmark.py"),
        "--config-file",
        args.config_file,
        "--task",
        task,
        "--images",
        str(args.images if task == "predict" else args.train_images),
        "--warmup",
        "2",
        "--competitors",
        str(competitors),
        "--output",
        folder,
    ]
    if task == "predict":
        cmd += ["--order", "aspect", "--batch-size", str(args.batch_size)]
    if args.dataset and task == "predict":
        cmd += ["--dataset", args.dataset]
    if task == "predict":  # train cells time a random init: the speed does not depend on the weights
        cmd += args.opts
    print(f"[{task} / {policy} / {competitors} competitor(s)]", flush=True)
    subprocess.run(
        cmd, check=True, env=child_env(torch_defaults=policy == "torch"), cwd=REPO, stdout=subprocess.DEVNULL
    )
    with open(os.path.join(folder, f"benchmark_{task}.json")) as f:
        return json.load(f)


def table(cells):
    """Markdown rows: task, policy, competitors, images/s, s/iteration, threads, share of own / torch idle speed."""
    idle = {(c["task"], c["policy"]): c["images_per_s"] for c in cells if c["competitors"] == 0}
    lines = [
        "| task | policy | competitors | images/s | s/iteration | torch threads | vs own idle | vs torch idle |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        own = c["images_per_s"] / idle[(c["task"], c["policy"])]
        torch_idle = c["images_per_s"] / idle[(c["task"], "torch")]
        lines.append(
            f"| {c['task']} | {c['policy']} | {c['competitors']} | {c['images_per_s']:.1f} | {c['s_per_iter']:.3f} "
            f"| {c['torch_threads']} | {own:.2f}x | {torch_idle:.2f}x |"
        )
    return "\n".join(lines)


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="folder for thread_policy.json / .md")
    parser.add_argument("--dataset", default=None, help="dataset of the predict cells (default: the config's test)")
    parser.add_argument("--images", type=int, default=256, help="images per predict cell (default 256)")
    parser.add_argument("--train-images", type=int, default=64, help="images per train cell (default 64)")
    parser.add_argument("--batch-size", type=int, default=16, help="predict batch (default 16)")
    parser.add_argument("--competitors", type=int, default=1, help="busy-loop processes of the contended cells")
    parser.add_argument("--tasks", nargs="+", default=["train", "predict"], choices=["train", "predict"])
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs of the predict cells")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    cells = []
    for task in args.tasks:
        for policy in POLICIES:
            for competitors in (0, args.competitors):
                folder = os.path.join(args.output, f"{task}_{policy}_{competitors}")
                os.makedirs(folder, exist_ok=True)
                result = run_cell(args, task, policy, competitors, folder)
                cells.append({**result, "task": task, "policy": policy, "competitors": competitors})
    text = table(cells)
    print(text)
    write_table(args.output, "thread_policy", cells, text)
    return cells


if __name__ == "__main__":
    run_tool(main)
