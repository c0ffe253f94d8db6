#!/usr/bin/env python
"""
Where a model loses the digits of a split, by the digit's height at the model's input scale: for each
labelled digit, whether a region proposal covers it (IoU >= 0.5 and >= 0.7 with the best of the RPN's
proposals) and whether a detection of the right digit covers it (IoU >= 0.5, score >= --score)::

    python benchmarks/recall_by_size.py --weights ready --json datasets/digits/test_wide.json \\
        --images datasets/digits/test_wide --output output/recall_wide [--num 1000] [KEY VALUE ...]

A digit the proposals miss is lost before the box head sees it (anchors, RPN, its top-k); one the
proposals cover but no detection does is lost in the box head (class, score, NMS). Writes
recall_by_size.json / .md in --output. Trailing KEY VALUE pairs are config overrides.
"""

import json

import numpy as np
import torch
from detectron2.structures import Boxes, pairwise_iou

from digit_detectron.analysis.benchmark import write_table
from digit_detectron.config import get_model_cfg
from digit_detectron.data.datasets import load_digits_json
from digit_detectron.data.image_io import read_image
from digit_detectron.inference.predictor import DigitPredictor
from digit_detectron.utils.cli import argument_parser, run_tool

BANDS = ((0, 12), (12, 16), (16, 20), (20, 24), (24, 32), (32, None))  # digit height at the model's scale, px


def digit_rows(predictor, records, score=0.5):
    """(height at the model's scale, best proposal IoU, right detection 0/1) for every labelled digit: the
    first look at INPUT.MIN_SIZE_TEST (the detector itself, without DIGITS.SECOND_LOOK's wrapper)."""
    model = predictor.network
    rows = []
    for record in records:
        image = read_image(record["file_name"], predictor.input_format)
        tensor = predictor.preprocess(image)
        scale = tensor.shape[1] / image.shape[0]
        with torch.inference_mode():
            images = model.preprocess_image([{"image": tensor}])
            features = model.backbone(images.tensor)
            proposals, _ = model.proposal_generator(images, features, None)
            detections, _ = model.roi_heads(images, features, proposals, None)
        proposal_boxes, found = proposals[0].proposal_boxes, detections[0]
        for ann in record["annotations"]:
            x, y, w, h = ann["bbox"]
            gt = Boxes(torch.tensor([[x * scale, y * scale, (x + w) * scale, (y + h) * scale]], dtype=torch.float32))
            best = pairwise_iou(gt, proposal_boxes).max().item() if len(proposal_boxes) else 0.0
            right = False
            if len(found):
                iou = pairwise_iou(gt, found.pred_boxes)[0]
                right = bool(
                    ((iou >= 0.5) & (found.pred_classes == ann["category_id"]) & (found.scores >= score)).any()
                )
            rows.append((h * scale, best, int(right)))
    return np.asarray(rows, dtype=float).reshape(-1, 3)


def bands_table(rows):
    """One entry per height band that holds digits: count, proposal recall at 0.5 / 0.7, right detections (%)."""
    out = []
    for low, high in BANDS:
        inside = (rows[:, 0] >= low) & (rows[:, 0] < (high if high is not None else np.inf))
        if inside.any():
            band = rows[inside]
            out.append({
                "height_px": f"{low}-{high}" if high is not None else f">={low}",
                "digits": int(inside.sum()),
                "proposal_iou_0.5": round(100 * float((band[:, 1] >= 0.5).mean()), 1),
                "proposal_iou_0.7": round(100 * float((band[:, 1] >= 0.7).mean()), 1),
                "detected": round(100 * float(band[:, 2].mean()), 1),
            })  # fmt: skip
    return out


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--weights", required=True, help="model bundle, or 'ready' for the package's ready model")
    parser.add_argument("--json", required=True, help="COCO digit json of the split")
    parser.add_argument("--images", required=True, help="the split's image folder")
    parser.add_argument("--num", type=int, default=1000, help="first N images of the json")
    parser.add_argument("--score", type=float, default=0.5, help="a detection counts from this score")
    parser.add_argument("--output", required=True)
    parser.add_argument("opts", nargs="*", help="config overrides: KEY VALUE ...")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    cfg = get_model_cfg(None, ["MODEL.DEVICE", "cpu", *args.opts], weights=args.weights)
    records = [r for r in load_digits_json(args.json, args.images) if r["annotations"]][: args.num]
    rows = digit_rows(DigitPredictor(cfg), records, score=args.score)
    table = bands_table(rows)
    result = {"weights": args.weights, "json": args.json, "images": len(records), "score": args.score, "bands": table}
    lines = [
        f"{args.json}: {len(records)} images, {len(rows)} digits; weights {args.weights}",
        "",
        "| digit height at the model's scale | digits | a proposal at IoU >= 0.5 | >= 0.7 | detected right |",
        "|---|---|---|---|---|",
    ]
    for b in table:
        lines.append(
            f"| {b['height_px']} px | {b['digits']} | {b['proposal_iou_0.5']}% | {b['proposal_iou_0.7']}% "
            f"| {b['detected']}% |"
        )
    write_table(args.output, "recall_by_size", result, "\n".join(lines))
    print("\n".join(lines))
    print(json.dumps({"digits": len(rows)}))
    return result


if __name__ == "__main__":
    run_tool(main)
