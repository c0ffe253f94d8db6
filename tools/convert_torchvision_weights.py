#!/usr/bin/env python
r"""
Convert torchvision weights to a detectron2 checkpoint (MODEL.WEIGHTS).

  # COCO detector for configs/faster_rcnn_R_50_FPN_v2_digits.yaml (downloads torchvision's weights):
  python tools/convert_torchvision_weights.py fasterrcnn_resnet50_fpn_v2 --output output/weights
      # -> output/weights/fasterrcnn_resnet50_fpn_v2_coco.pth
  # ImageNet backbone from a local file (.pkl output as in detectron2's model zoo):
  python tools/convert_torchvision_weights.py resnet50 --input resnet50-11ad3fa6.pth --output output/weights
      # -> output/weights/R-50-torchvision.pkl
"""

import os

from digit_detectron.checkpoint.weights_conversion import (
    CONVERTERS,
    ConversionError,
    check_architecture,
    load_torchvision_state_dict,
    save_detectron2_checkpoint,
)
from digit_detectron.utils.cli import argument_parser, run_tool


def download_state_dict(name):
    """torchvision's default weights of model ``name`` (downloaded once to the torch hub cache)."""
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    print(f"Downloading torchvision {weights} ...")
    return weights.get_state_dict(progress=True)


def default_name(model):
    """The checkpoint's file name: model-zoo style .pkl for a backbone, .pth for the COCO detector."""
    if model.startswith("resnet"):
        return f"R-{model[len('resnet') :]}-torchvision.pkl"
    return f"{model}_coco.pth"


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("model", choices=sorted(CONVERTERS), help="torchvision model the weights belong to")
    parser.add_argument("--input", help="torchvision state dict (.pth); default: download torchvision's weights")
    parser.add_argument("--output", required=True, help="folder for the detectron2 checkpoint")
    parser.add_argument(
        "--name",
        help="its file name, .pkl or .pth (default: R-<depth>-torchvision.pkl for a "
        "ResNet, <model>_coco.pth for the detector)",
    )
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    convert, matching_heuristics = CONVERTERS[args.model]
    state_dict = load_torchvision_state_dict(args.input) if args.input else download_state_dict(args.model)
    try:
        converted = convert(state_dict)
    except ConversionError as e:
        raise ConversionError(f"{args.input or args.model}: {e}") from None
    check_architecture(args.model, state_dict, args.input or args.model)
    path = os.path.join(args.output, args.name or default_name(args.model))
    save_detectron2_checkpoint(path, converted, matching_heuristics)
    print(f"Wrote {len(converted)} tensors of {args.model} to {path}")
    return path


if __name__ == "__main__":
    run_tool(main)
