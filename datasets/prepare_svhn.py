#!/usr/bin/env python
"""
Convert the official SVHN format-1 download into the HW2 layout of digit_detectron::

    python datasets/prepare_svhn.py SVHN_DIR datasets/digits --valid-fraction 0.1 --seed 0

SVHN_DIR holds the unpacked train.tar.gz / test.tar.gz (/ extra.tar.gz): train/, test/, extra/,
each with PNGs and digitStruct.mat. See datasets/README.md.
"""

from digit_detectron.data.prepare.svhn import convert_svhn
from digit_detectron.utils.cli import argument_parser, run_tool


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("svhn_dir", help="folder with the SVHN format-1 train/ (and test/, extra/) folders")
    parser.add_argument("root", help="output dataset root (point $DIGITS_DATASET_ROOT here)")
    parser.add_argument("--valid-fraction", type=float, default=0.1, help="share of train/ moved to valid/")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/valid split")
    parser.add_argument("--extra", action="store_true", help="add extra/ to the train split")
    parser.add_argument("--test-json", action="store_true", help="also write ROOT/test.json from test/")
    parser.add_argument("--link", action="store_true", help="hard-link images instead of copying them")
    parser.add_argument("--overwrite", action="store_true", help="replace existing ROOT/{train,valid,test}/")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    summary = convert_svhn(
        args.svhn_dir,
        args.root,
        valid_fraction=args.valid_fraction,
        seed=args.seed,
        extra=args.extra,
        test_json=args.test_json,
        link=args.link,
        overwrite=args.overwrite,
    )
    for split in ("train", "valid", "test"):
        if split in summary:
            s = summary[split]
            where = s["image_dir"] + (f" + {s['json']}" if s["json"] else "")
            print(f"{split}: {s['images']} images, {s['boxes']} boxes -> {where}")
    print(
        f"boxes clipped to the image: {summary['clipped_boxes']}, dropped: {summary['dropped_boxes']} "
        f"(of them non-finite, NaN or inf: {summary['non_finite_boxes']})"
    )
    named = summary["non_finite_images"]
    if named:
        more = f" and {len(named) - 20} more" if len(named) > 20 else ""
        print(f"non-finite boxes dropped in {len(named)} image(s): {', '.join(named[:20])}{more}")
    return summary


if __name__ == "__main__":
    run_tool(main)
