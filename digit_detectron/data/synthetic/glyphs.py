"""
Digit ink masks, pre-rendered once per glyph source. A source is named ``kind:detail``:

* ``ttf:<file>``: a TrueType font that matplotlib ships (DejaVu, STIX, Computer Modern), or any font
  file given by its path (``ttf:/usr/share/fonts/...``: ``collect_fonts``, ``prepare_synthetic.py --fonts``);
* ``hershey:<face>[-italic]``: one of OpenCV's Hershey stroke fonts (``cv2.putText``);
* ``segment7`` / ``segment7-slant``: seven-segment displays, drawn procedurally;
* ``dotmatrix``: a 5x7 dot-matrix font, drawn procedurally;
* ``stencil:<file>``: a TrueType font with stencil bridges cut through its strokes.

Every source renders digits "0".."9" with "0" GLYPH_HEIGHT px tall, cropped to the ink, in each stroke
weight of WEIGHTS (erosion < 0 < dilation, px at GLYPH_HEIGHT). Each source also gets three plain
"1"s in its own stroke width (a bar; with a flag; with a flag and a base), since house numbers often
show a thinner "1" than the font's.
"""

import functools
import os

import cv2
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

GLYPH_HEIGHT = 96  # px, the height of "0" in every source
FONT_KINDS = ("ttf", "stencil")  # glyph-source kinds drawn from a font file (``<kind>:<file>``)
# Stroke-weight variants: erosion (< 0) or dilation (> 0) radius in px at GLYPH_HEIGHT.
WEIGHTS = (-2, 0, 3, 6)
# How often each weight is drawn.
WEIGHT_P = (0.15, 0.5, 0.25, 0.1)

HERSHEY_FACES = {
    "simplex": cv2.FONT_HERSHEY_SIMPLEX,
    "plain": cv2.FONT_HERSHEY_PLAIN,
    "duplex": cv2.FONT_HERSHEY_DUPLEX,
    "complex": cv2.FONT_HERSHEY_COMPLEX,
    "triplex": cv2.FONT_HERSHEY_TRIPLEX,
    "complex_small": cv2.FONT_HERSHEY_COMPLEX_SMALL,
    "script_simplex": cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    "script_complex": cv2.FONT_HERSHEY_SCRIPT_COMPLEX,
}

# Segments a..g of each digit (a top, b top right, c bottom right, d bottom, e bottom left, f top left, g middle).
SEGMENTS = {
    0: "abcdef",
    1: "bc",
    2: "abged",
    3: "abgcd",
    4: "fgbc",
    5: "afgcd",
    6: "afgedc",
    7: "abc",
    8: "abcdefg",
    9: "abcdfg",
}
# 5x7 dot-matrix digits, one string of 5 columns per row.
DOT_MATRIX = {
    0: ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    1: ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    2: ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    3: ("11111", "00010", "00100", "00010", "00001", "10001", "01110"),
    4: ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    5: ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    6: ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    7: ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    8: ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    9: ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
}


def default_font_dir():
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


class GlyphBank:
    """
    ``masks[s][d][w]``: uint8 ink coverage (0..255) of digit ``d`` in source ``s`` at stroke weight
    ``WEIGHTS[w]``, cropped tight to the ink; ``ones[s][k][w]`` the plain "1" shapes ``k`` (bar, flag,
    flag and base) of source ``s``; ``font_names[s]`` names the source (see the module docstring).
    """

    def __init__(self, sources, font_dir=None, height=GLYPH_HEIGHT):
        font_dir = font_dir or default_font_dir()
        self.font_names, self.masks, self.ones = [], [], []
        for name in sources:
            digits = render_source(name, font_dir, height)
            if digits is not None:
                self.font_names.append(name)
                self.masks.append([_weights(mask, height) for mask in digits])
                self.ones.append([_weights(m, height) for m in plain_ones(stroke_width(digits[1]), height)])
        if not self.masks:
            raise FileNotFoundError(f"{font_dir}: none of the glyph sources {list(sources)} could be rendered")


