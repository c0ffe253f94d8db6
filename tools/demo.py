#!/usr/bin/env python
"""
`make demo`: the whole job on the embedded synthetic data, on a CPU, in about 20 minutes (2 cores).

1. generate the synthetic house-number dataset (datasets/prepare_synthetic.py) unless present;
2. train configs/digits_cpu.yaml (backbone pre-training warm start, evaluation every epoch);
3. evaluate the best checkpoint on the validation split (COCO AP + number accuracy);
4. measure the number reader's thresholds on validation (tools/tune_reader.py);
5. predict the test split into pred.json / pred.csv (tools/predict.py);
6. draw validation predictions (tools/visualize.py); training plots come from step 2.

Every step is one of the project's tools, printed before it runs; a step whose output exists is
skipped, and an interrupted training resumes, so running the demo again continues where it stopped.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from digit_detectron.utils.cli import argument_parser, run_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, env):
    print(f"\n$ {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    start = time.time()
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    print(f"[{time.time() - start:.0f} s]", flush=True)


def last_eval(metrics_json):
    """The last line of metrics.json that holds evaluation results."""
    result = {}
    with open(metrics_json) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "bbox/AP" in record:
                result = record
    return result


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--data", default=os.path.join("datasets", "digits"), help="dataset root")
    parser.add_argument("--output", default=os.path.join("output", "demo"))
    parser.add_argument("--config-file", default=os.path.join("configs", "digits_cpu.yaml"))
    parser.add_argument("--train", type=int, default=4000, help="synthetic train images")
    parser.add_argument("--valid", type=int, default=400)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs for training")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)

    py = sys.executable
    env = dict(os.environ, DIGITS_DATASET_ROOT=os.path.abspath(args.data), PYTHONUNBUFFERED="1")
    out = args.output
    start = time.time()
    if not os.path.isfile(os.path.join(args.data, "valid.json")):
        run(
            [
                py,
                "datasets/prepare_synthetic.py",
                args.data,
                "--train",
                str(args.train),
                "--valid",
                str(args.valid),
                "--test",
                str(args.test),
                "--seed",
                str(args.seed),
                "--workers",
                "2",
                "--grid",
                os.path.join(out, "synthetic_samples.png"),
            ],
            env,
        )
    else:
        print(f"Dataset present: {args.data} (delete it to regenerate)")

    train_dir = os.path.join(out, "train")
    if not os.path.isfile(os.path.join(train_dir, "model_final.pth")):
        run(
            [
                py,
                "tools/train_net.py",
                "--config-file",
                args.config_file,
                "--resume",
                "OUTPUT_DIR",
                train_dir,
                *args.opts,
            ],
            env,
        )
    weights = os.path.join(train_dir, "model_best.pth")
    if not os.path.isfile(weights):
        weights = os.path.join(train_dir, "model_final.pth")
    model = ["MODEL.WEIGHTS", weights]

    run(
        [
            py,
            "tools/train_net.py",
            "--config-file",
            args.config_file,
            "--eval-only",
            *model,
            "OUTPUT_DIR",
            os.path.join(out, "eval"),
        ],
        env,
    )
    run(
        [
            py,
            "tools/tune_reader.py",
            "--config-file",
            args.config_file,
            "--dataset",
            "digits_valid",
            "--output",
            out,
            *model,
        ],
        env,
    )
    thresholds = os.path.join(out, "reader_thresholds.yaml")
    configs = ["--config-file", args.config_file, "--config-file", thresholds]
    run(
        [
            py,
            "tools/predict.py",
            *configs,
            "--input",
            os.path.join(args.data, "test"),
            "--output",
            os.path.join(out, "predictions"),
            *model,
        ],
        env,
    )
    run(
        [
            py,
            "tools/visualize.py",
            *configs,
            "--dataset",
            "digits_valid",
            "--num",
            "32",
            "--output",
            os.path.join(out, "visualize"),
            *model,
        ],
        env,
    )

    final = last_eval(os.path.join(train_dir, "metrics.json"))
    print("\n" + "=" * 72)
    print(f"Demo finished in {(time.time() - start) / 60:.1f} min. Outputs:")
    for what, path in [
        ("synthetic samples", os.path.join(out, "synthetic_samples.png")),
        ("training log / metrics", os.path.join(train_dir, "metrics.json")),
        ("training curves", os.path.join(train_dir, "plots")),
        ("best checkpoint", weights),
        ("validation evaluation", os.path.join(out, "eval", "log.txt")),
        ("reader thresholds", thresholds),
        ("pred.json / pred.csv", os.path.join(out, "predictions")),
        ("drawn predictions", os.path.join(out, "visualize", "grid.png")),
    ]:
        print(f"  {what:24s} {path}")
    if final:
        print(
            f"Validation (last evaluation): mAP@[.5:.95] {final['bbox/AP']:.1f}"
            f"  AP50 {final.get('bbox/AP50', float('nan')):.1f}"
            f"  number accuracy {final.get('number/accuracy', float('nan')):.1f}%"
        )


if __name__ == "__main__":
    run_tool(main)
