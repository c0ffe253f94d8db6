#!/usr/bin/env python
"""
`make demo`: the whole job on the embedded synthetic data, on a CPU (2 cores; benchmarks/speed.md has
the times per CPU kind). Training prints an estimate of the time left for every phase after its first
steps.

1. generate the synthetic house-number dataset (datasets/prepare_synthetic.py) unless present in the
   size, seed and styles asked for: train in-style (a tenth digit-free walls, a quarter in the real test
   framing), valid / test / test_ood / test_wide / free / valid_free out-of-style, valid_instyle
   in-style;
2. train configs/digits_demo.yaml: the package's ready model fine-tuned for 1,500 steps on the train
   split (``--config-file configs/digits_cpu.yaml`` trains from scratch instead: a warm start on digit
   crops, then 3,500 steps), evaluated on the out-of-style validation split, whose AP picks the best
   checkpoint, in two one-thread processes on 2+ cores (``--processes``; 0.38 against 0.43 s per step
   for one two-thread process, benchmarks/speed.md);
3. measure the number reader's thresholds on the out-of-style validation split and its gate on the
   digit-free valid_free split (tools/tune_reader.py --digit-free), which writes them into the best
   checkpoint, a model bundle (its config inside: no --config-file from here on);
4. evaluate that bundle, as a user gets it, on valid (out-of-style; it chose the checkpoint and the
   thresholds), test_ood (out-of-style, chose nothing; 2,000 images, ``--test-ood``), test_wide (the
   real test framing), free (walls without digits: the share read as a number) and valid_instyle
   (COCO AP + number accuracy; OUT/eval/eval_results.json; the evaluation report of each split, with
   the accuracy per font, OUT/eval/report/<split>/);
5. predict the test split into pred.json / pred.csv (tools/predict.py);
6. draw validation predictions (tools/visualize.py); training plots come from step 2;
7. export the bundle to ONNX with its detectron2-free runtime (tools/export_model.py), checked
   against the PyTorch model, and read one test image with ``digit-detectron read``.

Every step is one of the project's tools, printed before it runs; a step whose output exists is
skipped, and an interrupted training resumes, so running the demo again continues where it stopped. A
training of other data or another config (train.json, the config file, a base it names or the opts
changed: recorded in OUT/train/demo_signature.json) is moved aside to OUT/train.stale-<time> and
trained again.
"""

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time

