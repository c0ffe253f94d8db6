"""
Render one synthetic house-number photo into a given box layout, in a ``styles.Style``: a textured
wall (procedural, or a tinted crop of a real photo), an optional plate, the digits (one glyph source,
weight and colour per number, slight rotation and shear, sometimes slanted, sometimes an outline, drop
shadow or 3-D extrusion), unlabelled clutter (cut-off digits at the image edge, letters), then camera
effects (down-scaling from 1.25-3x, the style's blur, noise, colour cast, JPEG).

Boxes follow the SVHN annotators: a digit's box is its layout box (moved with the plate's rotation
and shear), and its ink fills the box's height with the glyph's own aspect ratio, so a thin "1" sits in a
box wider than its ink; the box always holds all of the ink.
"""

from collections import namedtuple

import cv2
import numpy as np

from .glyphs import WEIGHT_P, WEIGHTS
from .textures import ColourScheme, linear_ramp, painted_wall, random_background

# image: HxWx3 uint8 RGB; boxes: (k, 4) int XYWH, each holding its digit's ink; digits: (k,) 0..9;
# masks: (k, H, W) float32 ink coverage of each digit in the final image; source: the glyph source's
# name (``glyphs``), which the dataset json records per image.
Sample = namedtuple("Sample", ["image", "boxes", "digits", "masks", "source"])

INK_THRESHOLD = 0.5  # a pixel is ink when the digit covers at least this fraction of it
RENDER_HEIGHT = 120  # px: images are drawn about this tall (1.25x..3x) and resized down
MAX_RENDER_SIDE = 1600
# Letters drawn as clutter: none that reads like a digit (O 0, I 1, S 5, B 8, Z 2, G 6, Q 0, D 0).
CLUTTER_LETTERS = "ACEFHJKLMNPRTUVWXY"
# Synthetic italics (``styles.Style.glyph_slant_prob``): the rows of every glyph of a number shift
# right by this share of their height above the baseline (a negative share: a back slant).
GLYPH_SLANT = (-0.1, 0.3)
PLAIN_ONE_P = 0.5  # how often a "1" is drawn as a plain shape: a bar, with a flag, with a flag and a base
PLAIN_ONE_SHAPE_P = (0.5, 0.3, 0.2)
# ``ink_contrast``: the wall around a digit is its box widened by this share of its height on every side.
CONTRAST_RING = 0.3
CONTRAST_NOISE_FLOOR = 4.0  # grey levels added to the wall's spread, so a flat wall does not divide by 0
_SCHEMES = {}


def ink_contrast(image_rgb, boxes, masks):
    """
    How clearly each digit of a rendered sample stands out, in the final image (after blur, noise and
    JPEG): ``|median grey of its ink - median grey of the wall around it| / (the wall's grey-level
    standard deviation + CONTRAST_NOISE_FLOOR)``. The ink is where the digit's mask is at least
    INK_THRESHOLD, the wall the pixels of its box widened by CONTRAST_RING of its height that no digit
    covers (mask < 0.05): a digit on a busy texture scores low even when its colour differs. Under 1 the
    ink differs from the wall by less than the wall varies (hard for a person to read too); a plain
    high-contrast digit scores 10 or more. A digit with no ink pixel left scores 0. ``boxes``: XYWH;
    ``masks``: (k, H, W) floats (``Sample.masks``). Returns a list of k floats.
    """
    grey = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    H, W = grey.shape
    covered = masks.max(axis=0) if len(masks) else np.zeros((H, W), np.float32)
    out = []
    for (x, y, w, h), mask in zip(np.asarray(boxes, float).reshape(-1, 4), masks):
        pad = CONTRAST_RING * h
        x1, y1 = int(max(0, np.floor(x - pad))), int(max(0, np.floor(y - pad)))
        x2, y2 = int(min(W, np.ceil(x + w + pad))), int(min(H, np.ceil(y + h + pad)))
        region = grey[y1:y2, x1:x2]
        ink = mask[y1:y2, x1:x2] >= INK_THRESHOLD
        wall = covered[y1:y2, x1:x2] < 0.05
        if not ink.any() or wall.sum() < 4:
            out.append(0.0)
            continue
        wall_grey = region[wall]
        diff = abs(float(np.median(region[ink])) - float(np.median(wall_grey)))
        out.append(diff / (float(wall_grey.std()) + CONTRAST_NOISE_FLOOR))
    return out


def _scheme(style):
    if style.name not in _SCHEMES:
        _SCHEMES[style.name] = ColourScheme(style.palette, style.hue_range)
    return _SCHEMES[style.name]


