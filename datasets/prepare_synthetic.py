#!/usr/bin/env python
"""
Generate the synthetic SVHN-like house-number dataset (the embedded default data) in the NYCU HW2
layout: ROOT/{train,valid,test}/<id>.png, ROOT/train.json, ROOT/valid.json, plus the labelled
ROOT/valid_instyle/, ROOT/test_ood/, ROOT/test_wide/ and ROOT/free/. train and valid_instyle are
rendered in-style; valid, test, test_ood, test_wide and free out-of-style (fonts, colours, backgrounds
and blurs training never sees; see digit_detectron/data/synthetic/styles.py and each json's "info").
test_wide is framed as the real SVHN test images (wider, the number a smaller share of the width); free
shows walls without any digit in that framing (the share of them on which a number is read); a tenth of
train is digit-free walls and a quarter is framed as the test images.

    python datasets/prepare_synthetic.py datasets/digits --train 5000 --valid 500 --test 500 --seed 0
    python datasets/prepare_synthetic.py datasets/digits_myfonts --fonts /usr/share/fonts   # + the machine's fonts

``--fonts DIR`` adds every font file under DIR that draws ten different digits to the training
(in-style) fonts; fonts of the families held out for the out-of-style split are skipped, and every
skip is listed with its reason.
"""

import os

from digit_detectron.data.synthetic.generate import draw_sample_grid, generate_dataset
from digit_detectron.data.synthetic.layout import PARAMETRIC
from digit_detectron.data.synthetic.styles import training_fonts
from digit_detectron.utils.cli import argument_parser, run_tool

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The real SVHN box geometry shipped beside the repository (sizes and boxes, no pixels).
DEFAULT_GEOMETRY = os.path.join(REPO_ROOT, "..", "shared", "svhn_geometry", "train.json")


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("root", help="dataset folder to create")
    parser.add_argument("--train", type=int, default=5000, help="number of train images")
    parser.add_argument("--valid", type=int, default=500, help="number of valid images")
    parser.add_argument("--test", type=int, default=500, help="number of test images (unlabelled)")
    parser.add_argument("--valid-instyle", type=int, help="number of in-style valid images (default: --valid)")
    parser.add_argument("--test-ood", type=int, help="number of labelled out-of-style test images (default: --valid)")
    parser.add_argument("--test-wide", type=int, default=0, help="labelled out-of-style images in the test framing")
    parser.add_argument("--free", type=int, default=0, help="digit-free out-of-style images in the test framing")
    parser.add_argument(
        "--valid-free", type=int, default=0, help="more such images, to choose the reader's gate (tools/tune_reader.py)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--geometry",
        default=None,
        help="COCO json of real SVHN boxes to copy sizes and layouts from "
        f"(default: {os.path.normpath(DEFAULT_GEOMETRY)} if present); '{PARAMETRIC}' uses the built-in statistics",
    )
    parser.add_argument(
        "--fonts",
        metavar="DIR",
        action="append",
        default=[],
        help="add the font files (.ttf/.otf) under DIR, searched recursively, to the training fonts (repeatable)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes (the output does not depend on it)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing splits under ROOT")
    parser.add_argument("--grid", metavar="PNG", help="also save a grid of train samples with their boxes")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)

    geometry = args.geometry
    if geometry is None:
        geometry = DEFAULT_GEOMETRY if os.path.isfile(DEFAULT_GEOMETRY) else PARAMETRIC
    fonts = []
    if args.fonts:
        fonts, skipped = training_fonts(args.fonts)
        for path, why in skipped.items():
            print(f"font skipped: {path}: {why}")
        print(
            f"fonts: {len(fonts)} added to the training fonts, {len(skipped)} skipped (under {', '.join(args.fonts)})"
        )
    summary = generate_dataset(
        args.root,
        args.train,
        args.valid,
        args.test,
        seed=args.seed,
        geometry=geometry,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=True,
        num_valid_instyle=args.valid if args.valid_instyle is None else args.valid_instyle,
        num_test_ood=args.valid if args.test_ood is None else args.test_ood,
        fonts=fonts,
        num_test_wide=args.test_wide,
        num_free=args.free,
        num_valid_free=args.valid_free,
    )
    print(f"layouts from: {summary['geometry']}")
    for split, info in summary["splits"].items():
        folder = os.path.join(summary["root"], split) + os.sep
        if split == "test":
            print(f"{split}: {info['images']} unlabelled images -> {folder} ({info['style']})")
        else:
            labels = os.path.join(summary["root"], split + ".json")
            print(f"{split}: {info['images']} images, {info['boxes']} boxes -> {folder}, {labels} ({info['style']})")
    print(f"{summary['images_per_s']:.0f} images/s ({summary['seconds']:.1f} s, {args.workers} worker(s))")
    if args.grid:
        print(f"sample grid: {draw_sample_grid(args.root, args.grid)}")
    return summary


if __name__ == "__main__":
    run_tool(main)
