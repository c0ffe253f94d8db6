#!/usr/bin/env python
"""
Export a trained model to TorchScript or ONNX, with a runtime that needs no detectron2::

    python tools/export_model.py --weights output/demo/train/model_best.pth --format onnx --output out/onnx
    python out/onnx/digit_runtime.py out/onnx/model.onnx photo.png

Writes OUT/model.onnx (or model.ts), OUT/model.json (resize, channel order, reader thresholds),
OUT/digit_runtime.py (numpy + Pillow + onnxruntime, or torch + torchvision for TorchScript) and
OUT/export_check.json: the exported model against the PyTorch model on --check-images images
(boxes within 1e-3 px, scores within 1e-4, same classes, NMS near-ties counted; a mismatch is an error).
"""

import argparse
import os

import numpy as np

from digit_detectron.config import model_config
from digit_detectron.data.image_io import read_image
from digit_detectron.data.synthetic.generate import SampleRenderer
from digit_detectron.data.synthetic.layout import build_layout_sampler
from digit_detectron.export.exporter import EXPORT_FORMATS, ExportError, compare_with_pytorch, export_model, write_check
from digit_detectron.export.runtime import ExportedModel
from digit_detectron.inference.predictor import DigitPredictor, list_input_images
from digit_detectron.utils.cli import add_model_flags, argument_parser, run_tool, setup_logging


def get_parser():
    parser = argument_parser(__doc__)
    add_model_flags(parser)
    parser.add_argument("--format", choices=sorted(EXPORT_FORMATS), required=True)
    parser.add_argument("--output", required=True, help="folder for the exported model")
    parser.add_argument("--images", default=None, help="images to trace and check with (default: drawn digits)")
    parser.add_argument("--check-images", type=int, default=8, help="images the equivalence check runs on")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return parser


def sample_images(folder, count, seed=0):
    """RGB uint8 images: from ``folder``, or house numbers drawn by the synthetic generator."""
    if folder:
        return [read_image(p, "RGB") for p in list_input_images(folder)[:count]]
    renderer = SampleRenderer(build_layout_sampler(), seed)
    return [renderer("valid", i)[0] for i in range(count)]


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
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
    return path


if __name__ == "__main__":
    run_tool(main)