def render_sample(rng, layout, glyphs, style, digit_free=False):
    """
    Draw ``layout`` (``layout.Layout``) with ``glyphs`` (a GlyphBank of the style's sources) in ``style``.
    ``digit_free``: the same wall, plate, lines and lighting, but no digit of the number is drawn (a hard
    negative: the layout only places the empty plate); stray strokes, a digit cut by the image edge and
    letters are drawn more often, and the sample has no boxes.
    """
    scheme = _scheme(style)
    W, H = layout.width, layout.height
    s = min(float(np.clip(RENDER_HEIGHT / H, 1.25, 3.0)), MAX_RENDER_SIDE / max(W, H))
    cw, ch = max(int(round(W * s)), 1), max(int(round(H * s)), 1)
    boxes = layout.boxes * np.array([cw / W, ch / H, cw / W, ch / H])

    digits = layout.digits if layout.digits is not None else rng.integers(0, 10, size=len(boxes))
    digits = np.asarray(digits, dtype=np.int64)
    source = int(rng.integers(len(glyphs.masks)))
    font = glyphs.masks[source]
    weight = int(rng.choice(len(WEIGHTS), p=WEIGHT_P))
    ones = glyphs.ones[source]
    # A plain "1" (bar / flag / flag and base) in the font's stroke instead of the font's own, at times.
    sources = [
        ones[int(rng.choice(len(ones), p=PLAIN_ONE_SHAPE_P))][weight]
        if d == 1 and rng.random() < PLAIN_ONE_P
        else font[d][weight]
        for d in digits
    ]
    if style.glyph_slant_prob > 0 and rng.random() < style.glyph_slant_prob:
        sources = slant_glyphs(sources, rng.uniform(*GLYPH_SLANT))
    rects = _place_glyphs(rng, boxes, sources, apart=style.glyphs_apart)
    unit = float(np.median(boxes[:, 3]))
    affine = _camera_affine(rng, boxes, cw, ch)
    extent = _extent(_rect_corners(boxes), affine)

    image = random_background(
        rng, ch, cw, scheme.random(rng), unit, scheme, style.textures, style.photos, style.photo_contrast
    )
    if rng.random() < 0.3:
        image = _add_second_surface(rng, image, extent, unit, scheme, style)
    if rng.random() < 0.25:
        _draw_lines(rng, image, unit, scheme)
    plate = rng.random() < 0.45
    if plate:
        pad_x, pad_y = unit * rng.uniform(0.15, 0.7), unit * rng.uniform(0.12, 0.45)
        radius = unit * rng.uniform(0, 0.4)
        plate_colour = scheme.random(rng)
        image = _draw_plate(rng, image, _rounded_rect(boxes, pad_x, pad_y, radius), affine, plate_colour, unit, scheme)
        if pad_x > 0.35 * unit and rng.random() < 0.3:
            _draw_screws(rng, image, boxes, pad_x, affine, unit, scheme)
    contrast = rng.uniform(60, 120) if rng.random() < 0.9 else rng.uniform(35, 60)  # sometimes low contrast
    ink = scheme.contrasting(rng, plate_colour if plate else _mean_colour(image, extent), contrast)
    if plate and pad_y > 0.2 * unit and rng.random() < 0.5:  # a border line inside the plate's edge
        f = rng.uniform(0.45, 0.7)
        border = _rounded_rect(boxes, pad_x * f, pad_y * f, radius * f)
        image = _draw_outline(image, border, affine, ink, max(1, int(unit * rng.uniform(0.03, 0.06))))

    masks = [np.zeros((ch, cw), np.uint8) for _ in sources]
    for src, rect, mask in zip(sources, rects, masks):
        _warp_into(src, affine @ _rect_matrix(src, rect), mask)
    clutter = np.zeros((ch, cw), np.uint8)
    if rng.random() < 0.3:
        _draw_cut_digit(rng, font, weight, rects, extent, clutter, cw)
    if rng.random() < 0.2:
        _draw_letter(rng, extent, unit, clutter)
    if digit_free:
        masks, digits = [], digits[:0]
        _draw_digit_free_clutter(rng, font, weight, rects, extent, unit, clutter)
    fill = _union(masks + [clutter])
    effect = rng.random()
    if effect < 0.1:  # an outline in another colour around the strokes
        radius = max(1, int(round(unit * rng.uniform(0.04, 0.08))))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
        image = _paint(image, cv2.dilate(fill, kernel), scheme.contrasting(rng, ink, min_contrast=80))
        masks = [cv2.dilate(m, kernel) for m in masks]  # the outline is part of the digit's ink
    elif effect < 0.2:  # 3-D letters: the strokes extruded down and to one side in a darker shade
        masks = _extrude(rng, image, masks, fill, ink, unit)
        fill = _union(masks + [clutter])
    image = _paint_digits(rng, image, fill, ink, unit)
    image = _lighting(rng, image, unit)

    image = cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA)
    final_masks = (
        np.stack([cv2.resize(m, (W, H), interpolation=cv2.INTER_AREA) for m in masks]).astype(np.float32) / 255
        if masks
        else np.zeros((0, H, W), np.float32)
    )
    image = _camera_effects(rng, image, style.blurs)
    labels = [_label_box(box, affine, mask, cw / W, ch / H) for box, mask in zip(boxes, final_masks)]
    return Sample(image, np.array(labels).reshape(-1, 4), digits, final_masks, glyphs.font_names[source])


