"""
``digit-detectron setup-detectron2``: install detectron2 into the running Python environment.

detectron2 publishes no wheel on PyPI. This installs the pure-Python part of the PyPI distribution
``sal-detectron2==0.7.2`` (a 2024 snapshot of detectron2's main branch), whose wheel is tagged for
CPython 3.10 and bundles a ``_C`` extension built for 3.10 only:

1. download that wheel with pip (or take ``--wheel FILE``, e.g. for a machine without internet) and
   check its SHA-256 against the one pinned here: another file is refused;
2. repack it as a pure-Python wheel (``py3-none-any``): without ``detectron2/_C``, without the
   ``numpy<2`` pin (its Python code runs with numpy 2), with a new RECORD;
3. ``pip install`` that wheel (no dependencies: digit-detectron's own requirements cover them).

It is then an ordinary install: ``pip list`` shows ``sal-detectron2 0.7.2``, ``pip uninstall
sal-detectron2`` removes it. NMS and ROIAlign come from torchvision. A detectron2 that is already
importable (e.g. a CUDA build of your own) is kept unless ``--force``.

This module imports neither detectron2 nor torch: it runs before they are there.
"""

import argparse
import base64
import csv
import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import zipfile

from ..utils.io import sha256_of

DIST = "sal-detectron2"
VERSION = "0.7.2"
WHEEL_NAME = "sal_detectron2-0.7.2-cp310-none-any.whl"
WHEEL_SHA256 = "491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
PURE_WHEEL_NAME = "sal_detectron2-0.7.2-py3-none-any.whl"
DIST_INFO = "sal_detectron2-0.7.2.dist-info"


class SetupError(Exception):
    """A step of the installation failed; the message says which and what to do."""


def download_wheel(folder):
    """The pinned wheel, downloaded by pip into ``folder``; its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps"]
    cmd += ["--only-binary=:all:", "--python-version", "3.10", "--platform", "any", "-d", folder]
    cmd += [f"{DIST}=={VERSION}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    path = os.path.join(folder, WHEEL_NAME)
    if done.returncode != 0 or not os.path.isfile(path):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SetupError(
            f"pip could not download {DIST}=={VERSION} ({last}); download {WHEEL_NAME} on another machine "
            f"and pass it with --wheel FILE"
        )
    return path


def check_wheel(path):
    """Refuse a file that is not the pinned wheel (SetupError naming it)."""
    if not os.path.isfile(path):
        raise SetupError(f"{path}: no such file")
    found = sha256_of(path)
    if found != WHEEL_SHA256:
        raise SetupError(f"{path}: SHA-256 {found} is not the pinned {DIST} {VERSION} wheel's ({WHEEL_SHA256})")


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def repack(wheel, folder):
    """
    The pure-Python wheel made from the pinned ``wheel`` in ``folder`` (its path): ``detectron2/`` without
    ``_C``, METADATA without the numpy pin, a py3-none-any WHEEL file and a RECORD of what it holds.
    """
    out = os.path.join(folder, PURE_WHEEL_NAME)
    records = []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            name = info.filename
            if info.is_dir() or name.startswith("detectron2/_C"):
                continue  # compiled for CPython 3.10 only
            if not (name.startswith("detectron2/") or name.startswith(DIST_INFO + "/")):
                continue
            if name in (f"{DIST_INFO}/RECORD", f"{DIST_INFO}/WHEEL"):
                continue  # written anew below
            data = src.read(info)
            if name == f"{DIST_INFO}/METADATA":
                data = b"\n".join(line for line in data.split(b"\n") if not line.startswith(b"Requires-Dist: numpy"))
            dst.writestr(name, data)
            records.append(_record_line(name, data))
        wheel_file = b"Wheel-Version: 1.0\nGenerator: digit-detectron setup-detectron2\nRoot-Is-Purelib: true\n"
        wheel_file += b"Tag: py3-none-any\n"
        dst.writestr(f"{DIST_INFO}/WHEEL", wheel_file)
        records.append(_record_line(f"{DIST_INFO}/WHEEL", wheel_file))
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerows(records)
        writer.writerow([f"{DIST_INFO}/RECORD", "", ""])
        dst.writestr(f"{DIST_INFO}/RECORD", text.getvalue())
    return out


def install(pure_wheel):
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "--force-reinstall"]
    done = subprocess.run([*cmd, pure_wheel], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SetupError(f"pip install {pure_wheel} failed: {last}")


def detectron2_importable():
    return importlib.util.find_spec("detectron2") is not None


def get_parser():
    parser = argparse.ArgumentParser(
        prog="digit-detectron setup-detectron2",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--wheel", metavar="FILE", help=f"use this downloaded {WHEEL_NAME} instead of pip download")
    parser.add_argument("--force", action="store_true", help="install even if a detectron2 is importable already")
    parser.add_argument("--keep", metavar="DIR", help="also keep the repacked pure-Python wheel in DIR")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    if detectron2_importable() and not args.force:
        spec = importlib.util.find_spec("detectron2")
        print(f"detectron2 is already importable ({os.path.dirname(spec.origin)}): kept (--force replaces it)")
        return 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            wheel = args.wheel or download_wheel(tmp)
            check_wheel(wheel)
            pure = repack(wheel, args.keep or tmp)
            install(pure)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"installed {DIST} {VERSION} (detectron2, pure Python) into {sys.prefix}; pip uninstall {DIST} removes it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
