"""
``digit-detectron``: one command for every task (the console entry point of pyproject.toml)::

    digit-detectron read photo.png --weights output/demo/train/model_best.pth
    digit-detectron predict --weights model_best.pth --input datasets/digits/test --output out/pred
    digit-detectron train --config-file configs/digits_cpu.yaml OUTPUT_DIR out/run
    digit-detectron eval --weights model_best.pth DATASETS.TEST '("digits_valid",)'
    digit-detectron check datasets/digits      digit-detectron demo      digit-detectron export ...

Each subcommand but ``read`` and ``demo`` calls the ``main`` of its module in ``digit_detectron/tools/``
with the arguments as given (``tools/*.py`` are thin wrappers of them); ``eval`` is ``train --eval-only``.
``read`` prints the number of each image and writes the image with the digits drawn.
"""

import argparse
import importlib
import os
import runpy
import sys

from . import DETECTRON2_MISSING, HAS_DETECTRON2
from .utils.cli import argument_parser, run_tool

if HAS_DETECTRON2:
    from .data.image_io import ImageReadError
    from .inference.reader_api import DigitReader, ReadResult

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# subcommand -> (module of digit_detectron.tools, arguments put first, what it does); "demo" is the source
# checkout's tools/demo.py (it renders the embedded data with the repository's datasets/ scripts).
TOOLS = {
    "train": ("train_net", [], "train a model"),
    "eval": ("train_net", ["--eval-only"], "evaluate a model: COCO AP + number accuracy"),
    "predict": ("predict", [], "pred.json + pred.csv for a folder of images"),
    "tune": ("tune_reader", [], "measure the number reader's thresholds on a split"),
    "visualize": ("visualize", [], "draw predictions against ground truth"),
    "benchmark": ("benchmark", [], "images/s of training, inference, prediction"),
    "check": ("check_dataset", [], "check a dataset in the HW2 layout"),
    "export": ("export_model", [], "export a model to TorchScript or ONNX"),
    "bundle": ("make_bundle", [], "embed a config into a plain checkpoint (a bundle)"),
    "demo": (None, [], "the whole job on the embedded synthetic data (in the source checkout)"),
    "setup-detectron2": ("setup_detectron2", [], "install detectron2 (pure Python) into this environment"),
}
DEMO = os.path.join(REPO, "tools", "demo.py")


def run_subcommand(name, args):
    """Run the subcommand's ``main`` with ``args`` (its exit code, errors and output are its own)."""
    module, first, _ = TOOLS[name]
    if module is not None:
        return importlib.import_module(f"digit_detectron.tools.{module}").main([*first, *args])
    if not os.path.isfile(DEMO):
        raise FileNotFoundError(
            f"{DEMO}: the demo runs in a source checkout of digit-detectron (git clone, then make demo)"
        )
    argv = sys.argv
    sys.argv = [DEMO, *args]
    try:
        runpy.run_path(DEMO, run_name="__main__")
    finally:
        sys.argv = argv
    return 0


def read_main(argv=None):
    """
    ``digit-detectron read``: the number of each image, and the image with its digits drawn. An image
    that cannot be read prints ``-1 (unreadable: why)`` and the others are read (files and folders
    alike); the exit code is then 1.
    """
    parser = argument_parser("Read the house number of images (prints it, draws the digits).")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument(
        "--weights",
        default=None,
        help="model bundle (.pth written by training) or exported model.onnx (default: the ready model shipped "
        "with the package, docs/model_card.md)",
    )
    parser.add_argument("--config-file", action="append", default=None, help="config over the bundle's (optional)")
    parser.add_argument("--output", default=None, help="folder for the drawn images (default: ./read)")
    parser.add_argument("--device", default="auto", help="auto (default: cuda when there is a GPU), cpu or cuda")
    args = parser.parse_args(argv)
    for item in args.images:  # before the model loads: a typo costs no time
        if not os.path.exists(item):
            raise FileNotFoundError(f"{item}: no such image or folder")
    reader = DigitReader(args.weights, config_file=args.config_file, device=args.device)
    output = args.output or "read"
    os.makedirs(output, exist_ok=True)
    results = {}
    for item in args.images:
        if os.path.isdir(item):
            results.update(reader.read_folder(item, progress=False))
            continue
        try:
            results[item] = reader(item)
        except ImageReadError as e:
            results[item] = ReadResult(-1, [], source=item, error=str(e))
    names = drawn_names(list(results), output)
    unreadable = 0
    for path, result in results.items():
        if result.error:
            unreadable += 1
            print(f"{path}: -1 (unreadable: {result.error})")
            continue
        result.save(names[path])
        print(f"{path}: {result.number}  ({len(result.digits)} digit(s); drawn: {names[path]})")
    if unreadable:
        print(f"{unreadable} of {len(results)} image(s) unreadable", file=sys.stderr)
        return 1
    return results


def drawn_names(paths, output):
    """
    ``{image: OUTPUT/<stem>_read.png}``, one file per image: images of one stem from different folders
    get ``<stem>_read-2.png``, ``-3``, ... in the order given.
    """
    names, taken = {}, set()
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = f"{stem}_read.png", 1
        while name in taken:
            n += 1
            name = f"{stem}_read-{n}.png"
        taken.add(name)
        names[path] = os.path.join(output, name)
    return names


def get_parser():
    lines = [f"  {name:10s} {what}" for name, (_, _, what) in TOOLS.items()]
    lines.insert(0, f"  {'read':10s} read the number of images with a model (prints it, draws the digits)")
    parser = argument_parser(
        __doc__,
        "subcommands (each takes --help):\n" + "\n".join(lines),
    )
    parser.add_argument("command", choices=["read", *TOOLS], metavar="COMMAND", help="read, " + ", ".join(TOOLS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the subcommand's arguments")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("read", *TOOLS):
        name, rest = argv[0], argv[1:]
    else:
        args = get_parser().parse_args(argv)  # --help, or an unknown subcommand: argparse's message
        name, rest = args.command, args.args
    if not HAS_DETECTRON2 and name != "setup-detectron2" and not {"-h", "--help"} & set(rest):
        print(f"error: {DETECTRON2_MISSING}", file=sys.stderr)
        return 2
    if name == "read":
        return read_main(rest)
    return run_subcommand(name, rest)


def console_main():
    """The ``digit-detectron`` entry point (also ``python -m digit_detectron.command``)."""
    run_tool(main)


if __name__ == "__main__":
    console_main()
