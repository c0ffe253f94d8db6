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

from digit_detectron import get_digit_cfg, register_digits
from digit_detectron.analysis.benchmark import ORDERS, TASKS, benchmark, report
from digit_detectron.config import model_config, option_value
from digit_detectron.utils.cli import add_model_flags, argument_parser, positive_int, run_tool, setup_logging
from digit_detectron.utils.errors import ConfigError


def get_parser():
    parser = argument_parser(__doc__)
    add_model_flags(parser)
    parser.add_argument(
        "--exported", default=None, help="task predict: time this exported model (.onnx / .ts) on the same images"
    )
    parser.add_argument("--task", choices=TASKS, default="train")
    parser.add_argument("--images", type=int, default=64, help="images timed (after warm-up)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=None, help="default: SOLVER.IMS_PER_BATCH for train, else 8"
    )
    parser.add_argument("--warmup", type=int, default=2, help="batches run before timing (default 2)")
    parser.add_argument("--dataset", default=None, help="registered dataset (default: the config's)")
    parser.add_argument("--dataset-root", default=None, help="register digits_{train,valid,test} under this root first")
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default="dataset",
        help="'aspect' sorts the images by width/height before batching (less padding)",
    )
    parser.add_argument(
        "--competitors", type=int, default=0, help="CPU-bound processes to run beside the timed steps (default 0)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the augmentations and the model init")
    parser.add_argument("--output", default=None, help="folder for the result as JSON (benchmark_<task>.json)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    if args.dataset_root:
        register_digits(args.dataset_root)
    has_model = args.weights or option_value(args.opts, "MODEL.WEIGHTS")
    if not has_model and not args.config_file:
        raise ConfigError("pass --config-file CONFIG (a random init is timed) or --weights MODEL.pth")
    cfg = model_config(args) if has_model else get_digit_cfg(args.config_file, args.opts)
    result = benchmark(
        cfg,
        args.task,
        args.dataset,
        args.images,
        args.batch_size,
        args.warmup,
        args.order,
        args.seed,
        args.competitors,
        args.exported,
    )
    result["config"] = ", ".join(args.config_file or []) or f"bundle {args.weights or cfg.MODEL.WEIGHTS}"
    result["opts"] = args.opts
    print(report(result, args.output and os.path.join(args.output, f"benchmark_{args.task}.json")))
    return result


if __name__ == "__main__":
    run_tool(main)