def slant_glyphs(masks, slant):
    """
    The glyph ``masks`` (uint8 ink coverage) sheared into italics: each row moves right by ``slant``
    times its height above the baseline (negative: a back slant), on a canvas grown to hold all of the
    ink, then cropped to it. New arrays; the GlyphBank's own masks are shared and stay as they are.
    """
    out = []
    for mask in masks:
        h, w = mask.shape
        shift = abs(slant) * (h - 1)
        offset = shift if slant < 0 else 0.0
        matrix = np.float32([[1, -slant, slant * (h - 1) + offset], [0, 1, 0]])
        sheared = cv2.warpAffine(mask, matrix, (int(np.ceil(w + shift)), h), flags=cv2.INTER_LINEAR)
        ys, xs = np.nonzero(sheared)
        out.append(sheared[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] if len(xs) else mask)
    return out


def _label_box(box, affine, mask, sx, sy):
    """
    Integer XYWH box of one digit in the final image: its layout box (the annotator's box, which
    already holds the real photo's slant) moved to where the affine takes its centre, grown to hold
    every ink pixel (``_ink_box``), clipped to the image.
    """
    cx, cy = affine @ (box[0] + box[2] / 2, box[1] + box[3] / 2, 1)
    x0, y0, x1, y1 = cx - box[2] / 2, cy - box[3] / 2, cx + box[2] / 2, cy + box[3] / 2
    H, W = mask.shape
    ix, iy, iw, ih = _ink_box(mask)
    left = max(0, min(int(np.floor(x0 / sx + 0.25)), ix))
    top = max(0, min(int(np.floor(y0 / sy + 0.25)), iy))
    right = min(W, max(int(np.ceil(x1 / sx - 0.25)), ix + iw))
    bottom = min(H, max(int(np.ceil(y1 / sy - 0.25)), iy + ih))
    return [left, top, right - left, bottom - top]


def _ink_box(mask):
    """Tight integer XYWH box of a digit's ink: pixels covered >= INK_THRESHOLD (or half the peak)."""
    peak = float(mask.max())
    if peak <= 0:
        raise RuntimeError("a digit was drawn outside the image")
    ys, xs = np.nonzero(mask >= min(INK_THRESHOLD, peak / 2))
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _place_glyphs(rng, boxes, sources, apart=True):
    """
    Glyph rectangles (XYWH, canvas px) inside the layout boxes, the way SVHN annotators box digits:
    the ink spans 88-100% of its box's height and keeps its glyph's aspect ratio (the whole number
    condensed or expanded by up to 15%), but is never wider than its box; placed near the box centre.
    Where two neighbouring boxes of a row overlap, the glyphs are kept apart (``_keep_apart``) if ``apart``.
    """
    x, y, w, h = boxes.T
    k = len(boxes)
    aspect = np.array([src.shape[1] / src.shape[0] for src in sources])
    gh = h * rng.uniform(0.88, 1.0, size=k)
    gw = np.minimum(gh * aspect * rng.uniform(0.85, 1.15), w)
    gx = x + (w - gw) * rng.uniform(0.35, 0.65, size=k)
    gy = y + (h - gh) * rng.uniform(0.3, 0.7, size=k)
    if apart:
        gx, gw = _keep_apart(boxes, gx, gy, gw, gh)
    return np.stack([gx, gy, gw, gh], axis=1)


# Neighbouring glyphs whose boxes overlap keep a gap of this fraction of the shorter glyph's height, and
# are narrowed to no less than GLYPH_MIN_WIDTH of their width (beyond that they may still touch).
GLYPH_GAP = 0.03
GLYPH_MIN_WIDTH = 0.6


