#!/usr/bin/env python
"""
Prediction images/s of each speed option, added one at a time, and of the exported models, in one run::

    python benchmarks/predict_speed.py --weights output/demo/train/model_best.pth --dataset digits_test_ood \\
        --output output/bench_predict [--exported out/export/model.onnx out/export_ts/model.ts]

Every row is one ``tools/benchmark.py --task predict`` process on the same images (decode, resize,
model, post-processing of DigitPredictor.predict_files): first the settings before issue 19 (torch's
thread defaults, file order, batch 8, 100 proposals, sampling ratio 2, float32), then each option of
configs/digits_cpu.yaml switched on in turn, ending at the shipped defaults; then each exported model
with the shipped thread policy (one image per call). Writes predict_speed.json / .md into --output.
"""

import json
import os
import subprocess
import sys

from digit_detectron.analysis.benchmark import child_env, write_table
from digit_detectron.utils.cli import argument_parser, run_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OLD = ["MODEL.RPN.POST_NMS_TOPK_TEST", "100", "DIGITS.INFERENCE.POOLER_SAMPLING_RATIO", "0"]
# (name, torch thread defaults?, order, batch, opts) from the old settings to the shipped ones
LADDER = [
    ("before issue 19", True, "dataset", 8, [*OLD, "DIGITS.INFERENCE.BACKBONE_BF16", "off"]),
    ("+ thread policy", False, "dataset", 8, [*OLD, "DIGITS.INFERENCE.BACKBONE_BF16", "off"]),
    ("+ aspect order", False, "aspect", 8, [*OLD, "DIGITS.INFERENCE.BACKBONE_BF16", "off"]),
    ("+ batch 16", False, "aspect", 16, [*OLD, "DIGITS.INFERENCE.BACKBONE_BF16", "off"]),
    (
        "+ 50 proposals",
        False,
        "aspect",
        16,
        ["DIGITS.INFERENCE.POOLER_SAMPLING_RATIO", "0", "DIGITS.INFERENCE.BACKBONE_BF16", "off"],
    ),
    ("+ sampling ratio 1", False, "aspect", 16, ["DIGITS.INFERENCE.BACKBONE_BF16", "off"]),
    ("+ bf16 backbone (auto) = shipped", False, "aspect", 16, []),
]


def run_cell(args, name, torch_threads, order, batch, opts, exported=None):
    env = child_env(torch_defaults=torch_threads)
    folder = os.path.join(args.output, name.replace(" ", "_").replace("+", "").replace("=", "").strip("_"))
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools", "benchmark.py"),
        "--weights",
        args.weights,
        "--task",
        "predict",
        "--images",
        str(args.images),
        "--warmup",
        "2",
        "--order",
        order,
        "--batch-size",
        str(batch),
        "--output",
        folder,
    ]
    if args.dataset:
        cmd += ["--dataset", args.dataset]
    if exported:
        cmd += ["--exported", exported]
    print(f"[{name}]", flush=True)
    subprocess.run([*cmd, *opts], check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    with open(os.path.join(folder, "benchmark_predict.json")) as f:
        return {"name": name, **json.load(f)}


def table(rows):
    base = rows[0]["images_per_s"]
    lines = ["| setting | images/s | vs before | batch | torch threads | 13,068 images |", "|---|---|---|---|---|---|"]
    for r in rows:
        minutes = 13068 / r["images_per_s"] / 60
        lines.append(
            f"| {r['name']} | {r['images_per_s']:.1f} | {r['images_per_s'] / base:.2f}x | {r['batch_size']} "
            f"| {r['torch_threads']} | {minutes:.1f} min |"
        )
    return "\n".join(lines)


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--weights", required=True, help="the model bundle")
    parser.add_argument("--output", required=True, help="folder for predict_speed.json / .md")
    parser.add_argument("--dataset", default=None, help="registered dataset (default: the config's test)")
    parser.add_argument("--images", type=int, default=384, help="images per row (default 384)")
    parser.add_argument("--exported", nargs="*", default=[], help="exported models (.onnx / .ts) to time too")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    rows = [run_cell(args, *row) for row in LADDER]
    for path in args.exported:
        rows.append(run_cell(args, f"exported {os.path.basename(path)}", False, "aspect", 16, [], exported=path))
    text = table(rows)
    print(text)
    write_table(args.output, "predict_speed", rows, text)
    return rows


if __name__ == "__main__":
    run_tool(main)
