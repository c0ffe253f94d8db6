#!/usr/bin/env python
"""
Train the same config with each IoU-loss type (same data), one run per type and seed, then compare:

    # one seed: a table and a figure of every evaluation during training (ablation.md / .png)
    python tools/ablate_loss.py --config-file configs/digits_cpu.yaml --output output/ablation \\
        SOLVER.EPOCHS 10 MODEL.ROI_BOX_HEAD.IOU_LOSS.START_EPOCH 3

    # several seeds, each final model evaluated on several splits: mean and spread per metric and
    # split, each setting's difference from the first with its standard error (seeds.md / .json / .png)
    python tools/ablate_loss.py --config-file configs/digits_cpu.yaml --output output/seed_ablation \\
        --seeds 0 1 2 --eval-datasets digits_valid digits_valid_instyle digits_test_ood \\
        SOLVER.EPOCHS 0 SOLVER.MAX_ITER 1000 DIGITS.ITERS_PER_EPOCH 67 TEST.EVAL_PERIOD 0 DATASETS.TEST "()"

Runs are named ``<type>`` (one seed) or ``<type>_seed<N>``. Finished runs are kept and evaluations
already written are reused; an interrupted run resumes from its last checkpoint.
"""

import argparse
import os

from digit_detectron.analysis.experiments import evaluate_runs, summarize_seeds, train_and_summarize
from digit_detectron.data.datasets import dataset_style
from digit_detectron.utils.cli import argument_parser, run_tool, setup_logging

TRAIN_NET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_net.py")


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", default="output/ablate_loss", help="folder for the runs, tables and figures")
    parser.add_argument("--types", nargs="+", default=["none", "diou", "ciou"], help="IOU_LOSS.TYPE values")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="SEED values; one run per type and seed")
    parser.add_argument(
        "--eval-datasets",
        nargs="+",
        default=None,
        help="evaluate each run's model_final.pth on these datasets (default: DATASETS.TEST) and summarize over seeds",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs for every run")
    return parser


def run_name(loss_type, seed, seeds):
    return loss_type if len(seeds) == 1 else f"{loss_type}_seed{seed}"


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    if len(set(args.seeds)) != len(args.seeds) or len(set(args.types)) != len(args.types):
        raise ValueError("--seeds and --types must not repeat a value")

    groups = {t: [run_name(t, s, args.seeds) for s in args.seeds] for t in args.types}
    runs = {
        run_name(t, s, args.seeds): (
            args.config_file,
            [*args.opts, "MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE", t, "SEED", str(s)],
        )
        for t in args.types
        for s in args.seeds
    }
    title = f"IoU loss ablation ({os.path.basename(args.config_file)})"
    md, png, text = train_and_summarize(runs, args.output, TRAIN_NET, title)
    print(text)
    if len(args.seeds) == 1 and not args.eval_datasets:
        return md, png

    datasets = args.eval_datasets
    if not datasets:  # the config's validation datasets
        from digit_detectron import get_digit_cfg

        datasets = list(get_digit_cfg(args.config_file, args.opts).DATASETS.TEST)
        if not datasets:
            raise ValueError("--eval-datasets: name the datasets to evaluate the runs on (DATASETS.TEST is empty)")
    weights = {name: os.path.join(args.output, name, "model_final.pth") for name in runs}
    results = evaluate_runs(weights, datasets, TRAIN_NET)
    labels = {d: style for d in datasets if (style := dataset_style(d))}
    seeds_md, _, seeds_png = summarize_seeds(groups, results, datasets, args.output, f"{title}, seeds", labels)
    with open(seeds_md) as f:
        print(f"{f.read()}\nTable: {seeds_md}\nFigure: {seeds_png}")
    return seeds_md, seeds_png


if __name__ == "__main__":
    run_tool(main)
