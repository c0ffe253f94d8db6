"""Digit ink masks pre-rendered once per font, from the fonts matplotlib ships (DejaVu, STIX, Computer Modern)."""

import os

import cv2
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Fonts whose figures look like house numbers: the symbol fonts, DejaVu*Display (no digits) and
# cmmi10 (old-style figures) are left out.
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmti10.ttf",
    "cmtt10.ttf",
)
GLYPH_HEIGHT = 96  # px, the height of "0" in every font
# Stroke-weight variants: dilation radius in px at GLYPH_HEIGHT.
WEIGHTS = (0, 3, 6)


def default_font_dir():
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


class GlyphBank:
    """
    ``masks[f][d][w]``: uint8 ink coverage (0..255) of digit ``d`` in font ``f`` at stroke weight
    ``WEIGHTS[w]``, cropped tight to the ink; ``font_names[f]`` names the font file.
    """

    def __init__(self, font_dir=None, font_files=FONT_FILES, height=GLYPH_HEIGHT):
        font_dir = font_dir or default_font_dir()
        self.font_names, self.masks = [], []
        for name in font_files:
            path = os.path.join(font_dir, name)
            if os.path.isfile(path):
                self.font_names.append(name)
                self.masks.append(_render_font(path, height))
        if not self.masks:
            raise FileNotFoundError(f"{font_dir}: none of the digit fonts {list(font_files)} found")


def _render_font(path, height):
    # Scale the point size so that "0" is `height` px tall, then render every digit.
    probe = _render_digit(ImageFont.truetype(path, 2 * height), "0")
    font = ImageFont.truetype(path, round(2 * height * height / probe.shape[0]))
    digits = []
    for d in range(10):
        mask = _render_digit(font, str(d))
        variants = []
        for radius in WEIGHTS:
            m = np.pad(mask, radius) if radius else mask
            if radius:
                kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
                m = cv2.dilate(m, kernel)
            variants.append(m)
        digits.append(variants)
    return digits


def _render_digit(font, char):
    left, top, right, bottom = font.getbbox(char)
    pad = 4
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), char, font=font, fill=255)
    mask = np.asarray(canvas)
    ys, xs = np.nonzero(mask)
    if not len(ys):
        raise ValueError(f"font {font.path} has no ink for '{char}'")
    return np.ascontiguousarray(mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