from digit_detectron.data.synthetic.generate import DIGIT_FREE_SHARE, LABELLED, SPLIT_FRAMING
from digit_detectron.data.synthetic.layout import GEOMETRY_FILE, STATS_FORMAT
from digit_detectron.data.synthetic.styles import SPLIT_STYLES, split_styles, training_fonts
from digit_detectron.engine.hooks import LATER_WORK_ENV
from digit_detectron.evaluation.report import headline, load_report
from digit_detectron.utils.cli import argument_parser, run_tool
from digit_detectron.utils.io import atomic_write_json
from digit_detectron.utils.threads import usable_cores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, env):
    print(f"\n$ {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    start = time.time()
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    print(f"[{time.time() - start:.0f} s]", flush=True)


# The splits the best checkpoint is evaluated on, with the style each is rendered in.
EVAL_SPLITS = {
    "digits_valid": "out-of-style",
    "digits_valid_instyle": "in-style",
    "digits_test_ood": "out-of-style",
    "digits_test_wide": "ood, test frame",
    "digits_free": "ood, no digit",
}
DIGIT_FREE_SPLIT = "digits_free"
LATER_FIXED_S = 90  # seconds of the phases after training that do not scale with images: tool start-up, export


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--data", default=os.path.join("datasets", "digits"), help="dataset root")
    parser.add_argument("--output", default=os.path.join("output", "demo"))
    parser.add_argument(
        "--config-file",
        default=os.path.join("configs", "digits_demo.yaml"),
        help="what to train (default: the ready model fine-tuned; configs/digits_cpu.yaml: from scratch)",
    )
    parser.add_argument("--train", type=int, default=4000, help="synthetic train images")
    parser.add_argument("--valid", type=int, default=400, help="images of valid and valid_instyle each")
    parser.add_argument(
        "--test-ood",
        type=int,
        default=2000,
        help="images of test_ood, the out-of-style split that chooses nothing (its accuracy is within about "
        "+-0.9 points at 2,000 images, +-1.9 at 400)",
    )
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument(
        "--test-wide", type=int, default=1000, help="images of test_wide (out-of-style, framed as the real test images)"
    )
    parser.add_argument("--free", type=int, default=500, help="images of free (out-of-style walls with no digit)")
    parser.add_argument(
        "--valid-free",
        type=int,
        default=1000,
        help="images of valid_free (the same kind; tune_reader chooses the reader's gate on them: on 300, 2%% "
        "was six walls, and the gate's share on other walls varied from 1.8 to 4.6%% between trainings)",
    )
    parser.add_argument(
        "--max-free-read",
        type=float,
        default=1.5,
        help="percent of valid_free the gate may read as a number (tools/tune_reader.py; default 1.5: a margin "
        "under the 2%% aimed at on walls never used to choose it)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--geometry",
        default=None,
        help="layouts of the synthetic data (datasets/prepare_synthetic.py --geometry): a COCO box json, or "
        "'parametric' for the shipped statistics (default: ../shared/svhn_geometry/train.json when present)",
    )
    parser.add_argument(
        "--fonts",
        metavar="DIR",
        action="append",
        default=[],
        help="also train on the font files under DIR (datasets/prepare_synthetic.py --fonts; repeatable)",
    )
    parser.add_argument(
        "--processes",
        default="auto",
        help="training processes (tools/train_net.py --num-gpus N: gloo on CPU, each on its share of the "
        "cores); 'auto': 2 where 2 or more cores are usable, else 1",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs for training")
    return parser


def training_processes(value, cores):
    """The training processes for ``--processes`` (a count, or "auto": 2 on 2+ usable cores, else 1)."""
    if str(value).strip().lower() == "auto":
        return 2 if cores >= 2 else 1
    try:
        processes = int(value)
    except ValueError:
        processes = 0
    if processes < 1:
        raise ValueError(f"--processes: expected 'auto' or a count of at least 1, got {value!r}")
    return processes


def synthetic_data_made(root, styles=None):
    """
    (train images, test_ood images, seed, whether every split's style is ``styles``' (split -> Style;
    default today's generator's)) of a dataset that datasets/prepare_synthetic.py made under ``root``,
    read from its train.json and the other labelled splits' jsons found there; None for any other data
    (e.g. HW2's, which the demo then uses as it is) or none.
    """
    styles = styles or SPLIT_STYLES
    train = _generator_json(os.path.join(root, "train.json"))
    if train is None:
        return None
    current, test_ood = True, 0
    for split in LABELLED:
        data = train if split == "train" else _generator_json(os.path.join(root, f"{split}.json"))
        if data is None:
            current &= split == "valid_instyle" or split == "test_ood"  # today's generator writes the others
            continue
        info = data["info"]
        current &= info["style"] == styles[split].info()
        current &= info.get("test_framing_share") == SPLIT_FRAMING.get(split, 0.0)
        current &= info.get("digit_free_share") == DIGIT_FREE_SHARE.get(split, 0.0)
        # Layouts from the shipped statistics must be today's (a geometry file is the user's own).
        layouts = info.get("layouts") or {}
        current &= layouts.get("source") == GEOMETRY_FILE or layouts.get("stats_format") == STATS_FORMAT
        test_ood = len(data.get("images", [])) if split == "test_ood" else test_ood
    return len(train.get("images", [])), test_ood, train["info"].get("seed"), current


def _generator_json(path):
    """The dataset json at ``path`` when the synthetic generator wrote it (its info.style), else None."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    info = data.get("info") if isinstance(data, dict) else None
    if not isinstance(info, dict) or not isinstance(info.get("style"), dict):  # the generator's mark, as dataset_style
        return None
    return data


def training_signature(data_root, config_file, opts):
    """
    What a finished demo training depends on: the train annotations (hash of train.json), the
    config it trains with, merged as train_net merges it (the file, every ``_BASE_`` under it, then the
    opts: hash of the merged YAML), so that an edit of a base config is seen too, and the model file it
    starts from (MODEL.WEIGHTS, e.g. the ready model: hash of its bytes). A training under another
    signature is stale. A config that does not load is a ConfigError naming it.
    """
    from digit_detectron.config import get_digit_cfg

    try:
        with open(os.path.join(data_root, "train.json"), "rb") as f:
            train_json = hashlib.sha256(f.read()).hexdigest()[:16]
    except OSError:
        train_json = None
    cfg = get_digit_cfg(config_file, list(opts))
    signature = {"train_json": train_json, "config": hashlib.sha256(cfg.dump().encode()).hexdigest()[:16]}
    if cfg.MODEL.WEIGHTS and os.path.isfile(cfg.MODEL.WEIGHTS):  # the model it starts from (the ready model)
        with open(cfg.MODEL.WEIGHTS, "rb") as f:
            signature["weights"] = hashlib.sha256(f.read()).hexdigest()[:16]
    return signature


SIGNATURE_FILE = "demo_signature.json"


def prepare_train_dir(train_dir, signature):
    """
    Keep ``train_dir`` if it was trained (or is being trained) under ``signature``; otherwise move it
    aside to ``<train_dir>.stale-<time>`` (kept, not deleted) so that the demo trains again instead of
    reusing a model of other data or another config. Records the signature; returns the moved path or None.
    """
    stamp = os.path.join(train_dir, SIGNATURE_FILE)
    moved = None
    if os.path.isdir(train_dir) and os.listdir(train_dir):
        try:
            with open(stamp) as f:
                recorded = json.load(f)
        except (OSError, ValueError):
            recorded = None
        if recorded != signature:
            moved = base = f"{train_dir}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
            n = 1
            while os.path.exists(moved):
                moved, n = f"{base}-{n}", n + 1
            os.replace(train_dir, moved)
            why = "no record of its data and config" if recorded is None else "other data or another config"
            print(f"{train_dir}: trained with {why}; moved to {moved}, training again")
    os.makedirs(train_dir, exist_ok=True)
    atomic_write_json(stamp, signature, indent=2)
    return moved


def summary_table(results):
    """Rows of the evaluation summary: split, style, images, mAP, AP50, AP75, number accuracy."""
    rows = []
    for name, style in EVAL_SPLITS.items():
        r = results.get(name, {})
        bbox, number = r.get("bbox", {}), r.get("number", {})
        images = f"{number['num_images']:7.0f}" if "num_images" in number else "      --"
        cells = [bbox.get("AP"), bbox.get("AP50"), bbox.get("AP75"), number.get("accuracy")]
        cells = "".join(f" {c:8.1f}" if c is not None else "      --" for c in cells)
        rows.append(f"  {name:22s} {style:13s} {images}{cells}")
    return "\n".join([f"  {'split':22s} {'style':13s}  images      mAP     AP50     AP75  accuracy %", *rows])


def main(argv=None):
    args = get_parser().parse_args(argv)
    processes = training_processes(args.processes, usable_cores())

    py = sys.executable
    env = dict(os.environ, DIGITS_DATASET_ROOT=os.path.abspath(args.data), PYTHONUNBUFFERED="1")
    out = args.output
    start = time.time()
    fonts = training_fonts(args.fonts)[0] if args.fonts else ()
    present = os.path.isfile(os.path.join(args.data, "test_ood.json"))
    made = synthetic_data_made(args.data, split_styles(fonts)) if present else None
    if made is not None and made != (args.train, args.test_ood, args.seed, True):
        older = "" if made[3] else ", in an older generator's styles"
        print(
            f"{args.data}: synthetic data of {made[0]} train / {made[1]} test_ood images (seed {made[2]}{older}); "
            f"the demo asks for {args.train} / {args.test_ood} (seed {args.seed}) in today's style: generating it again"
        )
        present = False
    if not present:
        sizes = f"--train {args.train} --valid {args.valid} --test {args.test} --test-ood {args.test_ood}"
        sizes += f" --test-wide {args.test_wide} --free {args.free} --valid-free {args.valid_free}"
        sizes += f" --geometry {args.geometry}" if args.geometry else ""
        sizes += f" --seed {args.seed} --workers 2"
        grid = os.path.join(out, "synthetic_samples.png")
        font_args = [a for folder in args.fonts for a in ("--fonts", folder)]
        run(
            [py, "datasets/prepare_synthetic.py", args.data, *sizes.split(), *font_args, "--overwrite", "--grid", grid],
            env,
        )
    else:
        print(f"Dataset present: {args.data} (delete it to regenerate)")

    train_dir = os.path.join(out, "train")
    config = ["--config-file", args.config_file]
    prepare_train_dir(train_dir, training_signature(args.data, args.config_file, args.opts))
    if not os.path.isfile(os.path.join(train_dir, "model_final.pth")):
        launch = ["--num-gpus", str(processes), "--dist-url", "auto"] if processes > 1 else []
        # --no-report: the evaluation below reports every split with the tuned reader.
        train_cmd = [py, "tools/train_net.py", *config, "--resume", *launch, "--no-report"]
        # What the later phases read (tuning, the evaluations, predict, drawing) and their fixed cost (tool
        # start-up, the export): training prints the time left for all of it after its first steps.
        later_images = 2 * args.valid + args.test_ood + args.test_wide + args.free + args.valid_free
        later_images += args.valid + args.test + 32
        train_env = dict(env, **{LATER_WORK_ENV: f"{later_images},{LATER_FIXED_S}"})
        run([*train_cmd, "OUTPUT_DIR", train_dir, *args.opts], train_env)
    weights = os.path.join(train_dir, "model_best.pth")
    if not os.path.isfile(weights):
        weights = os.path.join(train_dir, "model_final.pth")
    model = ["--weights", weights]  # a bundle: the config it was trained with is inside

    eval_dir = os.path.join(out, "eval")
    datasets = "(" + ", ".join(f'"{n}"' for n in EVAL_SPLITS) + ",)"
    # The reader's thresholds on digits_valid, and its gate on digits_valid_free: at most --max-free-read
    # percent of walls without digits read as a number.
    tune = [py, "tools/tune_reader.py", *model, "--dataset", "digits_valid", "--output", out]
    run([*tune, "--digit-free", "digits_valid_free", "--max-free-read", str(args.max_free_read)], env)
    run([py, "tools/train_net.py", "--eval-only", *model, "DATASETS.TEST", datasets, "OUTPUT_DIR", eval_dir], env)
    thresholds = os.path.join(out, "reader_thresholds.yaml")
    predictions = os.path.join(out, "predictions")
    run([py, "tools/predict.py", *model, "--input", os.path.join(args.data, "test"), "--output", predictions], env)
    visualize = os.path.join(out, "visualize")
    run([py, "tools/visualize.py", *model, "--dataset", "digits_valid", "--num", "32", "--output", visualize], env)
    export_dir = os.path.join(out, "export")
    run([py, "tools/export_model.py", *model, "--format", "onnx", "--output", export_dir], env)
    sample = sorted(os.listdir(os.path.join(args.data, "test")))[0]
    read_dir = os.path.join(out, "read")
    read_cmd = [py, "-m", "digit_detectron.command", "read", os.path.join(args.data, "test", sample)]
    run([*read_cmd, *model, "--output", read_dir], env)

    print("\n" + "=" * 72)
    print(f"Demo finished in {(time.time() - start) / 60:.1f} min. Outputs:")
    for what, path in [
        ("synthetic samples", os.path.join(out, "synthetic_samples.png")),
        ("training log / metrics", os.path.join(train_dir, "metrics.json")),
        ("training curves", os.path.join(train_dir, "plots")),
        ("best checkpoint", weights),
        ("evaluation", os.path.join(eval_dir, "eval_results.json")),
        ("evaluation reports", os.path.join(eval_dir, "report")),
        ("reader thresholds", thresholds),
        ("pred.json / pred.csv", predictions),
        ("drawn predictions", os.path.join(visualize, "grid.png")),
        ("ONNX model + runtime", export_dir),
        ("one image read", read_dir),
    ]:
        print(f"  {what:24s} {path}")
    with open(os.path.join(eval_dir, "eval_results.json")) as f:
        results = json.load(f)
    print("Best checkpoint with the reader thresholds tune_reader wrote into it, both chosen on digits_valid")
    print("(out-of-style); digits_test_ood chose nothing:")
    print(summary_table(results))
    free = results.get(DIGIT_FREE_SPLIT, {}).get("number", {})
    if "accuracy" in free:
        print(
            f"{DIGIT_FREE_SPLIT}: a number was read on {100 - free['accuracy']:.1f}% of "
            f"{free['num_images']:.0f} walls without any digit (its accuracy column: read as no number)"
        )
    for name in EVAL_SPLITS:
        folder = os.path.join(eval_dir, "report", name)
        if os.path.isfile(os.path.join(folder, "report.json")):
            report = load_report(folder)
            print(f"Report {folder}: {headline(report)}")
            if report.get("accuracy_by_glyph_source"):
                print(f"  weakest glyph sources: {weakest_sources(report['accuracy_by_glyph_source'])}")
            if report.get("accuracy_by_ink_contrast"):
                print(f"  by the faintest digit's ink contrast: {contrast_line(report['accuracy_by_ink_contrast'])}")
    return results


def contrast_line(by_contrast):
    """A report's accuracy_by_ink_contrast as one line: accuracy and images per band, faintest first."""
    return ", ".join(f"{band} {v['accuracy']:.0%} of {v['images']}" for band, v in by_contrast.items())


def weakest_sources(by_source, n=3):
    """The ``n`` glyph sources read worst (a report's accuracy_by_glyph_source), as one line."""
    worst = sorted(by_source.items(), key=lambda kv: kv[1]["accuracy"])[:n]
    return ", ".join(f"{name} {v['accuracy']:.0%} of {v['images']}" for name, v in worst)


if __name__ == "__main__":
    run_tool(main)