FONT_EXTENSIONS = (".ttf", ".otf")
# Fonts whose digits ``digit_likeness`` compares a font's glyphs with (a spread of sans, serif and stroke designs).
REFERENCE_SOURCES = (
    "ttf:DejaVuSans.ttf",
    "ttf:DejaVuSans-Bold.ttf",
    "ttf:DejaVuSansMono.ttf",
    "ttf:cmr10.ttf",
    "ttf:cmss10.ttf",
    "hershey:simplex",
    "hershey:complex",
)
MIN_DIGITS_RECOGNISED = 7  # of 10, for a font to count as drawing digits (symbol fonts map "0".."9" to symbols)


def _shape_vector(mask, size=(16, 24)):
    """A glyph as a blurred, centred, unit-norm 24 x 16 vector (aspect kept) for nearest-neighbour matching."""
    h, w = mask.shape
    s = min(size[1] / h, size[0] / w)
    small = cv2.resize(
        mask.astype(np.float32), (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA
    )
    out = np.zeros((size[1], size[0]), np.float32)
    y, x = (size[1] - small.shape[0]) // 2, (size[0] - small.shape[1]) // 2
    out[y : y + small.shape[0], x : x + small.shape[1]] = small
    out = cv2.GaussianBlur(out, (0, 0), 1.0).ravel()
    out -= out.mean()
    return out / (np.linalg.norm(out) + 1e-6)


@functools.cache
def _reference_vectors():
    digits, vectors = [], []
    for name in REFERENCE_SOURCES:
        for d, mask in enumerate(render_source(name, default_font_dir(), 48)):
            digits.append(d)
            vectors.append(_shape_vector(mask))
    return np.array(digits), np.stack(vectors)


def digit_likeness(masks):
    """How many of the ten glyph ``masks`` ("0".."9") look most like that digit among REFERENCE_SOURCES' digits."""
    digits, vectors = _reference_vectors()
    nearest = digits[np.argmax(np.stack([_shape_vector(m) for m in masks]) @ vectors.T, axis=1)]
    return int((nearest == np.arange(10)).sum())


def collect_fonts(folders, held_out=None, known=()):
    """
    The font files under ``folders`` (searched recursively, sorted) that draw the ten digits, and
    ``{path: why}`` for those skipped: unreadable, a font without digits (ten identical "missing
    glyph" boxes, or symbols: fewer than MIN_DIGITS_RECOGNISED glyphs look like their digit,
    ``digit_likeness``), of a family ``held_out(path)`` names (the style split's), or one whose file
    name is in ``known`` (a font the glyph sources have already) or was seen before.
    """
    fonts, skipped, names = [], {}, set(known)
    for folder in folders:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: font folder not found")
        found = sorted(
            os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if f.lower().endswith(FONT_EXTENSIONS)
        )
        for path in found:
            family = held_out and held_out(path)
            if family:
                skipped[path] = f"family {family} is held out for the out-of-style split"
                continue
            if os.path.basename(path) in names:
                skipped[path] = "a font of this file name is a training font already"
                continue
            try:
                digits = _render_font(path, 48)
            except (OSError, ValueError) as e:
                skipped[path] = f"cannot draw the digits ({' '.join(str(e).split())})"
                continue
            if len({(m.shape, m.tobytes()) for m in digits}) < 10:
                skipped[path] = "no ten different digit glyphs (a font without digits draws the same box)"
                continue
            recognised = digit_likeness(digits)
            if recognised < MIN_DIGITS_RECOGNISED:
                skipped[path] = f"its glyphs for 0..9 do not look like digits ({recognised} of 10 do): a symbol font?"
                continue
            fonts.append(path)
            names.add(os.path.basename(path))
    return fonts, skipped


def stroke_width(mask):
    """The width of a glyph's vertical stroke: the longest run of ink across its middle row."""
    row = mask[mask.shape[0] // 2] > 127
    runs, run = [0], 0
    for ink in row:
        run = run + 1 if ink else 0
        runs.append(run)
    return max(max(runs), 2)


def plain_ones(stroke, height):
    """A bar, a bar with a flag, and a bar with a flag and a base, ``stroke`` px wide and ``height`` tall."""
    shapes = []
    for flag, base in ((False, False), (True, False), (True, True)):
        w = int(round(0.6 * height)) + 2 * stroke
        canvas = np.zeros((height + 2 * stroke, w), np.uint8)
        x0 = w // 2 - stroke // 2
        cv2.rectangle(canvas, (x0, stroke), (x0 + stroke - 1, stroke + height - 1), 255, -1)
        if flag:
            tip = (int(x0 - 0.18 * height), int(stroke + 0.2 * height))
            cv2.line(canvas, (x0 + stroke // 2, stroke + stroke // 2), tip, 255, stroke, cv2.LINE_AA)
        if base:
            half = int(0.22 * height)
            y = stroke + height - stroke
            cv2.rectangle(canvas, (x0 + stroke // 2 - half, y), (x0 + stroke // 2 + half, y + stroke - 1), 255, -1)
        shapes.append(_crop(canvas))
    return shapes


def render_source(name, font_dir, height):
    """The 10 digit masks (cropped to the ink) of source ``name``; None for a font file that is absent."""
    kind, _, detail = name.partition(":")
    if kind in FONT_KINDS:
        path = os.path.join(font_dir, detail)
        if not os.path.isfile(path):
            return None
        digits = _render_font(path, height)
        return [_stencil(m) for m in digits] if kind == "stencil" else digits
    if kind == "hershey":
        face, italic = detail.removesuffix("-italic"), detail.endswith("-italic")
        if face not in HERSHEY_FACES:
            raise ValueError(f"unknown Hershey face {face!r} in glyph source {name!r}")
        return _render_hershey(HERSHEY_FACES[face] | (cv2.FONT_ITALIC if italic else 0), height)
    if kind in ("segment7", "segment7-slant"):
        return [_render_segments(d, height, slant=0.18 if kind.endswith("slant") else 0.0) for d in range(10)]
    if kind == "dotmatrix":
        return [_render_dots(d, height) for d in range(10)]
    raise ValueError(f"unknown glyph source {name!r}")


def _crop(mask):
    ys, xs = np.nonzero(mask)
    if not len(ys):
        raise ValueError("a glyph has no ink")
    return np.ascontiguousarray(mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])


def _weights(mask, height):
    """The mask at every stroke weight of WEIGHTS; an erosion that would erase most ink keeps the mask."""
    variants = []
    for radius in WEIGHTS:
        r = round(abs(radius) * height / GLYPH_HEIGHT)
        if r == 0:
            variants.append(mask)
            continue
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        if radius > 0:
            variants.append(cv2.dilate(np.pad(mask, r), kernel))
        else:
            thin = cv2.erode(mask, kernel)
            keep = (thin > 127).sum() >= 0.35 * (mask > 127).sum()
            variants.append(_crop(thin) if keep else mask)
    return variants


def _render_font(path, height):
    # Scale the point size so that "0" is `height` px tall, then render every digit.
    probe = _render_digit(ImageFont.truetype(path, 2 * height), "0")
    font = ImageFont.truetype(path, round(2 * height * height / probe.shape[0]))
    return [_render_digit(font, str(d)) for d in range(10)]


def _render_digit(font, char):
    left, top, right, bottom = font.getbbox(char)
    pad = 4
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), char, font=font, fill=255)
    mask = np.asarray(canvas)
    if not mask.any():
        raise ValueError(f"font {font.path} has no ink for '{char}'")
    return _crop(mask)


def _render_hershey(face, height):
    """The 10 digits of a Hershey face, cropped to the ink and scaled so that "0" is ``height`` px tall."""
    # Hershey glyphs are strokes: a thickness of ~1/9 of the height looks like a sign-maker's pen.
    (_, h0), _ = cv2.getTextSize("0", face, 1.0, 1)
    scale = 1.15 * height / max(h0, 1)
    thickness = max(2, round(height / 9))
    factor = height / _hershey_text(face, "0", scale, thickness).shape[0]
    digits = []
    for d in range(10):
        mask = _hershey_text(face, str(d), scale, thickness)
        digits.append(cv2.resize(mask, (max(1, round(mask.shape[1] * factor)), max(1, round(mask.shape[0] * factor)))))
    return digits


def _hershey_text(face, char, scale, thickness):
    """``char`` drawn with cv2.putText, cropped to the ink."""
    (w, h), base = cv2.getTextSize(char, face, scale, thickness)
    canvas = np.zeros((h + base + 4 * thickness, w + 4 * thickness), np.uint8)
    cv2.putText(canvas, char, (2 * thickness, h + 2 * thickness), face, scale, 255, thickness, cv2.LINE_AA)
    return _crop(canvas)


def _render_segments(digit, height, slant=0.0):
    """A seven-segment digit: hexagonal segments in a cell 0.55 x height, ``slant`` = shear (x per y)."""
    w, t = 0.55 * height, 0.12 * height  # cell width, segment thickness
    gap = 0.02 * height
    ends = {  # segment centre lines, (x0, y0, x1, y1) in a cell with y down
        "a": (0, 0, w, 0),
        "b": (w, 0, w, height / 2),
        "c": (w, height / 2, w, height),
        "d": (0, height, w, height),
        "e": (0, height / 2, 0, height),
        "f": (0, 0, 0, height / 2),
        "g": (0, height / 2, w, height / 2),
    }
    pad = int(t + abs(slant) * height) + 4
    canvas = np.zeros((int(height + 2 * pad), int(w + 2 * pad + abs(slant) * height)), np.uint8)
    for seg in SEGMENTS[digit]:
        x0, y0, x1, y1 = ends[seg]
        if x0 == x1:  # vertical: a hexagon pointing up and down
            y0, y1 = y0 + gap + t / 2, y1 - gap - t / 2
            h = t / 2
            poly = [(x0, y0 - h), (x0 + h, y0), (x0 + h, y1), (x0, y1 + h), (x0 - h, y1), (x0 - h, y0)]
        else:
            x0, x1 = x0 + gap + t / 2, x1 - gap - t / 2
            h = t / 2
            poly = [(x0 - h, y0), (x0, y0 - h), (x1, y0 - h), (x1 + h, y0), (x1, y0 + h), (x0, y0 + h)]
        pts = np.array([(x + pad + slant * (height - y), y + pad) for x, y in poly])
        cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return _crop(canvas)


def _render_dots(digit, height):
    """A 5x7 dot-matrix digit, 7 rows of round dots spanning ``height``."""
    pitch = height / 7
    r = 0.42 * pitch
    canvas = np.zeros((int(height + 2 * pitch), int(5 * pitch + 2 * pitch)), np.uint8)
    for row, bits in enumerate(DOT_MATRIX[digit]):
        for col, bit in enumerate(bits):
            if bit == "1":
                centre = (int(round((col + 1.5) * pitch * 16)), int(round((row + 1.5) * pitch * 16)))
                cv2.circle(canvas, centre, int(round(r * 16)), 255, -1, cv2.LINE_AA, shift=4)
    return _crop(canvas)


def _stencil(mask):
    """Stencil bridges: two thin horizontal gaps through the strokes at 38% and 62% of the height."""
    out = mask.copy()
    h = out.shape[0]
    gap = max(2, round(0.05 * h))
    for f in (0.38, 0.62):
        y = round(f * h)
        out[y : y + gap] = 0
    return _crop(out) if out.any() else mask
