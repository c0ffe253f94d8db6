"""
What every tool in ``tools/``, ``datasets/`` and ``benchmarks/`` shares:

* ``get_parser()`` builds its parser (``argument_parser`` here gives the common formatting and
  ``--debug``), ``main(argv=None)`` parses, runs and returns the result, and the ``__main__`` block
  is ``run_tool(main)``;
* ``setup_logging`` is the one logging set-up (detectron2's and this package's loggers);
* ``run_tool`` turns bad input (``DigitError``, OSError, ValueError, KeyError, FloatingPointError)
  into one ``error: <file or key>: <problem>`` line on stderr and exit code 1, and a failed child
  tool into one line naming it (its own output is above); ``--debug`` or ``DIGITS_DEBUG=1`` shows the
  traceback instead. An int that ``main`` returns is the exit code.
"""

import argparse
import os
import subprocess
import sys

from .errors import DigitError

DEBUG_ENV = "DIGITS_DEBUG"
BAD_INPUT = (DigitError, OSError, ValueError, KeyError, FloatingPointError)


def argument_parser(doc, epilog=None):
    """An ArgumentParser with ``doc``'s first paragraph (all of it without ``epilog``) and ``--debug``."""
    description = doc.split("\n\n")[0].strip() if epilog else doc
    parser = argparse.ArgumentParser(
        description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_debug_flag(parser)
    return parser


def add_debug_flag(parser):
    parser.add_argument(
        "--debug", action="store_true", help=f"show the Python traceback of an error (or set {DEBUG_ENV}=1)"
    )
    return parser


def setup_logging(output_dir=None, rank=0):
    """detectron2's logger set-up for the root and ``digit_detectron`` loggers (console, and OUTPUT_DIR/log.txt)."""
    from detectron2.utils.logger import setup_logger

    setup_logger(output_dir, distributed_rank=rank)
    return setup_logger(output_dir, distributed_rank=rank, name="digit_detectron")


def error_message(error):
    """One line for an error: KeyError's message without the quotes repr() adds."""
    if isinstance(error, KeyError) and len(error.args) == 1:
        return str(error.args[0])
    return str(error) or type(error).__name__


def run_tool(main, argv=None):
    """Run ``main(argv)``; bad input ends in ``error: ...`` and exit code 1 (see the module docstring)."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        result = main(argv)
    except subprocess.CalledProcessError as e:
        if debug:
            raise
        command = e.cmd if isinstance(e.cmd, str) else " ".join(str(c) for c in e.cmd[:2])
        sys.exit(f"error: {command} failed with exit code {e.returncode} (its output is above)")
    except BAD_INPUT as e:
        if debug:
            raise
        sys.exit(f"error: {error_message(e)}")
    if isinstance(result, int) and not isinstance(result, bool):
        sys.exit(result)
    return result
