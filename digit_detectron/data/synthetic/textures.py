"""
Backgrounds and colours for synthetic house numbers: procedural painted walls, siding, bricks, wood,
tiles, stucco, foliage, out-of-focus scenery, walls cluttered with shapes, and crops of real photos
(the sample images that scikit-image ships). Images are float32 HxWx3 RGB in 0..255. Colours come
from a ``ColourScheme`` (a part of the palette and a range of hues), so that the style split
(``styles``) can keep colour schemes apart; a photo lends its grey-level structure and takes the
scheme's colour.
"""

import colorsys
import functools
import importlib.util
import os

import cv2
import numpy as np
from PIL import Image

# Colours seen on house-number walls, plates and digits (RGB 0..1), drawn with jitter.
PALETTE = {
    "white": (0.95, 0.95, 0.93),
    "cream": (0.90, 0.85, 0.72),
    "beige": (0.78, 0.72, 0.60),
    "grey": (0.55, 0.55, 0.55),
    "black": (0.08, 0.08, 0.08),
    "brass": (0.72, 0.58, 0.30),
    "aluminium": (0.75, 0.75, 0.78),
    "brick red": (0.55, 0.25, 0.18),
    "wood brown": (0.40, 0.26, 0.15),
    "plate blue": (0.10, 0.25, 0.55),
    "dark green": (0.10, 0.35, 0.20),
    "red": (0.65, 0.12, 0.12),
    "navy": (0.06, 0.09, 0.30),
    "ivory": (0.98, 0.96, 0.86),
}


def luminance(rgb):
    return float(np.dot(rgb, (0.299, 0.587, 0.114)))


class ColourScheme:
    """Colours of one style: jittered entries of ``palette`` (PALETTE names) or HSV colours with hues in ``hues``."""

    def __init__(self, palette=tuple(PALETTE), hues=(0.0, 1.0)):
        unknown = sorted(set(palette) - set(PALETTE))
        if unknown:
            raise ValueError(f"unknown palette colours {unknown}")
        self.palette = np.array([PALETTE[n] for n in palette])
        self.hues = hues

    def random(self, rng, lightness=None):
        """An RGB 0..255 colour; ``lightness`` "dark" / "light" restricts it."""
        for _ in range(20):
            if rng.random() < 0.5:
                rgb = np.clip(self.palette[rng.integers(len(self.palette))] + rng.normal(0, 0.05, 3), 0, 1)
            else:
                hue = rng.uniform(*self.hues)
                rgb = np.array(colorsys.hsv_to_rgb(hue, rng.beta(1.0, 3.0), rng.uniform(0.03, 1.0)))
            lum = luminance(rgb)
            if lightness is None or (lightness == "dark" and lum < 0.4) or (lightness == "light" and lum > 0.55):
                break
        else:
            rgb = np.full(3, 0.1 if lightness == "dark" else 0.9)
        return (rgb * 255).astype(np.float32)

    def contrasting(self, rng, background, min_contrast=70.0):
        """A colour whose luminance differs from ``background`` (RGB 0..255) by at least ``min_contrast``."""
        bg_lum = luminance(background)
        prefer = "dark" if bg_lum > 128 else "light"
        for _ in range(20):
            lightness = prefer if rng.random() < 0.9 else None
            colour = self.random(rng, lightness)
            if abs(luminance(colour) - bg_lum) >= min_contrast:
                return colour
        return np.full(3, 20.0 if bg_lum > 128 else 235.0, np.float32)


