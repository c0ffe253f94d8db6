#!/usr/bin/env python
"""
`make model`: train the ready model that ships in the package (digit_detectron/weights/) from scratch
(a warm start on digit crops, then the detector; `make demo` fine-tunes the model this makes), with
`make demo`'s tools on more data:

1. `tools/demo.py` with configs/digits_ready.yaml (digits_cpu.yaml without ResNet-18's last stage), 16,000
   synthetic train images laid out from the shipped layout statistics (``--geometry parametric``: the same
   data from any clone, with or without ../shared; ``--extra-fonts`` adds the 18 font files of
   datasets/fetch_fonts.py from PyPI to the training fonts), 5 epochs, seed 11: training, reader tuning,
   evaluation on every split (valid, valid_instyle, test_ood, test_wide, free), predict, export;
   then a second cycle (``--second-cycle-epochs``, 3: 6,000 steps): the first cycle's best checkpoint
   trained again on the same images with configs/digits_ready_cycle2.yaml (a cosine schedule from half
   the learning rate), tuned, evaluated and exported the same way;
2. the tuned best checkpoint as a slim bundle (weights in float16, its config, no optimizer):
   ``digit_detectron/weights/digits_ready.pth``;
3. its ONNX export, checked against the PyTorch model, quantized to int8 (the backbone's convolutions,
   calibrated on 500 generated images; kept only within 0.5 point of float32 on 2,000 others, ``export
   --int8``): ``digits_ready.onnx`` and ``digits_ready.json``, what ``DigitReader()`` runs where
   onnxruntime is installed;
4. the sizes (at most 30 MB together).

Its numbers go into docs/model_card.md. About an hour and a half on 2 cores of an AVX-512 CPU (62 + 32 min
on an Intel Xeon with AMX).

``--from BUNDLE [KEY VALUE ...]`` skips the training and packages BUNDLE (steps 2-4), with the config
overrides merged into the shipped config (test-time settings: the weights are BUNDLE's)::

    python tools/make_model.py --from output/model/train/model_best.pth MODEL.RPN.POST_NMS_TOPK_TEST 20
"""

import json
import os
import shutil
import subprocess
import sys

from digit_detectron.checkpoint.bundle import write_slim_bundle
from digit_detectron.inference.reader_api import READY_MODEL, READY_MODEL_ONNX
from digit_detectron.utils.cli import argument_parser, non_negative_int, positive_int, run_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_MB = 30.0
FONTS = os.path.join("datasets", "fonts_extra")  # datasets/fetch_fonts.py writes the extra training fonts here


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--data", default=os.path.join("datasets", "digits_model"))
    parser.add_argument("--output", default=os.path.join("output", "model"))
    parser.add_argument("--train", type=int, default=16000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--second-cycle-epochs",
        type=non_negative_int,
        default=3,
        help="epochs of the second training cycle (configs/digits_ready_cycle2.yaml, over digits_ready.yaml: "
        "pass 0 with another --config-file); 0: one cycle only",
    )
    parser.add_argument("--config-file", default="digits_ready.yaml")
    parser.add_argument(
        "--extra-fonts",
        action="store_true",
        help="also train on the 18 font files of datasets/fetch_fonts.py (from PyPI; measured, not the default: "
        "benchmarks/recipe_log.md)",
    )
    parser.add_argument(
        "--calibration-images", type=positive_int, default=500, help="generated images that calibrate the int8 export"
    )
    parser.add_argument("--from", dest="source", default=None, help="package this bundle; no training")
    parser.add_argument("opts", nargs="*", help="with --from: config KEY VALUE pairs for the shipped config")
    return parser


def run(cmd):
    print("\n$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def main(argv=None):
    args = get_parser().parse_args(argv)
    py = sys.executable
    if args.opts and not args.source:
        raise ValueError("config KEY VALUE pairs go with --from (a training takes them from --config-file)")
    if args.source:
        best = os.path.abspath(args.source)
        shipped = os.path.join(REPO, args.output, "source_bundle.pth")
        os.makedirs(os.path.dirname(shipped), exist_ok=True)
        shutil.copyfile(best, shipped)  # the source may be the shipped model itself
        best = shipped
    else:
        data = ["--data", args.data, "--train", str(args.train), "--seed", str(args.seed), "--geometry", "parametric"]
        if args.extra_fonts:
            run([py, "datasets/fetch_fonts.py", FONTS])
            data += ["--fonts", FONTS]

        def train(output, config_file, *opts):
            run([py, "tools/demo.py", *data, "--output", output, "--config-file", config_file, *opts])
            return os.path.join(REPO, output, "train", "model_best.pth")

        best = train(args.output, args.config_file, "SOLVER.EPOCHS", str(args.epochs))
        if args.second_cycle_epochs:
            cycle2 = ("MODEL.WEIGHTS", best, "SOLVER.EPOCHS", str(args.second_cycle_epochs))
            best = train(os.path.join(args.output, "cycle2"), "digits_ready_cycle2.yaml", *cycle2)
    entry = None
    if args.opts:
        from digit_detectron.checkpoint.bundle import bundle_entry
        from digit_detectron.config import get_digit_cfg, read_bundle_config

        entry = bundle_entry(get_digit_cfg(None, list(args.opts), embedded=(best, read_bundle_config(best))))
    os.makedirs(os.path.dirname(READY_MODEL), exist_ok=True)
    write_slim_bundle(best, READY_MODEL, entry=entry)
    export_dir = os.path.join(args.output, "ready_export")
    export = [py, "tools/export_model.py", "--weights", READY_MODEL, "--format", "onnx", "--output", export_dir]
    # 500 calibration images: with 200, a training of 2026-12-07 lost 0.6 point of accuracy in int8 and
    # was refused; with 500 it kept within 0.2. The check runs on 2,000 images: on 500, one point is five
    # images, and a later training was refused for three (88.6 -> 88.0%) that 2,000 did not confirm
    # (87.5 -> 87.5%; benchmarks/recipe_log.md).
    int8 = ["--int8", "--int8-layers", "backbone", "--calibration-images", str(args.calibration_images)]
    run([*export, *int8, "--int8-check-images", "2000"])
    shutil.copyfile(os.path.join(REPO, export_dir, "model_int8.onnx"), READY_MODEL_ONNX)
    with open(os.path.join(REPO, export_dir, "model_int8.json")) as f:
        meta = json.load(f)
    meta["source_weights"] = os.path.basename(READY_MODEL)  # no path of this machine in the package
    with open(os.path.splitext(READY_MODEL_ONNX)[0] + ".json", "w") as f:
        json.dump(meta, f, indent=2)
    sizes = {p: os.path.getsize(p) / 2**20 for p in (READY_MODEL, READY_MODEL_ONNX)}
    for path, mb in sizes.items():
        print(f"{path}: {mb:.1f} MB")
    total = sum(sizes.values())
    if total > MAX_MB:
        raise ValueError(f"the ready model is {total:.1f} MB, over the {MAX_MB:.0f} MB the package may carry")
    print(f"ready model: {total:.1f} MB in all; evaluation: {os.path.join(args.output, 'eval', 'eval_results.json')}")
    return 0


if __name__ == "__main__":
    run_tool(main)
