"""
Render one synthetic house-number photo into a given box layout: a textured wall, an optional
plate, the digits (one font, weight and colour per number, slight rotation and shear), unlabelled
clutter, then camera effects (down-scaling from 1.25-3x, blur, noise, colour cast, JPEG).
"""

from collections import namedtuple

import cv2
import numpy as np

from .glyphs import WEIGHTS
from .textures import (
    contrasting_colour,
    linear_ramp,
    painted_wall,
    random_background,
    random_colour,
)

# image: HxWx3 uint8 RGB; boxes: (k, 4) int XYWH tight around each digit's ink; digits: (k,) 0..9;
# masks: (k, H, W) float32 ink coverage of each digit in the final image.
Sample = namedtuple("Sample", ["image", "boxes", "digits", "masks"])

INK_THRESHOLD = 0.5  # a pixel is ink when the digit covers at least this fraction of it
RENDER_HEIGHT = 120  # px: images are drawn about this tall (1.25x..3x) and resized down
MAX_RENDER_SIDE = 1600


def render_sample(rng, layout, glyphs):
    """Draw ``layout`` (``synthetic_layout.Layout``) with ``glyphs`` (a GlyphBank); returns a Sample."""
    W, H = layout.width, layout.height
    s = min(float(np.clip(RENDER_HEIGHT / H, 1.25, 3.0)), MAX_RENDER_SIDE / max(W, H))
    cw, ch = max(int(round(W * s)), 1), max(int(round(H * s)), 1)
    boxes = layout.boxes * np.array([cw / W, ch / H, cw / W, ch / H])

    digits = rng.integers(0, 10, size=len(boxes))
    font = glyphs.masks[int(rng.integers(len(glyphs.masks)))]
    weight = int(rng.choice(len(WEIGHTS), p=(0.55, 0.3, 0.15)))
    sources = [font[d][weight] for d in digits]
    rects = _place_glyphs(rng, boxes, sources)
    unit = float(np.median(rects[:, 3]))
    affine = _camera_affine(rng, rects, cw, ch)
    extent = _extent(_rect_corners(rects), affine)

    image = random_background(rng, ch, cw, random_colour(rng), unit)
    if rng.random() < 0.3:
        image = _add_second_surface(rng, image, extent, unit)
    if rng.random() < 0.25:
        _draw_lines(rng, image, unit)
    plate = rng.random() < 0.45
    if plate:
        pad_x, pad_y = unit * rng.uniform(0.15, 0.7), unit * rng.uniform(0.12, 0.45)
        radius = unit * rng.uniform(0, 0.4)
        plate_colour = random_colour(rng)
        image = _draw_plate(rng, image, _rounded_rect(rects, pad_x, pad_y, radius), affine, plate_colour, unit)
        if pad_x > 0.35 * unit and rng.random() < 0.3:
            _draw_screws(rng, image, rects, pad_x, affine, unit)
    ink = contrasting_colour(rng, plate_colour if plate else _mean_colour(image, extent), rng.uniform(60, 120))
    if plate and pad_y > 0.2 * unit and rng.random() < 0.5:  # a border line inside the plate's edge
        f = rng.uniform(0.45, 0.7)
        border = _rounded_rect(rects, pad_x * f, pad_y * f, radius * f)
        image = _draw_outline(image, border, affine, ink, max(1, int(unit * rng.uniform(0.03, 0.06))))

    masks = [np.zeros((ch, cw), np.uint8) for _ in sources]
    for src, rect, mask in zip(sources, rects, masks):
        _warp_into(src, affine @ _rect_matrix(src, rect), mask)
    clutter = np.zeros((ch, cw), np.uint8)
    if rng.random() < 0.3:
        _draw_cut_digit(rng, font, weight, rects, extent, clutter, cw)
    fill = _union(masks + [clutter])
    if rng.random() < 0.1:  # an outline in another colour around the strokes
        radius = max(1, int(round(unit * rng.uniform(0.04, 0.08))))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
        image = _paint(image, cv2.dilate(fill, kernel), contrasting_colour(rng, ink, min_contrast=80))
        masks = [cv2.dilate(m, kernel) for m in masks]  # the outline is part of the digit's ink
    image = _paint_digits(rng, image, fill, ink, unit)
    image = _lighting(rng, image, unit)

    image = cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA)
    final_masks = (
        np.stack([cv2.resize(m, (W, H), interpolation=cv2.INTER_AREA) for m in masks]).astype(np.float32) / 255
    )
    image = _camera_effects(rng, image)
    return Sample(image, np.array([_ink_box(m) for m in final_masks]).reshape(-1, 4), digits, final_masks)