def value_noise(rng, h, w, cell):
    """Smooth noise, ~N(0, 1), with features ``cell`` px apart."""
    cell = max(cell, 1.0)
    grid = rng.standard_normal((int(h / cell) + 2, int(w / cell) + 2)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def fractal_noise(rng, h, w, cell, octaves=3):
    out = np.zeros((h, w), np.float32)
    for o in range(octaves):
        out += value_noise(rng, h, w, cell / 2**o) / 2**o
    return out


def _tint(shade, colour):
    """Colour ``colour`` modulated by a 2-D ``shade`` map around 1."""
    return shade[..., None] * colour[None, None, :]


def painted_wall(rng, h, w, colour, unit, scheme):
    shade = 1 + rng.uniform(0.02, 0.12) * fractal_noise(rng, h, w, unit * rng.uniform(0.5, 3))
    return _tint(shade, colour)


def siding(rng, h, w, colour, unit, scheme):
    """Clapboard: boards with a shading ramp and a dark lap line, horizontal or vertical."""
    vertical = rng.random() < 0.25
    length, across = (w, h) if not vertical else (h, w)
    period = unit * rng.uniform(0.35, 1.0)
    t = (np.arange(across, dtype=np.float32) + rng.uniform(0, period)) / period
    phase = t - np.floor(t)
    ramp = 1 + rng.uniform(0.05, 0.2) * (0.5 - phase) - rng.uniform(0.2, 0.5) * (phase > 0.93)
    shade = np.repeat(ramp[:, None], length, axis=1)
    shade = shade if not vertical else shade.T
    shade = shade + 0.04 * fractal_noise(rng, h, w, unit)
    return _tint(np.ascontiguousarray(shade), colour)


def bricks(rng, h, w, colour, unit, scheme):
    bh = unit * rng.uniform(0.25, 0.55)
    bw = bh * rng.uniform(2.0, 3.2)
    mortar = max(1.0, bh * rng.uniform(0.06, 0.15))
    ys = np.arange(h, dtype=np.float32)[:, None] + np.float32(rng.uniform(0, bh))
    row = np.floor(ys / bh).astype(np.int64)
    xs = np.arange(w, dtype=np.float32)[None, :] + (row % 2) * np.float32(bw / 2) + np.float32(rng.uniform(0, bw))
    col = np.floor(xs / bw).astype(np.int64)
    jitter = rng.normal(1, 0.09, size=(row.max() + 1, col.max() + 1)).astype(np.float32)
    shade = jitter[row, col] + 0.06 * fractal_noise(rng, h, w, bh / 2)
    out = _tint(shade, colour)
    joint = ((ys - row * bh) < mortar) | ((xs - col * bw) < mortar)
    out[joint] = scheme.random(rng, "light") * rng.uniform(0.6, 1.0)
    return out


def wood(rng, h, w, colour, unit, scheme):
    along = linear_ramp(h, w, 0.0 if rng.random() < 0.5 else np.pi / 2)
    warp = rng.uniform(0.3, 1.5) * fractal_noise(rng, h, w, unit * 2)
    grain = np.sin(2 * np.pi * (along / (unit * rng.uniform(0.05, 0.2)) + warp))
    shade = 1 + rng.uniform(0.05, 0.18) * grain + 0.05 * fractal_noise(rng, h, w, unit)
    return _tint(shade, colour)


def scenery(rng, h, w, colour, unit, scheme):
    """Out-of-focus photo: a two-colour gradient with soft blobs of other colours (drawn at 1/4 size)."""
    sh, sw, unit = max(h // 4, 1), max(w // 4, 1), unit / 4
    t = linear_ramp(sh, sw, rng.uniform(0, 2 * np.pi))
    t = ((t - t.min()) / max(float(np.ptp(t)), 1e-6))[..., None]
    out = colour * (1 - t) + scheme.random(rng) * t
    for _ in range(int(rng.integers(2, 8))):
        blob = np.zeros((sh, sw), np.float32)
        centre = (int(rng.uniform(0, sw)), int(rng.uniform(0, sh)))
        axes = (int(unit * rng.uniform(0.3, 2)) + 1, int(unit * rng.uniform(0.3, 2)) + 1)
        cv2.ellipse(blob, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), unit * rng.uniform(0.1, 0.5) + 0.5)[..., None] * rng.uniform(0.4, 1)
        out = out * (1 - blob) + scheme.random(rng) * blob
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)


def linear_ramp(h, w, angle):
    """HxW float32 distance along direction ``angle`` (radians) from the top-left corner."""
    x = np.arange(w, dtype=np.float32) * np.float32(np.cos(angle))
    y = np.arange(h, dtype=np.float32) * np.float32(np.sin(angle))
    return y[:, None] + x[None, :]


