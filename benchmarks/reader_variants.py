#!/usr/bin/env python
"""
Whole-number accuracy and error kinds of a model's reader variants on labelled splits, from one
inference pass per split (the detections are kept and read again by each variant)::

    python benchmarks/reader_variants.py --weights output/demo/train/model_best.pth \\
        --datasets digits_valid digits_test_ood digits_test_wide digits_free --output output/reader_variants

Variants: the bundle's reader as it is, with the number-line filter (``DIGITS.READER.LINE_FILTER``,
modeling/number_reader.on_number_line) switched the other way, and without the gate
(``DIGITS.READER.MIN_TOP_SCORE`` 0) where the bundle has one. On a
digit-free split (no boxes) "accuracy" is the share of images read as no number. Writes
reader_variants.json / .md into --output.
"""

import os

import torch
from detectron2.evaluation import inference_on_dataset

from digit_detectron.analysis.benchmark import write_table
from digit_detectron.config import get_model_cfg
from digit_detectron.data.datasets import get_dataset_dicts
from digit_detectron.engine.trainer import DigitTrainer
from digit_detectron.evaluation import NumberAccuracyEvaluator
from digit_detectron.evaluation.number_accuracy import record_ground_truth
from digit_detectron.evaluation.report import ERROR_KINDS, number_error_kind
from digit_detectron.modeling.number_reader import NumberReader
from digit_detectron.tools.train_net import evaluation_model
from digit_detectron.utils.cli import argument_parser, run_tool


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--output", required=True)
    return parser


def kinds_of(evaluator, reader, truths):
    counts = dict.fromkeys(ERROR_KINDS, 0)
    for d in evaluator.detections:
        chosen = reader.select(d["boxes"], d["scores"], d["classes"])
        read = "".join(str(int(c)) for c in d["classes"][chosen.numpy()])
        counts[number_error_kind(read, truths[d["image_id"]])] += 1
    return counts


def main(argv=None):
    args = get_parser().parse_args(argv)
    cfg = get_model_cfg(None, ["MODEL.DEVICE", "cpu"], weights=args.weights)
    model = evaluation_model(cfg)
    base = NumberReader.from_config(cfg)
    variants = {
        f"line filter {'on' if base.line_filter else 'off'} (the bundle's)": base,
        f"line filter {'off' if base.line_filter else 'on'}": NumberReader(
            base.score_threshs, base.nms_thresh, base.max_digits, not base.line_filter, base.min_top_score
        ),
    }
    if base.min_top_score > 0:
        variants[f"without the gate (MIN_TOP_SCORE {base.min_top_score:.3g} -> 0)"] = NumberReader(
            base.score_threshs, base.nms_thresh, base.max_digits, base.line_filter
        )
    results = {}
    for name in args.datasets:
        evaluator = NumberAccuracyEvaluator(name, base, distributed=False)
        with torch.inference_mode():
            inference_on_dataset(model, DigitTrainer.build_test_loader(cfg, name), evaluator)
        truths = {}
        for record in get_dataset_dicts(name):
            truth = record_ground_truth(record)
            truths[record["image_id"]] = "".join(str(int(c)) for c in truth["digits"]) if truth else ""
        results[name] = {
            variant: {
                "accuracy": evaluator.accuracy(reader),
                "images": len(evaluator.detections),
                "kinds": kinds_of(evaluator, reader, truths),
            }
            for variant, reader in variants.items()
        }
    os.makedirs(args.output, exist_ok=True)
    lines = [
        "| split | reader | accuracy % | extra digit | wrong digit | missed digit | nothing read |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_variant in results.items():
        for variant, r in by_variant.items():
            k, n = r["kinds"], r["images"]
            cells = [
                f"{100 * k[kind] / n:.1f}%"
                for kind in ("extra digit", "wrong digit", "missed digit", "nothing detected")
            ]
            lines.append(f"| {name} | {variant} | {r['accuracy']:.2f} | " + " | ".join(cells) + " |")
    write_table(args.output, "reader_variants", results, "\n".join(lines))
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    run_tool(main)