def _ink_box(mask):
    """Tight integer XYWH box of a digit's ink: pixels covered >= INK_THRESHOLD (or half the peak)."""
    peak = float(mask.max())
    if peak <= 0:
        raise RuntimeError("a digit was drawn outside the image")
    ys, xs = np.nonzero(mask >= min(INK_THRESHOLD, peak / 2))
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _place_glyphs(rng, boxes, sources):
    """
    Glyph rectangles (XYWH, canvas px): each box's height and row, each glyph's own aspect ratio
    condensed so the number spans about the layout's width; side-by-side boxes keep their gaps.
    """
    x, y, w, h = boxes.T
    natural = h * np.array([src.shape[1] / src.shape[0] for src in sources])
    condense = np.clip(w.sum() / natural.sum(), 0.7, 1.3) * rng.uniform(0.92, 1.08)
    new_w = natural * condense
    new_x = x + (w - new_w) / 2
    order = np.argsort(x + w / 2, kind="stable")
    runs = [[order[0]]]
    for a, b in zip(order[:-1], order[1:]):
        overlap = min(y[a] + h[a], y[b] + h[b]) - max(y[a], y[b])
        if overlap >= 0.3 * min(h[a], h[b]):
            runs[-1].append(b)
        else:
            runs.append([b])
    for run in runs:
        hmin, hmax = h[run].min(), h[run].max()
        gaps = [np.clip(x[b] - x[a] - w[a], 0.08 * hmin, 0.8 * hmax) for a, b in zip(run[:-1], run[1:])]
        centre = (x[run[0]] + x[run[-1]] + w[run[-1]]) / 2
        pos = centre - (new_w[run].sum() + sum(gaps)) / 2
        for j, i in enumerate(run):
            new_x[i] = pos
            pos += new_w[i] + (gaps[j] if j < len(gaps) else 0)
    return np.stack([new_x, y, new_w, h], axis=1)


def _rect_corners(rects):
    x, y, w, h = rects.T
    return np.concatenate([np.stack([x + dx * w, y + dy * h], 1) for dx in (0, 1) for dy in (0, 1)])


def _extent(points, affine):
    pts = points @ affine[:, :2].T + affine[:, 2]
    return np.concatenate([pts.min(0), pts.max(0)])  # x0, y0, x1, y1


def _camera_affine(rng, rects, cw, ch):
    """2x3 affine of the slight rotation and shear of the number, shrunk and shifted to lie inside the image."""
    theta = np.deg2rad(np.clip(rng.normal(0, 3), -8, 8))
    shear = np.clip(rng.normal(0, 0.08), -0.25, 0.25)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    linear = rot @ np.array([[1, shear], [0, 1]])
    corners = _rect_corners(rects)
    centre = (corners.min(0) + corners.max(0)) / 2
    affine = np.concatenate([linear, (centre - linear @ centre)[:, None]], axis=1)
    x0, y0, x1, y1 = _extent(corners, affine)
    fit = min(1.0, (cw - 1) / (x1 - x0), (ch - 1) / (y1 - y0))
    if fit < 1:
        affine[:, :2] *= fit
        affine[:, 2] = centre - affine[:, :2] @ centre
        x0, y0, x1, y1 = _extent(corners, affine)
    affine[0, 2] += max(0.5 - x0, 0) - max(x1 - (cw - 0.5), 0)
    affine[1, 2] += max(0.5 - y0, 0) - max(y1 - (ch - 0.5), 0)
    return affine


def _rect_matrix(src, rect):
    """3x3 map from glyph-mask pixels to the rectangle ``rect`` (XYWH)."""
    gh, gw = src.shape
    x, y, w, h = rect
    return np.array([[w / gw, 0, x], [0, h / gh, y], [0, 0, 1]])


def _warp_into(src, matrix, canvas):
    """Warp uint8 mask ``src`` by 2x3 ``matrix`` and max it into ``canvas``, touching only the covered region."""
    gh, gw = src.shape
    zoom = min(matrix[0, 0] ** 2 + matrix[1, 0] ** 2, matrix[0, 1] ** 2 + matrix[1, 1] ** 2) ** 0.5
    if zoom < 0.7:  # pre-shrink with area averaging so thin strokes do not alias
        size = (max(int(round(gw * zoom)), 1), max(int(round(gh * zoom)), 1))
        small = cv2.resize(src, size, interpolation=cv2.INTER_AREA)
        matrix = matrix @ np.diag([gw / size[0], gh / size[1], 1])
        src, (gh, gw) = small, small.shape
    corners = np.array([[0, 0], [gw, 0], [0, gh], [gw, gh]], dtype=np.float64)
    x0, y0, x1, y1 = _extent(corners, matrix[:2])
    ch, cw = canvas.shape
    x0, y0 = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
    x1, y1 = min(int(np.ceil(x1)) + 1, cw), min(int(np.ceil(y1)) + 1, ch)
    if x1 <= x0 or y1 <= y0:
        return
    m = matrix[:2].copy()
    m[:, 2] -= (x0, y0)
    roi = cv2.warpAffine(src, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderValue=0)
    np.maximum(canvas[y0:y1, x0:x1], roi, out=canvas[y0:y1, x0:x1])


