#!/usr/bin/env python
"""
Draw digit predictions (and the ground truth of a labelled split) into PNGs, one per image, plus
OUT/grid.png. Red frame: the number read is wrong; green: right; grey: no ground truth. Examples::

    # run a model
    python tools/visualize.py --config-file configs/digits_cpu.yaml --dataset digits_valid \\
        --output vis/ MODEL.WEIGHTS output/digits_cpu/model_best.pth
    python tools/visualize.py --config-file configs/digits_cpu.yaml --input 'photos/*.jpg' \\
        --output vis/ MODEL.WEIGHTS output/digits_cpu/model_best.pth
    # draw what a predict run wrote (pred.csv beside pred.json is used when present)
    python tools/visualize.py --dataset digits_valid --predictions out/pred.json --output vis/ --wrong-only
"""

import argparse
import os

from tqdm import tqdm

from digit_detectron import apply_test_mode, get_digit_cfg
from digit_detectron.analysis.visualization import FilePredictions, ModelPredictions, visualize
from digit_detectron.config import model_config, option_value
from digit_detectron.data.datasets import get_dataset_dicts
from digit_detectron.inference.predictor import list_records
from digit_detectron.modeling.number_reader import NumberReader
from digit_detectron.utils.cli import add_model_flags, argument_parser, run_tool, setup_logging


def get_parser():
    parser = argument_parser(__doc__)
    add_model_flags(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="image folder or glob (no ground truth)")
    source.add_argument("--dataset", help="registered dataset, e.g. digits_valid (ground truth drawn too)")
    parser.add_argument("--output", required=True, help="folder for the PNGs")
    parser.add_argument("--predictions", metavar="PRED_JSON", help="draw this pred.json instead of running a model")
    parser.add_argument("--pred-csv", help="numbers to show (default: pred.csv beside --predictions, if any)")
    parser.add_argument("--num", type=int, default=32, help="images to draw (default 32; 0: all)")
    parser.add_argument("--grid-size", type=int, default=16, help="images in grid.png (default 16)")
    parser.add_argument("--wrong-only", action="store_true", help="draw only images whose number is wrong")
    parser.add_argument("--score-thresh", type=float, help="lowest score drawn (default: the reader's lowest)")
    parser.add_argument("--test-mode", action="store_true", help="the test-mode thresholds (DIGITS.TEST_MODE)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser


def build_predict(args, cfg):
    reader = NumberReader.from_config(cfg)
    if not args.predictions:
        return ModelPredictions(cfg, reader)
    pred_csv = args.pred_csv
    if pred_csv is None:
        beside = os.path.join(os.path.dirname(args.predictions), "pred.csv")
        pred_csv = beside if os.path.isfile(beside) else None
    return FilePredictions(args.predictions, pred_csv, reader)


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    if args.predictions and not (args.weights or option_value(args.opts, "MODEL.WEIGHTS")):
        cfg = get_digit_cfg(args.config_file or [], args.opts)  # drawing a pred.json needs no model
    else:
        cfg = model_config(args)
    if args.test_mode:
        apply_test_mode(cfg)
    records = get_dataset_dicts(args.dataset) if args.dataset else list_records(args.input)
    predict = build_predict(args, cfg)
    if isinstance(predict, FilePredictions):
        predict.check_covers(records)
    score_thresh = min(cfg.DIGITS.READER.SCORE_THRESHS) if args.score_thresh is None else args.score_thresh
    paths, grid, counts = visualize(
        records,
        predict,
        args.output,
        num=args.num or None,
        grid_size=args.grid_size,
        score_thresh=score_thresh,
        wrong_only=args.wrong_only,
        progress=lambda it: tqdm(it, desc="visualize", unit="img"),
    )
    print(f"Wrote {counts['drawn']} images ({counts['wrong']} with a wrong number) to {args.output}")
    if counts["unreadable"]:
        print(f"Skipped {counts['unreadable']} unreadable images (see the warnings above)")
    print(f"Grid of {min(len(paths), args.grid_size)}: {grid}" if grid else "Nothing drawn: no grid")
    return paths, grid, counts


if __name__ == "__main__":
    run_tool(main)
