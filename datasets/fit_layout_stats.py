#!/usr/bin/env python
"""
Fit the layout statistics the synthetic generator ships (its framing of real SVHN images, without the
annotation file) to a COCO geometry file of real SVHN boxes, and write them as JSON::

    python datasets/fit_layout_stats.py ../shared/svhn_geometry/train.json
    python datasets/fit_layout_stats.py GEOMETRY.json --output digit_detectron/data/synthetic/svhn_layout_stats.json
"""

import json

from digit_detectron.data.synthetic.layout import LAYOUT_STATS, fit_layout_stats
from digit_detectron.utils.cli import argument_parser, run_tool
from digit_detectron.utils.io import atomic_write_json


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("geometry", help="COCO json of real SVHN boxes (sizes and boxes)")
    parser.add_argument(
        "--output", default=LAYOUT_STATS, help="where to write the statistics (default: the shipped file)"
    )
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    stats = fit_layout_stats(args.geometry)
    atomic_write_json(args.output, stats, indent=1)
    print(f"Wrote {args.output}: {stats['images']} images, {len(json.dumps(stats))} bytes")
    return stats


if __name__ == "__main__":
    run_tool(main)
