#!/usr/bin/env python
r"""
Convert torchvision weights to a detectron2 checkpoint (MODEL.WEIGHTS).

  # COCO detector for configs/faster_rcnn_R_50_FPN_v2_digits.yaml (downloads torchvision's weights):
  python tools/convert_torchvision_weights.py fasterrcnn_resnet50_fpn_v2 \
      --output output/weights/fasterrcnn_resnet50_fpn_v2_coco.pth
  # ImageNet backbone from a local file (.pkl output as in detectron2's model zoo):
  python tools/convert_torchvision_weights.py resnet50 --input resnet50-11ad3fa6.pth \
      --output output/weights/R-50-torchvision.pkl
"""
import argparse
import sys

from digit_detectron.checkpoint.weights_conversion import (
    CONVERTERS,
    ConversionError,
    load_torchvision_state_dict,
    save_detectron2_checkpoint,
)


def download_state_dict(name):
    """torchvision's default weights of model ``name`` (downloaded once to the torch hub cache)."""
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    print(f"Downloading torchvision {weights} ...")
    return weights.get_state_dict(progress=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(CONVERTERS), help="torchvision model the weights belong to")
    parser.add_argument("--input", help="torchvision state dict (.pth); default: download torchvision's weights")
    parser.add_argument("--output", required=True, help="detectron2 checkpoint to write (.pkl or .pth)")
    args = parser.parse_args(argv)

    convert, matching_heuristics = CONVERTERS[args.model]
    try:
        state_dict = load_torchvision_state_dict(args.input) if args.input else download_state_dict(args.model)
    except (ConversionError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    try:
        converted = convert(state_dict)
    except ConversionError as e:
        sys.exit(f"error: {args.input or args.model}: {e}")
    save_detectron2_checkpoint(args.output, converted, matching_heuristics)
    print(f"Wrote {len(converted)} tensors of {args.model} to {args.output}")


if __name__ == "__main__":
    main()