def _keep_apart(boxes, gx, gy, gw, gh):
    """
    Glyph x and width such that two horizontally neighbouring glyphs of a row do not overlap: real
    house-number digits stand side by side even where the annotators' loose boxes overlap (39% of
    the real SVHN train images have two overlapping neighbour boxes, 27% by over a tenth of the
    narrower width), while a glyph drawn as wide as its box would cover its neighbour's ink there.
    Each glyph stays inside its own box; where two boxes overlap, each glyph stays on its side of the
    middle of the overlap (half the gap, GLYPH_GAP of the shorter glyph's height, away from it), moved
    within its box first, then narrowed, but not below GLYPH_MIN_WIDTH of its width: boxes that overlap
    by much may still show touching ink, and such a glyph may then reach past its box's far side (the
    label box grows to hold the ink, ``_label_box``). Neighbours whose rows share less than half of
    the shorter glyph's height (a column) are left as they are.
    """
    x, _, w, _ = boxes.T
    lo, hi = x.astype(np.float64), (x + w).astype(np.float64)  # new arrays: the loop narrows them in place
    order = np.argsort(x + w / 2, kind="stable")
    for i, j in zip(order[:-1], order[1:]):
        shorter = min(gh[i], gh[j])
        rows_overlap = min(gy[i] + gh[i], gy[j] + gh[j]) - max(gy[i], gy[j])
        boxes_overlap = (x[i] + w[i]) - x[j]
        if rows_overlap < 0.5 * shorter or boxes_overlap <= 0:
            continue
        middle, gap = (x[j] + x[i] + w[i]) / 2, GLYPH_GAP * shorter / 2
        hi[i], lo[j] = min(hi[i], middle - gap), max(lo[j], middle + gap)
    narrowest = GLYPH_MIN_WIDTH * gw
    width = np.maximum(np.minimum(gw, hi - lo), narrowest)
    gx = np.clip(gx, lo, np.maximum(lo, hi - width))
    return gx, width


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


def _add_second_surface(rng, image, extent, unit, scheme, style):
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
    other = random_background(
        rng, ch, cw, scheme.random(rng), unit, scheme, style.textures, style.photos, style.photo_contrast
    )
    return image * (1 - alpha) + other * alpha


def _draw_lines(rng, image, unit, scheme):
    ch, cw = image.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        p0 = (int(rng.uniform(-cw, 2 * cw)), int(rng.uniform(0, ch)))
        p1 = (int(rng.uniform(-cw, 2 * cw)), int(rng.uniform(0, ch)))
        thickness = max(1, int(unit * rng.uniform(0.02, 0.1)))
        cv2.line(image, p0, p1, scheme.random(rng).tolist(), thickness)


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


def _draw_plate(rng, image, polygon, affine, colour, unit, scheme):
    """A plate ``polygon`` (canvas px, before ``affine``) behind the digits, sometimes casting a soft shadow."""
    mask = _polygon_mask(image.shape[:2], polygon, affine)
    if rng.random() < 0.4:
        shift = np.float32([[1, 0, unit * rng.uniform(-0.1, 0.1)], [0, 1, unit * rng.uniform(0.03, 0.12)]])
        shadow = cv2.warpAffine(mask, shift, mask.shape[::-1])
        shadow = cv2.GaussianBlur(shadow, (0, 0), unit * 0.05 + 0.5).astype(np.float32) / 255
        image = image * (1 - rng.uniform(0.3, 0.6) * shadow[..., None])
    alpha = mask.astype(np.float32)[..., None] / 255
    return image * (1 - alpha) + painted_wall(rng, *image.shape[:2], colour, unit, scheme) * alpha


def _draw_screws(rng, image, rects, pad_x, affine, unit, scheme):
    """Two mounting screws at the ends of a plate."""
    cy = float((rects[:, 1] + rects[:, 3] / 2).mean())
    r = max(1, int(unit * rng.uniform(0.04, 0.08)))
    colour = scheme.random(rng, "light").tolist()
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


def _draw_digit_free_clutter(rng, font, weight, rects, extent, unit, canvas):
    """
    What a digit-free wall shows in ink instead of a number: stray strokes (short bars, arcs, a dash) where
    the number would be, sometimes a digit cut by the image edge or a letter beside the empty spot.
    """
    ch, cw = canvas.shape
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.uniform(extent[0], extent[2]), rng.uniform(extent[1], extent[3])
        length = unit * rng.uniform(0.2, 0.9)
        thickness = max(1, int(round(unit * rng.uniform(0.05, 0.14))))
        if rng.random() < 0.6:
            # not near vertical: a vertical bar is how a plain "1" is drawn
            angle = rng.uniform(-0.9, 0.9) % np.pi
            dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
            cv2.line(canvas, (int(x - dx), int(y - dy)), (int(x + dx), int(y + dy)), 255, thickness, cv2.LINE_AA)
        else:
            axes = (max(1, int(length / 2)), max(1, int(length / 2 * rng.uniform(0.5, 1.0))))
            start = rng.uniform(0, 360)
            cv2.ellipse(canvas, (int(x), int(y)), axes, 0, start, start + rng.uniform(60, 200), 255, thickness)
    if rng.random() < 0.3:
        _draw_cut_digit(rng, font, weight, rects, extent, canvas, cw)
    if rng.random() < 0.3:
        _draw_letter(rng, extent, unit, canvas)


