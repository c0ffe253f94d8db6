#!/usr/bin/env python
"""
Fetch optional extra training fonts from PyPI (``tools/make_model.py --extra-fonts`` uses them): five
font families that are packaged as Python wheels (SIL OFL 1.1 / Apache 2.0), pinned by version and
SHA-256, unpacked into one folder for ``datasets/prepare_synthetic.py --fonts`` / ``tools/demo.py
--fonts``::

    python datasets/fetch_fonts.py datasets/fonts_extra

Only the 18 font files listed in EXTRA_FONTS are unpacked (four to five weights of each family), with
each family's licence text. None of these families is one of the out-of-style split's held-out
families (DejaVu Serif, STIX, Computer Modern italic) or of the independent ruler's fonts (Roboto,
Source Sans, Fredoka, Amatic, FreeSans). A wheel whose SHA-256 differs from the pin is refused, and
nothing is written for it. Running it again with the files present downloads nothing.
"""

import os
import subprocess
import sys
import tempfile
import zipfile

from digit_detectron.utils.cli import argument_parser, run_tool
from digit_detectron.utils.io import atomic_open, sha256_of

# wheel file name -> (SHA-256, font files to unpack, licence file)
EXTRA_FONTS = {
    "font_caladea-0.0.2-py3-none-any.whl": (
        "eab5b77f1da830226524f419d16d4bc4cb5b68d2de0f47ef83760a8b202e94bc",
        ("Caladea-Bold.ttf", "Caladea-BoldItalic.ttf", "Caladea-Italic.ttf", "Caladea-Regular.ttf"),
        "APACHE-2.0.txt",
    ),
    "font_hanken_grotesk-0.0.2-py3-none-any.whl": (
        "7c3609e9bcdc2c9550b2a3baaed937eb7598fc1034e7df1ebcc4eb5489fa86f9",
        ("HankenGrotesk-Bold.otf", "HankenGrotesk-Italic.otf", "HankenGrotesk-Light.otf", "HankenGrotesk-Regular.otf"),
        "OFL.txt",
    ),
    "font_intuitive-0.0.4-py3-none-any.whl": (
        "344184f23f7fa1d3b8cee328f92d268dcf5e18d15e46ef979165863cb897924a",
        ("Intuitive.ttf",),
        "OFL.txt",
    ),
    "font_lato-0.1.0-py3-none-any.whl": (
        "ff74f2d4647187bac4b853ab8215e6b2afe124fcd01c809629aadd8f4356e959",
        ("Lato-Black.ttf", "Lato-Bold.ttf", "Lato-Italic.ttf", "Lato-Light.ttf", "Lato-Regular.ttf"),
        "OFL.txt",
    ),
    "font_source_serif_pro-0.0.1-py3-none-any.whl": (
        "38dd9a8d8027d22aa8ef2d10d27d7c558701b32772ff9f3790f509577e91dca4",
        ("SourceSerifPro-Bold.ttf", "SourceSerifPro-It.ttf", "SourceSerifPro-Light.ttf", "SourceSerifPro-Regular.ttf"),
        "LICENSE.txt",
    ),
}


def requirement(wheel):
    """``font-lato==0.1.0`` for ``font_lato-0.1.0-py3-none-any.whl``."""
    name, version = wheel.split("-")[:2]
    return f"{name.replace('_', '-')}=={version}"


def unpack(wheel_path, expected_sha, fonts, licence, output):
    """Check ``wheel_path`` against its pin and write its ``fonts`` and licence into ``output``."""
    got = sha256_of(wheel_path)
    if got != expected_sha:
        raise ValueError(f"{wheel_path}: SHA-256 {got} is not the pinned {expected_sha}; nothing unpacked")
    family = os.path.basename(wheel_path).split("-")[0]
    with zipfile.ZipFile(wheel_path) as z:
        members = {os.path.basename(n): n for n in z.namelist() if "/files/" in n}
        missing = [f for f in (*fonts, licence) if f not in members]
        if missing:
            raise ValueError(f"{wheel_path}: has no {', '.join(missing)}")
        # The licence first and each font whole or not at all: a font file present is a complete one
        # (fetch_fonts skips wheels whose fonts are all there).
        targets = [(licence, f"LICENSE-{family}.txt"), *((name, name) for name in fonts)]
        for member, name in targets:
            with atomic_open(os.path.join(output, name), "wb") as f:
                f.write(z.read(members[member]))


def fetch_fonts(output, wheel_dir=None):
    """
    Write EXTRA_FONTS into ``output`` (wheels from ``wheel_dir`` when given, else ``pip download``);
    the font file paths, sorted.
    """
    os.makedirs(output, exist_ok=True)
    present = set(os.listdir(output))
    wanted = [w for w, (_, fonts, _) in EXTRA_FONTS.items() if not present.issuperset(fonts)]
    with tempfile.TemporaryDirectory() as tmp:
        source = wheel_dir or tmp
        if wanted and not wheel_dir:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", tmp]
            subprocess.run([*cmd, *(requirement(w) for w in wanted)], check=True)
        for wheel in wanted:
            path = os.path.join(source, wheel)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: the wheel {requirement(wheel)} was not found")
            unpack(path, *EXTRA_FONTS[wheel], output)
    return sorted(os.path.join(output, f) for _, fonts, _ in EXTRA_FONTS.values() for f in fonts)


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("output", nargs="?", default=os.path.join("datasets", "fonts_extra"))
    parser.add_argument("--wheels", default=None, help="take the wheels from this folder instead of PyPI")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    paths = fetch_fonts(args.output, args.wheels)
    print(f"{len(paths)} font files in {args.output}")


if __name__ == "__main__":
    run_tool(main)
