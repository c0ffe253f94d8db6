#!/usr/bin/env python
"""
Measure the number reader's thresholds and pred.json's score threshold on a labelled split::

    python tools/tune_reader.py --weights output/digits_cpu/model_best.pth --dataset digits_valid
"""

import argparse
import os
import shlex

from tabulate import tabulate

from digit_detectron.checkpoint.bundle import update_bundle_config
from digit_detectron.config import model_config
from digit_detectron.inference import reader_tuning
from digit_detectron.utils.cli import add_model_flags, argument_parser, positive_int, run_tool, setup_logging

EPILOG = """\
The model runs once on the split with a low ROI score threshold. Then every reader ladder (1 to
--max-rungs decreasing thresholds from --score-threshs) and NMS threshold is scored by number
accuracy, and every pred.json threshold by COCO box AP. The best reader replaces the config's only
where it reads more numbers beyond chance (a sign test over the images where the two disagree,
digit_detectron/inference/reader_tuning.py); the chosen values are written to
OUTPUT/reader_thresholds.yaml (OUTPUT: --output, else the config's OUTPUT_DIR) and, unless
--no-bundle, into the model bundle itself, so that every tool given --weights uses them. For a plain
checkpoint use the YAML:
  tools/predict.py --config-file CONFIG --config-file OUTPUT/reader_thresholds.yaml ...
or append the printed KEY VALUE opts to any tool's command line (e.g. tools/train_net.py).
"""


def float_list(text):
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def get_parser():
    parser = argument_parser(__doc__, EPILOG)
    add_model_flags(parser)
    parser.add_argument(
        "--no-bundle", action="store_true", help="do not write the thresholds into the bundle (--weights)"
    )
    parser.add_argument("--dataset", default="digits_valid", help="registered labelled dataset (default digits_valid)")
    parser.add_argument("--output", help="folder for reader_thresholds.yaml (default: the config's OUTPUT_DIR)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default 8)")
    grids = (
        ("--score-threshs", reader_tuning.DEFAULT_SCORE_GRID, "reader score thresholds"),
        ("--nms-threshs", reader_tuning.DEFAULT_NMS_GRID, "reader NMS thresholds"),
        ("--pred-json-threshs", reader_tuning.DEFAULT_PRED_JSON_GRID, "DIGITS.PRED_JSON_SCORE_THRESH values"),
    )
    for flag, default, what in grids:
        parser.add_argument(
            flag,
            type=float_list,
            default=default,
            metavar="T,T,...",
            help=f"candidate {what} (default {','.join(f'{t:g}' for t in default)})",
        )
    parser.add_argument("--max-rungs", type=positive_int, default=3, help="most thresholds in a ladder (default 3)")
    parser.add_argument(
        "--digit-free",
        metavar="DATASET",
        help="registered dataset of images without digits (e.g. digits_valid_free): choose MIN_TOP_SCORE so that "
        "at most --max-free-read percent of them are read as a number",
    )
    parser.add_argument("--max-free-read", type=float, default=2.0, help="percent (default 2)")
    parser.add_argument("--top", type=int, default=10, help="reader rows to print (default 10)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    cfg = model_config(args)
    cfg.freeze()
    if not 0.0 <= args.max_free_read <= 100.0:
        raise ValueError(f"--max-free-read: a percent in [0, 100], got {args.max_free_read}")
    result = reader_tuning.tune(
        cfg,
        args.dataset,
        args.score_threshs,
        args.nms_threshs,
        args.pred_json_threshs,
        args.max_rungs,
        args.batch_size,
        digit_free=args.digit_free,
        max_free_read=args.max_free_read,
    )
    if result.digit_free:
        print(
            f"{result.digit_free} ({result.digit_free_images} images without digits): a number read on "
            f"{result.free_read_before:.1f}% of them; with MIN_TOP_SCORE {result.min_top_score:.4g}: "
            f"{result.free_read_after:.1f}%"
        )
    print(result.run.summary() + (" (scored as images without detections)" if result.run.failures else ""))

    table = [[acc, ", ".join(f"{t:g}" for t in ladder), nms] for acc, ladder, nms in result.rows[: args.top]]
    current = result.current_reader
    table.append(
        [result.current_accuracy, ", ".join(f"{t:g}" for t in current.score_threshs) + " (config)", current.nms_thresh]
    )
    print(
        f"Number accuracy on {args.dataset} ({result.num_images} images), best {min(args.top, len(result.rows))} "
        f"of {len(result.rows)} and the config's:"
    )
    print(tabulate(table, headers=["accuracy %", "SCORE_THRESHS", "NMS_THRESH"], tablefmt="pipe", floatfmt=".2f"))
    print("COCO box AP of pred.json by PRED_JSON_SCORE_THRESH:")
    print(tabulate(result.aps, headers=["thresh", "AP"], tablefmt="pipe", floatfmt=(".3g", ".2f")))

    path = os.path.join(args.output or cfg.OUTPUT_DIR, "reader_thresholds.yaml")
    reader_tuning.write_reader_yaml(path, result, cfg.MODEL.WEIGHTS)
    opts = reader_tuning.reader_config_opts(result.best_reader, result.best_pred_json_thresh)
    print(f"Measured best: {result.measured_reader}; {reader_tuning.adoption(result)}")
    print(f"Chosen: {result.best_reader}, PRED_JSON_SCORE_THRESH {result.best_pred_json_thresh:g}")
    print(f"Wrote {path}; as opts: " + " ".join(shlex.quote(o) for o in opts))
    values = reader_tuning.reader_config_values(result.best_reader, result.best_pred_json_thresh)
    if not args.no_bundle and update_bundle_config(cfg.MODEL.WEIGHTS, values):
        print(f"Wrote the thresholds into the bundle {cfg.MODEL.WEIGHTS}")
    return result


if __name__ == "__main__":
    run_tool(main)