def tiles(rng, h, w, colour, unit, scheme):
    """Square tiles with grout lines and a per-tile shade; sometimes two alternating colours."""
    size = unit * rng.uniform(0.4, 1.2)
    grout = max(1.0, size * rng.uniform(0.04, 0.1))
    ys = np.arange(h, dtype=np.float32)[:, None] + np.float32(rng.uniform(0, size))
    xs = np.arange(w, dtype=np.float32)[None, :] + np.float32(rng.uniform(0, size))
    row, col = np.floor(ys / size).astype(np.int64), np.floor(xs / size).astype(np.int64)
    jitter = rng.normal(1, 0.05, size=(row.max() + 1, col.max() + 1)).astype(np.float32)
    out = _tint(jitter[row, col] + 0.03 * fractal_noise(rng, h, w, size), colour)
    if rng.random() < 0.3:
        other = scheme.random(rng)
        checker = ((row + col) % 2 == 1) & np.ones((h, w), bool)
        out[checker] = (out[checker] / np.maximum(colour, 1)) * other
    joint = ((ys - row * size) < grout) | ((xs - col * size) < grout)
    out[joint & np.ones((h, w), bool)] = scheme.random(rng) * rng.uniform(0.5, 1.0)
    return out


def stucco(rng, h, w, colour, unit, scheme):
    """Rough render: fine speckle and pits over a slowly varying shade."""
    fine = value_noise(rng, h, w, max(unit * 0.03, 1.0))
    pits = (value_noise(rng, h, w, max(unit * 0.06, 1.0)) > rng.uniform(1.2, 1.8)).astype(np.float32)
    shade = 1 + 0.08 * fine - rng.uniform(0.1, 0.3) * pits + 0.05 * fractal_noise(rng, h, w, unit * 2)
    return _tint(shade, colour)


def foliage(rng, h, w, colour, unit, scheme):
    """Leaves and shade in front of a wall: dark and light blobs of green-brown hues over ``colour``."""
    out = _tint(1 + 0.05 * fractal_noise(rng, h, w, unit), colour)
    leaf = fractal_noise(rng, h, w, unit * rng.uniform(0.15, 0.4))
    cover = np.clip((leaf - rng.uniform(0.3, 1.0)) * 3, 0, 1)[..., None] * rng.uniform(0.5, 1.0)
    green = np.array(colorsys.hsv_to_rgb(rng.uniform(0.15, 0.4), rng.uniform(0.3, 0.8), rng.uniform(0.15, 0.6)))
    greens = _tint(1 + 0.3 * leaf, (green * 255).astype(np.float32))
    return out * (1 - cover) + greens * cover


def clutter(rng, h, w, colour, unit, scheme):
    """
    A busy wall: a painted wall under random circles, rings, ellipses, arcs, bars, lines and polygons
    in the scheme's colours, some out of focus: shapes that are not digits, at digit scale and below.
    """
    out = np.ascontiguousarray(painted_wall(rng, h, w, colour, unit, scheme), dtype=np.float32)
    count = int(min(60, rng.integers(4, 12) * max(1.0, h * w / (6 * unit * unit))))
    for _ in range(count):
        c = tuple(float(v) for v in scheme.random(rng))
        x, y = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        size = max(2, int(unit * rng.uniform(0.1, 1.2)))
        thick = -1 if rng.random() < 0.4 else max(1, int(unit * rng.uniform(0.03, 0.15)))
        kind = int(rng.integers(5))
        if kind == 0:
            cv2.circle(out, (x, y), size // 2 + 1, c, thick, cv2.LINE_AA)
        elif kind == 1:
            axes = (size // 2 + 1, max(1, int(size * rng.uniform(0.2, 0.8))))
            start = rng.uniform(0, 360)
            end = start + (360 if rng.random() < 0.5 else rng.uniform(60, 300))
            cv2.ellipse(out, (x, y), axes, rng.uniform(0, 180), start, end, c, thick, cv2.LINE_AA)
        elif kind == 2:
            angle = rng.uniform(0, np.pi)
            dx, dy = int(size * np.cos(angle)), int(size * np.sin(angle))
            cv2.line(out, (x - dx, y - dy), (x + dx, y + dy), c, max(1, thick), cv2.LINE_AA)
        elif kind == 3:
            cv2.rectangle(out, (x, y), (x + size, y + int(size * rng.uniform(0.2, 1.5))), c, thick, cv2.LINE_AA)
        else:
            points = np.stack([x + rng.normal(0, size / 2, 5), y + rng.normal(0, size / 2, 5)], 1).astype(np.int32)
            if thick < 0:
                cv2.fillPoly(out, [points], c, cv2.LINE_AA)
            else:
                cv2.polylines(out, [points], bool(rng.random() < 0.5), c, thick, cv2.LINE_AA)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), max(0.5, unit * rng.uniform(0.02, 0.15)))
    return out