def _union(masks):
    out = masks[0].copy()
    for m in masks[1:]:
        np.maximum(out, m, out=out)
    return out


def _paint(image, mask, colour):
    alpha = mask.astype(np.float32)[..., None] / 255
    return image * (1 - alpha) + colour * alpha


def _mean_colour(image, extent):
    ch, cw = image.shape[:2]
    x0, y0 = max(int(extent[0]), 0), max(int(extent[1]), 0)
    x1, y1 = min(int(np.ceil(extent[2])), cw), min(int(np.ceil(extent[3])), ch)
    return image[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)].reshape(-1, 3).mean(0)


def _add_second_surface(rng, image, extent, unit):
    """Another surface (door frame, window, wall edge) beyond a straight edge that misses the digits."""
    ch, cw = image.shape[:2]
    side = int(rng.integers(4))
    limit = (extent[0], extent[1], cw - extent[2], ch - extent[3])[side]
    if limit < 2:
        return image
    where = rng.uniform(0.2, 0.9) * limit
    coords = np.arange(cw if side in (0, 2) else ch, dtype=np.float32)
    if side in (2, 3):
        coords = coords[::-1]
    edge = np.clip(where - coords + 0.5, 0, 1)
    alpha = edge[None, :, None] if side in (0, 2) else edge[:, None, None]
    other = random_background(rng, ch, cw, random_colour(rng), unit)
    return image * (1 - alpha) + other * alpha


def _draw_lines(rng, image, unit):
    ch, cw = image.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        p0 = (int(rng.uniform(-cw, 2 * cw)), int(rng.uniform(0, ch)))
        p1 = (int(rng.uniform(-cw, 2 * cw)), int(rng.uniform(0, ch)))
        thickness = max(1, int(unit * rng.uniform(0.02, 0.1)))
        cv2.line(image, p0, p1, random_colour(rng).tolist(), thickness)


def _rounded_rect(rects, pad_x, pad_y, radius):
    """Polygon (N, 2) of a rounded rectangle around ``rects`` padded by ``pad_x``/``pad_y``."""
    x0, y0 = rects[:, 0].min() - pad_x, rects[:, 1].min() - pad_y
    x1, y1 = (rects[:, 0] + rects[:, 2]).max() + pad_x, (rects[:, 1] + rects[:, 3]).max() + pad_y
    radius = min(radius, (x1 - x0) / 2, (y1 - y0) / 2)
    points = []
    for cx, cy, start in (
        (x1 - radius, y0 + radius, -90),
        (x1 - radius, y1 - radius, 0),
        (x0 + radius, y1 - radius, 90),
        (x0 + radius, y0 + radius, 180),
    ):
        angles = np.deg2rad(start + np.linspace(0, 90, 7))
        points.append(np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1))
    return np.concatenate(points)


def _polygon_mask(shape, polygon, affine):
    pts = polygon @ affine[:, :2].T + affine[:, 2]
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return mask


def _draw_plate(rng, image, polygon, affine, colour, unit):
    """A plate ``polygon`` (canvas px, before ``affine``) behind the digits, sometimes casting a soft shadow."""
    mask = _polygon_mask(image.shape[:2], polygon, affine)
    if rng.random() < 0.4:
        shift = np.float32([[1, 0, unit * rng.uniform(-0.1, 0.1)], [0, 1, unit * rng.uniform(0.03, 0.12)]])
        shadow = cv2.warpAffine(mask, shift, mask.shape[::-1])
        shadow = cv2.GaussianBlur(shadow, (0, 0), unit * 0.05 + 0.5).astype(np.float32) / 255
        image = image * (1 - rng.uniform(0.3, 0.6) * shadow[..., None])
    alpha = mask.astype(np.float32)[..., None] / 255
    return image * (1 - alpha) + painted_wall(rng, *image.shape[:2], colour, unit) * alpha


