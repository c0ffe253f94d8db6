#!/usr/bin/env python
"""
Predict digit boxes and house numbers for a folder of images; writes the HW2 submission files::

    python tools/predict.py --weights output/digits_cpu/model_best.pth --input datasets/digits/test --output output/pred
    python tools/predict.py --config-file configs/digits_cpu.yaml --input datasets/digits/test \\
        --output output/pred MODEL.WEIGHTS plain_detectron2_checkpoint.pth
    python tools/predict.py --weights output/export/model.onnx --input datasets/digits/test --output output/pred

A model exported to ONNX (``digit-detectron export --format onnx``) runs on ONNX Runtime, several
images at once with one thread each: the fastest route on a CPU (benchmarks/speed.md). Its thresholds
are those it was exported with (model.json: the reader's, and pred.json's score threshold).
"""

import argparse

from digit_detectron import apply_test_mode
from digit_detectron.config import get_digit_cfg, model_config
from digit_detectron.export.runtime import ExportedModel, RuntimeModelError
from digit_detectron.inference.predictor import DigitPredictor, list_input_images, predict_files_exported
from digit_detectron.inference.reader_api import EXPORTED_SUFFIXES
from digit_detectron.inference.submission import load_id_map, resolve_image_ids, write_predictions
from digit_detectron.modeling.number_reader import NumberReader
from digit_detectron.utils.cli import add_model_flags, argument_parser, positive_int, run_tool, setup_logging
from digit_detectron.utils.device import resolve_device
from digit_detectron.utils.errors import ConfigError
from digit_detectron.utils.io import ensure_writable_dir
from digit_detectron.utils.lock import OutputLock

EPILOG = """\
outputs:
  OUT/pred.json  [{"image_id", "bbox": [x, y, w, h] (original pixels), "score", "category_id": 1..10}]
                 for every box scoring >= DIGITS.PRED_JSON_SCORE_THRESH
  OUT/pred.csv   image_id,pred_label: one row per input image, sorted by id; the number, or -1 when
                 no digit is read (also for an unreadable image, which is skipped and reported)
  OUT/pred_manifest.json  run id and SHA-256 of both files, written before they are renamed into
                 place: tools/visualize.py refuses a pair the manifest does not vouch for

image ids:
  By default the id of an image is its integer file stem (123.png -> 123); any other name is an
  error. --id-map gives ids to other names: a json object {"file name": id, ...}, or a COCO json
  whose "images" entries hold "file_name" and "id".

thresholds:
  The reader uses DIGITS.READER.* (tools/tune_reader.py measures them and writes them into the
  bundle; for a plain checkpoint pass its reader_thresholds.yaml as a second --config-file).
  --test-mode applies the reference design's test-time thresholds: ROI NMS
  DIGITS.TEST_MODE.NMS_THRESH and pred.json scores >= DIGITS.TEST_MODE.SCORE_THRESH.
"""


def get_parser():
    parser = argument_parser(__doc__, EPILOG)
    add_model_flags(parser)
    parser.add_argument("--input", required=True, help="image folder, or a glob pattern in quotes")
    parser.add_argument("--output", required=True, help="folder for pred.json and pred.csv")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    parser.add_argument(
        "--test-mode", action="store_true", help="the reference design's test-time thresholds (see below)"
    )
    parser.add_argument("--id-map", metavar="FILE.json", help="image ids for file names (see below)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth")
    return parser


def setup_cfg(args):
    cfg = model_config(args)
    if args.test_mode:
        apply_test_mode(cfg)
        cfg.DIGITS.PRED_JSON_SCORE_THRESH = cfg.DIGITS.TEST_MODE.SCORE_THRESH
    cfg.freeze()
    return cfg


def exported_model(args):
    """(ExportedModel, NumberReader, pred.json score threshold) of ``--weights model.onnx`` / ``.ts``."""
    import torch

    for flag, given in (
        ("--config-file", args.config_file),
        ("--test-mode", args.test_mode),
        ("config KEY VALUE opts", args.opts),
    ):
        if given:
            raise ConfigError(f"{flag}: an exported model ({args.weights}) runs with the settings it was exported with")
    try:
        model = ExportedModel(
            args.weights, threads=torch.get_num_threads(), device=resolve_device(args.device or "auto")
        )
    except RuntimeModelError as e:
        raise ConfigError(str(e)) from None
    reader = NumberReader.from_export(model.meta["reader"])
    meta = model.meta  # exports before pred_json_score_thresh was recorded: the default config's
    score_thresh = float(meta.get("pred_json_score_thresh", get_digit_cfg().DIGITS.PRED_JSON_SCORE_THRESH))
    return model, reader, score_thresh


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    exported = bool(args.weights) and args.weights.endswith(EXPORTED_SUFFIXES)
    if exported:
        model, reader, score_thresh = exported_model(args)
    else:
        cfg = setup_cfg(args)
    files = list_input_images(args.input)
    image_ids = resolve_image_ids(files, load_id_map(args.id_map) if args.id_map else None)
    ensure_writable_dir(args.output)  # before the inference, not after it
    with OutputLock(args.output, job="predict"):  # a second run into this folder stops here
        if exported:
            run = predict_files_exported(model, files)
            where = f", {model.path} on {model.workers} worker(s)"
        else:
            reader, score_thresh = NumberReader.from_config(cfg), cfg.DIGITS.PRED_JSON_SCORE_THRESH
            run = DigitPredictor(cfg).predict_files(files, batch_size=args.batch_size)
            where = ""
        print(run.summary())
        json_path, csv_path = write_predictions(args.output, run, image_ids, reader, score_thresh)
    print(f"Wrote {json_path} and {csv_path} ({len(files)} images, {reader}{where})")
    return run


if __name__ == "__main__":
    run_tool(main)