TEXTURES = {
    "painted_wall": painted_wall,
    "siding": siding,
    "bricks": bricks,
    "wood": wood,
    "scenery": scenery,
    "tiles": tiles,
    "stucco": stucco,
    "foliage": foliage,
    "clutter": clutter,
}
# Relative frequency of each texture among those a style allows.
TEXTURE_WEIGHT = {
    "painted_wall": 0.35,
    "siding": 0.2,
    "bricks": 0.15,
    "wood": 0.2,
    "scenery": 0.2,
    "tiles": 0.2,
    "stucco": 0.3,
    "foliage": 0.2,
    "photo": 0.35,
    "clutter": 0.3,
}


# Real photos among the sample images of scikit-image (``skimage/data``: public domain or CC0, see its
# README), by name -> file. Left out: images with text or digits (text, page, clock_motion), drawings
# and charts (logo, horse, color), and near-empty ones (cell, microaneurysms, chessboards).
PHOTOS = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "ihc": "ihc.png",
    "moon": "moon.png",
    "motorcycle": "motorcycle_left.png",  # the stereo pair's other view (motorcycle_right) is the same scene
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
}


def photo_dir():
    """scikit-image's sample-image folder (read as files: skimage itself is not imported)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-image is not installed: the photo backgrounds read its sample images")
    return os.path.join(spec.submodule_search_locations[0], "data")


@functools.cache
def load_photo(name):
    """Photo ``name`` (PHOTOS) as float32 grey levels of mean 0 and standard deviation 1."""
    path = os.path.join(photo_dir(), PHOTOS[name])
    with Image.open(path) as im:
        grey = np.asarray(im.convert("L"), dtype=np.float32)
    return (grey - grey.mean()) / max(float(grey.std()), 1e-6)


def photo(rng, h, w, colour, photos, contrast=(0.1, 0.4)):
    """
    A crop of one of ``photos`` (PHOTOS names) at a random zoom, sometimes mirrored: its grey-level
    structure at a random contrast from ``contrast`` (the shade's standard deviation around 1), tinted
    with ``colour`` (so the style's colour scheme still rules).
    """
    grey = load_photo(photos[int(rng.integers(len(photos)))])
    ph, pw = grey.shape
    zoom = min(rng.uniform(0.5, 3.0), pw / w, ph / h)  # photo px per background px
    cw, ch = max(int(w * zoom), 1), max(int(h * zoom), 1)
    x0, y0 = int(rng.integers(pw - cw + 1)), int(rng.integers(ph - ch + 1))
    crop = grey[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = cv2.resize(
        np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_AREA if zoom > 1 else cv2.INTER_LINEAR
    )
    shade = np.clip(1 + rng.uniform(*contrast) * crop, 0.1, 2.5)
    return _tint(shade, colour)


def random_background(rng, h, w, colour, unit, scheme, textures=tuple(TEXTURES), photos=(), photo_contrast=(0.1, 0.4)):
    """
    A textured HxWx3 background around ``colour`` from ``textures`` (TEXTURES names, and "photo" for
    a crop of one of ``photos`` at ``photo_contrast``); ``unit`` (px) is the typical digit height.
    """
    weights = np.array([TEXTURE_WEIGHT[t] for t in textures])
    name = textures[rng.choice(len(textures), p=weights / weights.sum())]
    if name == "photo":
        if not photos:
            raise ValueError('texture "photo" needs photos to draw from')
        return photo(rng, h, w, colour, photos, photo_contrast).astype(np.float32)
    return TEXTURES[name](rng, h, w, colour, unit, scheme).astype(np.float32)
