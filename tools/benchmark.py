#!/usr/bin/env python
"""
Images/s and s/iteration (median after warm-up) of a config on this machine, with peak RSS, the
data path's time per image and the machine, as a table and JSON::

    python tools/benchmark.py --config-file configs/digits_cpu.yaml --task train --images 64
    python tools/benchmark.py --config-file configs/digits_cpu.yaml --task predict --dataset-root /tmp/speed_data \\
        --dataset digits_test MODEL.WEIGHTS output/digits_cpu/model_best.pth

Tasks: "train" (forward, backward, AdamW step), "inference" (eval forward) on batches prepared by the
mapper beforehand; "predict" (DigitPredictor on files: decode, resize, model, postprocess). An empty
MODEL.WEIGHTS times a randomly initialised model: speed does not depend on the weights.
"""

import argparse
import os

import torch

from digit_detectron import get_digit_cfg, register_digits
from digit_detectron.analysis.benchmark import ORDERS, TASKS, benchmark, report
from digit_detectron.utils.cli import argument_parser, run_tool, setup_logging


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--task", choices=TASKS, default="train")
    parser.add_argument("--images", type=int, default=64, help="images timed (after warm-up)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: SOLVER.IMS_PER_BATCH for train, else 8")
    parser.add_argument("--warmup", type=int, default=2, help="batches run before timing (default 2)")
    parser.add_argument("--dataset", default=None, help="registered dataset (default: the config's)")
    parser.add_argument("--dataset-root", default=None, help="register digits_{train,valid,test} under this root first")
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default="dataset",
        help="'aspect' sorts the images by width/height before batching (less padding)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the augmentations and the model init")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--output", default=None, help="folder for the result as JSON (benchmark_<task>.json)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dataset_root:
        register_digits(args.dataset_root)
    cfg = get_digit_cfg(args.config_file, args.opts)
    result = benchmark(cfg, args.task, args.dataset, args.images, args.batch_size, args.warmup, args.order, args.seed)
    result["config"] = args.config_file
    result["opts"] = args.opts
    print(report(result, args.output and os.path.join(args.output, f"benchmark_{args.task}.json")))
    return result


if __name__ == "__main__":
    run_tool(main)
