#!/usr/bin/env python
"""
Export a trained model to TorchScript or ONNX, with a runtime that needs no detectron2::

    python tools/export_model.py --weights output/demo/train/model_best.pth --format onnx --output out/onnx
    python out/onnx/digit_runtime.py out/onnx/model.onnx photo.png

Writes OUT/model.onnx (or model.ts), OUT/model.json (resize, channel order, reader thresholds),
OUT/digit_runtime.py (numpy + Pillow + onnxruntime, or torch + torchvision for TorchScript) and
OUT/export_check.json: the exported model against the PyTorch model on --check-images images
(boxes within 1e-3 px, scores within 1e-4, same classes, NMS near-ties counted; a mismatch is an error).

``--int8`` (ONNX) also writes OUT/model_int8.onnx (+ model_int8.json): static int8 quantization
calibrated on --calibration-images in-style images drawn by the synthetic generator (or the images of
--calibration FOLDER), kept only when its COCO AP, AP50 and number accuracy on --int8-check-images
out-of-style generated images (the valid split's style) are each within --int8-tolerance points of
the float32 model's (OUT/int8_check.json; otherwise an error, and no int8 model is left)::

    python tools/export_model.py --weights output/demo/train/model_best.pth --format onnx --int8 --output out/onnx
    python out/onnx/digit_runtime.py out/onnx/model_int8.onnx photo.png
"""

import argparse
import os

import numpy as np

from digit_detectron.config import model_config
from digit_detectron.data.image_io import read_image
from digit_detectron.data.synthetic.generate import SampleRenderer
from digit_detectron.data.synthetic.layout import build_layout_sampler
from digit_detectron.export.exporter import EXPORT_FORMATS, ExportError, compare_with_pytorch, export_model, write_check
from digit_detectron.export.quantize import INT8_LAYERS, QuantizeError, check_int8, quantize_onnx
from digit_detectron.export.runtime import ExportedModel
from digit_detectron.inference.predictor import DigitPredictor, list_input_images
from digit_detectron.utils.cli import add_model_flags, argument_parser, positive_int, run_tool, setup_logging
from digit_detectron.utils.io import atomic_write_json


def get_parser():
    parser = argument_parser(__doc__)
    add_model_flags(parser)
    parser.add_argument("--format", choices=sorted(EXPORT_FORMATS), required=True)
    parser.add_argument("--output", required=True, help="folder for the exported model")
    parser.add_argument("--images", default=None, help="images to trace and check with (default: drawn digits)")
    parser.add_argument("--check-images", type=int, default=8, help="images the equivalence check runs on")
    parser.add_argument("--int8", action="store_true", help="also write model_int8.onnx, checked (see above)")
    parser.add_argument("--int8-layers", choices=INT8_LAYERS, default="backbone", help="convolutions quantized")
    parser.add_argument("--calibration", default=None, help="images to calibrate int8 on (default: generated)")
    parser.add_argument("--calibration-images", type=positive_int, default=200, help="calibration images (default 200)")
    parser.add_argument(
        "--int8-check-images", type=positive_int, default=500, help="labelled generated images of the check"
    )
    parser.add_argument("--int8-tolerance", type=float, default=0.5, help="points of AP / accuracy int8 may lose")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return parser


def sample_images(folder, count, seed=0):
    """RGB uint8 images: from ``folder``, or house numbers drawn by the synthetic generator."""
    if folder:
        return [read_image(p, "RGB") for p in list_input_images(folder)[:count]]
    renderer = SampleRenderer(build_layout_sampler(), seed)
    return [renderer("valid", i)[0] for i in range(count)]


def labelled_images(count, split="valid", seed=0):
    """(RGB images, truths) drawn by the synthetic generator in ``split``'s style: truths as
    ``quantize.model_accuracy`` takes them (boxes XYWH, digits in reading order)."""
    renderer = SampleRenderer(build_layout_sampler(), seed)
    samples = [renderer(split, i) for i in range(count)]
    return [s.image for s in samples], [(s.boxes, list(s.digits)) for s in samples]


def export_int8(args, float_path):
    """model_int8.onnx beside the ONNX model ``float_path`` when it passes the check; QuantizeError otherwise."""
    if args.calibration:
        calibration = sample_images(args.calibration, args.calibration_images)
    else:
        calibration = labelled_images(args.calibration_images, "train", seed=1)[0]
    out = os.path.join(os.path.dirname(float_path), "model_int8.onnx")
    quantize_onnx(float_path, out, calibration, args.int8_layers)
    images, truths = labelled_images(args.int8_check_images, "valid", seed=2)
    check = check_int8(ExportedModel(float_path), ExportedModel(out), images, truths, args.int8_tolerance)
    atomic_write_json(os.path.join(os.path.dirname(float_path), "int8_check.json"), check, indent=2)
    numbers = ", ".join(f"{k} {check['float32'][k]:.1f} -> {check['int8'][k]:.1f}" for k in check["float32"])
    if not check["ok"]:
        for path in (out, os.path.splitext(out)[0] + ".json"):
            os.remove(path)
        hint = "--int8-layers backbone, " if args.int8_layers != "backbone" else ""
        raise QuantizeError(
            f"{out}: int8 loses more than {args.int8_tolerance} point(s) on {len(images)} generated images "
            f"({numbers}); not kept (try {hint}more --calibration-images, or ship the float32 model.onnx)"
        )
    print(f"Wrote {out}: int8, within {args.int8_tolerance} point(s) on {len(images)} generated images ({numbers})")
    return out


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    if args.int8 and args.format != "onnx":
        raise QuantizeError("--int8: quantization is of the ONNX model (--format onnx)")
    if args.int8 and args.calibration:
        list_input_images(args.calibration)  # a wrong folder is named before the export, not after it
    cfg = model_config(args, ["DIGITS.INFERENCE.BACKBONE_BF16", "off"])  # the float32 graph
    cfg.freeze()
    predictor = DigitPredictor(cfg)
    images = sample_images(args.images, max(args.check_images, 1))
    first = images[0] if cfg.INPUT.FORMAT == "RGB" else np.ascontiguousarray(images[0][:, :, ::-1])
    path = export_model(predictor, first, args.format, args.output)
    check = compare_with_pytorch(predictor, ExportedModel(path), images)
    summary = write_check(os.path.join(args.output, "export_check.json"), check)
    print(f"Exported {path}; check on {len(images)} images: {summary}")
    if not check["ok"]:
        raise ExportError(f"{path}: outputs differ from the PyTorch model's beyond the tolerance: {check}")
    if args.int8:
        export_int8(args, path)
    return path


if __name__ == "__main__":
    run_tool(main)