def _draw_screws(rng, image, rects, pad_x, affine, unit):
    """Two mounting screws at the ends of a plate."""
    cy = float((rects[:, 1] + rects[:, 3] / 2).mean())
    r = max(1, int(unit * rng.uniform(0.04, 0.08)))
    colour = random_colour(rng, "light").tolist()
    for cx in (rects[:, 0].min() - pad_x / 2, (rects[:, 0] + rects[:, 2]).max() + pad_x / 2):
        x, y = affine @ (cx, cy, 1)
        cv2.circle(image, (int(x), int(y)), r, colour, -1)


def _draw_outline(image, polygon, affine, colour, thickness):
    """The closed line ``polygon`` (canvas px, before ``affine``) in ``colour``."""
    pts = polygon @ affine[:, :2].T + affine[:, 2]
    ring = np.zeros(image.shape[:2], np.uint8)
    cv2.polylines(ring, [np.round(pts * 16).astype(np.int32)], True, 255, thickness, cv2.LINE_AA, shift=4)
    return _paint(image, ring, colour)


def _draw_cut_digit(rng, font, weight, rects, extent, canvas, cw):
    """An unlabelled neighbour digit cut by the left or right image edge, clear of the number."""
    src = font[int(rng.integers(10))][weight]
    i = int(rng.integers(len(rects)))
    h = rects[i, 3] * rng.uniform(0.9, 1.1)
    w = h * src.shape[1] / src.shape[0]
    visible = w * rng.uniform(0.15, 0.45)
    gap = 0.15 * h
    if rng.random() < 0.5:
        if extent[0] < visible + gap:
            return
        x = visible - w
    else:
        if cw - extent[2] < visible + gap:
            return
        x = cw - visible
    _warp_into(src, _rect_matrix(src, (x, rects[i, 1], w, h))[:2], canvas)


def _paint_digits(rng, image, mask, ink, unit):
    """Digits in ``ink``, sometimes with a metallic vertical gradient and an offset drop shadow."""
    if rng.random() < 0.3:
        shift = unit * rng.uniform(0.03, 0.1) * np.array([rng.choice((-1, 1)) * rng.random(), 1])
        m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
        shadow = cv2.GaussianBlur(cv2.warpAffine(mask, m, mask.shape[::-1]), (0, 0), 0.5 + unit * 0.02)
        image = image * (1 - rng.uniform(0.3, 0.7) * shadow.astype(np.float32)[..., None] / 255)
    colour = np.broadcast_to(ink, image.shape)
    if rng.random() < 0.3:
        ch = image.shape[0]
        ramp = 1 + rng.uniform(-0.35, 0.35) * (np.arange(ch, dtype=np.float32) - ch / 2) / unit
        colour = ink * np.clip(ramp, 0.5, 1.5)[:, None, None]
    alpha = mask.astype(np.float32)[..., None] / 255
    return image * (1 - alpha) + colour * alpha


def _lighting(rng, image, unit):
    """A brightness gradient across the image and sometimes a soft cast shadow."""
    ch, cw = image.shape[:2]
    t = linear_ramp(ch, cw, rng.uniform(0, 2 * np.pi))
    light = 1 + rng.uniform(0, 0.5) * (t - t[ch // 2, cw // 2]) / max(ch, cw)
    if rng.random() < 0.2:
        t = linear_ramp(ch, cw, rng.uniform(0, 2 * np.pi))
        lo, hi = float(t.min()), float(t.max())
        edge = (t - rng.uniform(lo, hi)) / (unit * rng.uniform(0.05, 0.5)) + 0.5
        light *= 1 - rng.uniform(0.2, 0.5) * np.clip(edge, 0, 1)
    return image * light[..., None]


def _camera_effects(rng, image):
    """Low resolution, blur, haze, colour cast, gamma, sensor noise and JPEG; returns uint8."""
    H, W = image.shape[:2]
    if rng.random() < 0.3:
        f = rng.uniform(1.3, 2.2)
        small = cv2.resize(image, (max(int(W / f), 1), max(int(H / f), 1)), interpolation=cv2.INTER_AREA)
        image = cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.1))
    elif rng.random() < 0.2:
        length = int(rng.integers(3, 6))
        kernel = np.zeros((length, length), np.float32)
        cv2.line(kernel, (0, length // 2), (length - 1, length // 2), 1.0, 1)
        rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
        image = cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < 0.3:
        haze = rng.uniform(0.05, 0.3)
        image = image * (1 - haze) + haze * image.reshape(-1, 3).mean(0)
    image = image * rng.normal(1, 0.06, 3).astype(np.float32)
    if rng.random() < 0.5:
        image = 255 * (np.clip(image, 0, 255) / 255) ** rng.uniform(0.7, 1.4)
    image = image + rng.normal(0, rng.uniform(0, 5), image.shape).astype(np.float32)
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        quality = int(rng.integers(30, 91))
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return image
