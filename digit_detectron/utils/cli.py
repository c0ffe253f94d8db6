"""
What every tool in ``tools/``, ``datasets/`` and ``benchmarks/`` shares:

* ``get_parser()`` builds its parser (``argument_parser`` here gives the common formatting,
  ``--debug`` and ``--threads``), ``main(argv=None)`` parses, runs and returns the result, and the
  ``__main__`` block is ``run_tool(main)``;
* ``run_tool`` applies the thread policy (``utils.threads``: ``--threads``, ``OMP_NUM_THREADS`` or the
  usable cores) before ``main`` runs;
* ``setup_logging`` is the one logging set-up (detectron2's and this package's loggers);
* ``run_tool`` turns bad input (``DigitError``, OSError, ValueError, KeyError, FloatingPointError)
  into one ``error: <file or key>: <problem>`` line on stderr and exit code 2, and a failed child
  tool into one line naming it (its own output is above); ``--debug`` or ``DIGITS_DEBUG=1`` shows the
  traceback instead. An int that ``main`` returns is the exit code.
"""

import argparse
import logging
import os
import subprocess
import sys

from .errors import DigitError
from .threads import apply_thread_policy

DEBUG_ENV = "DIGITS_DEBUG"
BAD_INPUT = (DigitError, OSError, ValueError, KeyError, FloatingPointError)


def _child_errors():
    """Errors of a child process started by detectron2's launch (torch.multiprocessing), which end in one line too."""
    try:
        from torch.multiprocessing import ProcessRaisedException

        return (ProcessRaisedException,)
    except ImportError:  # pragma: no cover - older torch
        return ()


def argument_parser(doc, epilog=None):
    """An ArgumentParser with ``doc``'s first paragraph (all of it without ``epilog``) and ``--debug``."""
    description = doc.split("\n\n")[0].strip() if epilog else doc
    parser = argparse.ArgumentParser(
        description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_flags(parser)
    return parser


def add_common_flags(parser):
    """``--debug`` and ``--threads``, which every tool takes (``run_tool`` reads both)."""
    parser.add_argument(
        "--debug", action="store_true", help=f"show the Python traceback of an error (or set {DEBUG_ENV}=1)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads (default: OMP_NUM_THREADS, else the usable cores less a quarter; see utils/threads.py)",
    )
    return parser


def add_model_flags(parser, config_required=False):
    """
    ``--weights``, ``--config-file`` (repeatable) and ``--device`` of the tools that run a trained model:
    a bundle needs no config file; one given is merged over the bundle's (``config.get_model_cfg``).
    """
    parser.add_argument("--weights", default=None, help="the model: a bundle .pth written by training")
    parser.add_argument(
        "--config-file",
        action="append",
        default=None,
        required=config_required,
        metavar="FILE",
        help="config file merged over the bundle's (needed for a plain checkpoint); repeat to merge more",
    )
    return add_device_flag(parser)


def add_device_flag(parser):
    """``--device``: MODEL.DEVICE for this run (auto, cpu, cuda, cuda:N); ``device_opts`` turns it into opts."""
    parser.add_argument(
        "--device",
        default=None,
        help="auto (cuda when torch sees a GPU, else cpu), cpu, cuda or cuda:N (default: the config's MODEL.DEVICE)",
    )
    return parser


def device_opts(args):
    """``["MODEL.DEVICE", value]`` when ``--device`` was given, else nothing."""
    return ["MODEL.DEVICE", args.device] if getattr(args, "device", None) else []


def requested_threads(args):
    """The value of ``--threads N`` / ``--threads=N`` in an argument list, or None (the parser reports a bad one)."""
    for i, arg in enumerate(args):
        value = args[i + 1] if arg == "--threads" and i + 1 < len(args) else None
        if arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
        if arg == "--":
            break
    return None


def setup_logging(output_dir=None, rank=0):
    """detectron2's logger set-up for the root and ``digit_detectron`` loggers (console, and OUTPUT_DIR/log.txt)."""
    from detectron2.utils.logger import setup_logger

    setup_logger(output_dir, distributed_rank=rank)
    return setup_logger(output_dir, distributed_rank=rank, name="digit_detectron")


def error_message(error):
    """
    One line for an error: KeyError's message without the quotes repr() adds; for an error re-raised
    from a DataLoader worker or a child process (whose message holds that process's traceback), the
    original message, i.e. the traceback's last line without its exception name.
    """
    if isinstance(error, KeyError) and len(error.args) == 1:
        return str(error.args[0])
    text = str(error) or type(error).__name__
    if "Traceback (most recent call last)" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1].strip()
        name, sep, message = last.partition(": ")
        text = message if sep and name.replace(".", "").isidentifier() else last
    return text


EXIT_BAD_INPUT = 2


def _fail(message):
    """Print ``message`` to stderr and exit with EXIT_BAD_INPUT (the SystemExit's text is the message)."""
    print(message, file=sys.stderr, flush=True)
    error = SystemExit(message)
    error.code = EXIT_BAD_INPUT
    raise error


class _QuietBadInput(logging.Filter):
    """Drops a log record's traceback of bad input (e.g. detectron2's "Exception during training:" of a
    non-finite loss): ``run_tool`` says it in one line; ``--debug`` keeps it."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, BAD_INPUT)


# Loggers that log an exception's traceback before re-raising it to run_tool.
TRACEBACK_LOGGERS = ("detectron2.engine.train_loop",)


def _int_at_least(text, low):
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {text!r}")
    return value


def positive_int(text):
    """argparse type: a whole number >= 1 (``--max-rungs``, ``--batch-size``)."""
    return _int_at_least(text, 1)


def non_negative_int(text):
    """argparse type: a whole number >= 0 (``make_model --second-cycle-epochs``, where 0 turns it off)."""
    return _int_at_least(text, 0)


def run_tool(main, argv=None):
    """Run ``main(argv)``; bad input ends in ``error: ...`` and exit code 2 (see the module docstring)."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if not debug:
        for name in TRACEBACK_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, _QuietBadInput) for f in logger.filters):
                logger.addFilter(_QuietBadInput())
    try:
        apply_thread_policy(requested_threads(args))
        result = main(argv)
    except subprocess.CalledProcessError as e:
        if debug:
            raise
        command = e.cmd if isinstance(e.cmd, str) else " ".join(str(c) for c in e.cmd[:2])
        _fail(f"error: {command} failed with exit code {e.returncode} (its output is above)")
    except BAD_INPUT + _child_errors() as e:
        if debug:
            raise
        _fail(f"error: {' '.join(error_message(e).split())}")
    if isinstance(result, int) and not isinstance(result, bool):
        sys.exit(result)
    return result
