#!/usr/bin/env python
"""
Images/s and s/iteration of a config on this machine, as a table and JSON::

    python tools/benchmark.py --config-file configs/digits_cpu.yaml --task train --images 64
"""
import argparse
import json

from tabulate import tabulate

from digit_detectron import get_digit_cfg
from digit_detectron.benchmark import benchmark
from digit_detectron.utils.io import atomic_write_json


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--task", choices=["train", "inference"], default="train")
    parser.add_argument("--images", type=int, default=64, help="images timed (after warm-up)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--dataset", default=None, help="registered dataset (default: the config's)")
    parser.add_argument("--output", default=None, help="write the result as JSON here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    args = parser.parse_args()
    cfg = get_digit_cfg(args.config_file, args.opts)
    result = benchmark(cfg, args.task, args.dataset, args.images, args.batch_size)
    result["config"] = args.config_file
    print(tabulate([(k, round(v, 3) if isinstance(v, float) else v) for k, v in result.items()], tablefmt="github"))
    if args.output:
        atomic_write_json(args.output, result, indent=2)
        print(f"Wrote {args.output}")
    else:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