def _draw_letter(rng, extent, unit, canvas):
    """An unlabelled letter (CLUTTER_LETTERS) beside the number where there is room, as on door signs."""
    ch, cw = canvas.shape
    h = unit * rng.uniform(0.5, 0.9)
    face = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN)[int(rng.integers(3))]
    letter = CLUTTER_LETTERS[int(rng.integers(len(CLUTTER_LETTERS)))]
    scale = h / max(cv2.getTextSize(letter, face, 1.0, 1)[0][1], 1)
    thickness = max(1, int(round(h / 8)))
    (w, th), _ = cv2.getTextSize(letter, face, scale, thickness)
    gap = 0.25 * unit
    y = int(np.clip((extent[1] + extent[3]) / 2 + th / 2, th + 1, ch - 2))
    if extent[0] - gap >= w + 2:
        x = int(rng.uniform(1, extent[0] - gap - w))
    elif cw - extent[2] - gap >= w + 2:
        x = int(rng.uniform(extent[2] + gap, cw - w - 1))
    else:
        return
    cv2.putText(canvas, letter, (x, y), face, scale, 255, thickness, cv2.LINE_AA)


def _extrude(rng, image, masks, fill, ink, unit):
    """3-D digits: the fill shifted step by step down and sideways in a darker ink; returns the grown masks."""
    steps = max(1, int(round(unit * rng.uniform(0.03, 0.08))))
    direction = np.array([rng.choice((-1, 1)) * rng.uniform(0.3, 1.0), 1.0])
    side = np.zeros_like(fill)
    grown = [m.copy() for m in masks]
    for i in range(1, steps + 1):
        dx, dy = direction * i
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        np.maximum(side, cv2.warpAffine(fill, m, fill.shape[::-1]), out=side)
        for g, mask in zip(grown, masks):
            np.maximum(g, cv2.warpAffine(mask, m, mask.shape[::-1]), out=g)
    image[:] = _paint(image, side, ink * rng.uniform(0.35, 0.6))
    return grown


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


def _blur(rng, image, kind):
    """One blur of the style: "gaussian", "motion" (a line kernel) or "defocus" (a disk kernel)."""
    if kind == "gaussian":
        return cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.1))
    if kind == "motion":
        length = int(rng.integers(3, 6))
        kernel = np.zeros((length, length), np.float32)
        cv2.line(kernel, (0, length // 2), (length - 1, length // 2), 1.0, 1)
        rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
    elif kind == "defocus":
        r = rng.uniform(0.8, 1.8)
        size = 2 * int(np.ceil(r)) + 1
        kernel = np.zeros((size, size), np.float32)
        cv2.circle(kernel, (size // 2 * 16, size // 2 * 16), int(r * 16), 1.0, -1, cv2.LINE_AA, shift=4)
    else:
        raise ValueError(f"unknown blur kind {kind!r}")
    return cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))


def _camera_effects(rng, image, blurs):
    """Low resolution (if the style has it), the style's blur, haze, colour cast, gamma, sensor noise and JPEG."""
    H, W = image.shape[:2]
    if "low_resolution" in blurs and rng.random() < 0.3:
        f = rng.uniform(1.3, 2.2)
        small = cv2.resize(image, (max(int(W / f), 1), max(int(H / f), 1)), interpolation=cv2.INTER_AREA)
        image = cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)
    kinds = [b for b in blurs if b != "low_resolution"]
    if kinds and rng.random() < 0.55:
        image = _blur(rng, image, kinds[int(rng.integers(len(kinds)))])
    if rng.random() < 0.3:
        haze = rng.uniform(0.05, 0.3)
        image = image * (1 - haze) + haze * image.reshape(-1, 3).mean(0)
    image = image * rng.normal(1, 0.06, 3).astype(np.float32)
    if rng.random() < 0.5:
        image = 255 * (np.clip(image, 0, 255) / 255) ** rng.uniform(0.7, 1.4)
    image = image + rng.normal(0, rng.uniform(0, 6), image.shape).astype(np.float32)
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        quality = int(rng.integers(30, 91))
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return image
