#!/usr/bin/env python
"""
House numbers that the project's generator did not render: a second, independent out-of-style ruler.

    python benchmarks/independent_numbers.py OUT --geometry ../shared/svhn_geometry/train.json \\
        --fonts FONT_FILES_FOLDERS_OR_ARCHIVES... [--count 1000] [--seed 0]
    DIGITS_DATASET_ROOT=OUT python tools/train_net.py --eval-only --weights MODEL.pth \\
        DATASETS.TEST '("digits_test_ood",)' OUTPUT_DIR OUT_EVAL

Every split of ``datasets/prepare_synthetic.py`` -- the out-of-style ones too -- comes from one
generator (``digit_detectron.data.synthetic``): its placement, plates, textures, lighting, blur and
camera code. A model can learn that code's habits, and the out-of-style split would not show it. This
script shares none of it: digits are drawn by Pillow's text renderer (the generator uses its own glyph
bitmaps and OpenCV), in fonts of no family the generator knows (``--fonts``: .ttf/.otf files, folders,
or the .whl/.zip/.tar.gz of font packages, read in place; DejaVu/Vera, Computer Modern and STIX are
refused, as is any font file of either style), on crops of scikit-image sample photos that neither
style uses, with its own plates, outlines, lighting, blur, noise and JPEG. Only the layouts are
shared: the image sizes, digit boxes and labels of real SVHN images (``--geometry``), drawn at random
(``--framing test``: widened as the real test images are);
each digit's ink is drawn inside its box the way the annotators boxed digits (ink shorter than the box,
a "1" narrower than its box), and where two boxes overlap each glyph keeps to its side.

Writes ``OUT/test_ood/<id>.png`` and ``OUT/test_ood.json`` (COCO, category ids 1..10 for digits 0..9;
``info`` names the generator, fonts, photos and seed; each image its font as ``glyph_source``, so the
evaluation report draws accuracy by font), so that ``DIGITS_DATASET_ROOT=OUT`` evaluates it
as ``digits_test_ood``. The same seed, count, geometry and fonts give byte-identical files.
"""

import io
import os
import tarfile
import zipfile

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from digit_detectron.data.datasets import DatasetError
from digit_detectron.data.synthetic.layout import FRAMINGS, ReframedSampler, SVHNGeometrySampler
from digit_detectron.data.synthetic.styles import IN_STYLE, OUT_OF_STYLE, font_files
from digit_detectron.data.synthetic.textures import luminance
from digit_detectron.utils.cli import argument_parser, run_tool
from digit_detectron.utils.io import atomic_open, atomic_write_json

FONT_EXTENSIONS = (".ttf", ".otf")
ARCHIVE_EXTENSIONS = (".whl", ".zip", ".tar.gz", ".tgz")
# Families the generator draws (either side of its style split) or derives from, the optional extra
# training fonts (datasets/fetch_fonts.py), and the generator's font files (a glyph source's file, either
# style): refused by file name.
GENERATOR_FAMILIES = ("dejavu", "vera", "cm", "stix", "caladea", "hankengrotesk", "intuitive", "lato", "sourceserif")
GENERATOR_FONT_FILES = frozenset(f.lower() for f in font_files(IN_STYLE) | font_files(OUT_OF_STYLE))
# scikit-image sample photos (shipped with it) that neither generator style draws (styles.IN_STYLE.photos).
PHOTOS = (
    "camera", "cell", "coins", "colorwheel", "gravel", "hubble_deep_field", "immunohistochemistry", "logo", "moon",
    "page", "retina", "text",
)  # fmt: skip
MAX_SIDE = 320  # longer image side in pixels (real SVHN images reach ~900 px; models read 64-px heights)


class FontError(DatasetError):
    """A font the ruler cannot use (unreadable, no digits, or one the generator draws)."""


def _generator_font(name):
    base = os.path.basename(name).lower()
    return base in GENERATOR_FONT_FILES or base.startswith(GENERATOR_FAMILIES)


def _archive_fonts(path):
    """(name, bytes) of the font files inside a wheel/zip/tar archive."""
    if path.lower().endswith((".whl", ".zip")):
        with zipfile.ZipFile(path) as z:
            return [(f"{path}!{n}", z.read(n)) for n in sorted(z.namelist()) if n.lower().endswith(FONT_EXTENSIONS)]
    with tarfile.open(path) as t:
        members = sorted((m for m in t.getmembers() if m.isfile() and m.name.lower().endswith(FONT_EXTENSIONS)),
                         key=lambda m: m.name)  # fmt: skip
        return [(f"{path}!{m.name}", t.extractfile(m).read()) for m in members]


def _font_sources(paths):
    """(name, bytes) of every font file named by ``paths`` (files, folders searched recursively, archives)."""
    out = []
    for path in paths:
        if os.path.isdir(path):
            for d, _, files in sorted(os.walk(path)):
                out += _font_sources([os.path.join(d, f) for f in sorted(files)
                                      if f.lower().endswith(FONT_EXTENSIONS + ARCHIVE_EXTENSIONS)])  # fmt: skip
        elif not os.path.isfile(path):
            raise FontError(f"{path}: font file or folder not found")
        elif path.lower().endswith(ARCHIVE_EXTENSIONS):
            try:
                out += _archive_fonts(path)
            except (zipfile.BadZipFile, tarfile.TarError, OSError) as e:
                raise FontError(f"{path}: cannot read the archive ({e})") from None
        elif path.lower().endswith(FONT_EXTENSIONS):
            with open(path, "rb") as f:
                out.append((path, f.read()))
        else:
            raise FontError(f"{path}: not a font file ({', '.join(FONT_EXTENSIONS)}) or font archive")
    return out


def _digit_masks(font):
    masks = []
    for ch in "0123456789":
        img = Image.new("L", (4 * font.size, 2 * font.size))
        ImageDraw.Draw(img).text((font.size, font.size // 2), ch, font=font, fill=255)
        box = img.getbbox()
        masks.append(None if box is None else img.crop(box).tobytes() + bytes(str(box[2:]), "ascii"))
    return masks


def load_fonts(paths, include_default=True):
    """
    The usable fonts as ``[(name, font_bytes or None)]`` (None: Pillow's built-in scalable font) and
    ``{name: why}`` of the skipped ones: generator families, unreadable files, fonts without ten
    different digit glyphs. A face counts once by its file name without extension.
    """
    fonts, skipped, seen = [], {}, set()
    if include_default:
        fonts.append(("pillow:default", None))
    for name, data in _font_sources(paths):
        base = os.path.basename(name.split("!")[-1])
        stem = os.path.splitext(base)[0].lower()
        if stem in seen:
            skipped[name] = "a font of this name is in the list already (.ttf and .otf of one face count once)"
            continue
        if _generator_font(base):
            skipped[name] = "a family the project's generator draws"
            continue
        try:
            masks = _digit_masks(ImageFont.truetype(io.BytesIO(data), 48))
        except OSError as e:
            skipped[name] = f"unreadable ({e})"
            continue
        if None in masks or len(set(masks)) < 10:
            skipped[name] = "does not draw ten different digits"
            continue
        fonts.append((name, data))
        seen.add(stem)
    return fonts, skipped


def _font_name(entry):
    name, data = entry
    return name if data is None else os.path.basename(name.split("!")[-1])


def _font(entry, size):
    name, data = entry
    return ImageFont.load_default(size) if data is None else ImageFont.truetype(io.BytesIO(data), size)


def _photos():
    from skimage import data as skdata

    out = []
    for name in PHOTOS:
        img = np.asarray(getattr(skdata, name)())
        img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
        if img.dtype != np.uint8:
            img = (255 * (img.astype(np.float64) / max(float(img.max()), 1e-9))).astype(np.uint8)
        out.append((name, img))
    return out


def _background(rng, photos, w, h):
    if rng.random() < 0.75:
        _, photo = photos[int(rng.integers(len(photos)))]
        ph, pw = photo.shape[:2]
        scale = rng.uniform(0.2, 1.0)
        cw, ch = max(8, int(pw * scale)), max(8, int(ph * scale))
        cw, ch = min(cw, pw), min(ch, ph)
        x, y = int(rng.integers(pw - cw + 1)), int(rng.integers(ph - ch + 1))
        img = Image.fromarray(photo[y : y + ch, x : x + cw]).resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float64)
        tint = rng.uniform(0.6, 1.3, size=3)
        arr = np.clip(arr * tint + rng.uniform(-40, 40), 0, 255)
        return Image.fromarray(arr.astype(np.uint8))
    a, b = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
    t = np.linspace(0, 1, h)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, w)[None, :, None]
    arr = np.broadcast_to(a + (b - a) * t * rng.uniform(0, 0.5), (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _ink_colour(rng, under):
    """A colour whose luma differs from ``under``'s by at least a random contrast (some low-contrast)."""
    need, under_luma = rng.uniform(35, 140), luminance(under)
    for _ in range(20):
        c = rng.integers(0, 256, size=3)
        if abs(luminance(c) - under_luma) >= need:
            return tuple(int(v) for v in c)
    return (0, 0, 0) if under_luma > 127 else (255, 255, 255)


def _sides(boxes):
    """Per box, the x-range its ink may use: where two boxes overlap, each keeps to its side of the middle."""
    lo, hi = boxes[:, 0].copy(), boxes[:, 0] + boxes[:, 2]
    order = np.argsort(boxes[:, 0] + boxes[:, 2] / 2, kind="stable")
    for a, b in zip(order[:-1], order[1:]):
        right_a, left_b = boxes[a, 0] + boxes[a, 2], boxes[b, 0]
        vertical = min(boxes[a, 1] + boxes[a, 3], boxes[b, 1] + boxes[b, 3]) - max(boxes[a, 1], boxes[b, 1])
        if right_a > left_b and vertical > 0.5 * min(boxes[a, 3], boxes[b, 3]):
            mid = (right_a + left_b) / 2
            hi[a], lo[b] = min(hi[a], mid - 1), max(lo[b], mid + 1)
    return lo, hi


def _glyph(font, ch, outline):
    """The ink of ``ch`` (L masks of fill and of fill + outline, cropped to the ink)."""
    pad = font.size
    size = (3 * font.size + 2 * outline, 2 * font.size + 2 * outline)
    fill, both = Image.new("L", size), Image.new("L", size)
    ImageDraw.Draw(fill).text((pad, pad // 2), ch, font=font, fill=255)
    ImageDraw.Draw(both).text((pad, pad // 2), ch, font=font, fill=255, stroke_width=outline, stroke_fill=255)
    box = both.getbbox()
    return fill.crop(box), both.crop(box)


def render_number(rng, layout, fonts, photos):
    """
    One image: (RGB PIL image, XYWH boxes, labels 0..9, ink boxes XYXY, font name) from a real
    ``layout``; the ink box of every digit lies inside its label box.
    """
    scale = min(1.0, MAX_SIDE / max(layout.width, layout.height))
    w, h = max(8, round(layout.width * scale)), max(8, round(layout.height * scale))
    boxes = layout.boxes * scale
    boxes[:, :2] = np.maximum(boxes[:, :2], 0)
    boxes[:, 2] = np.minimum(boxes[:, 0] + boxes[:, 2], w) - boxes[:, 0]
    boxes[:, 3] = np.minimum(boxes[:, 1] + boxes[:, 3], h) - boxes[:, 1]
    digits = layout.digits if layout.digits is not None else rng.integers(0, 10, size=len(boxes))
    image = _background(rng, photos, w, h)
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
    if rng.random() < 0.5:  # a plate behind the digits
        unit = float(np.median(boxes[:, 3]))
        mx, my = rng.uniform(0.1, 0.6) * unit, rng.uniform(0.05, 0.3) * unit
        plate = tuple(int(v) for v in rng.integers(0, 256, size=3))
        rect = (x0 - mx, y0 - my, x1 + mx, y1 + my)
        draw = ImageDraw.Draw(image)
        draw.rounded_rectangle(rect, radius=rng.uniform(0, 0.3) * unit, fill=plate,
                               outline=_ink_colour(rng, plate) if rng.random() < 0.3 else None,
                               width=max(1, round(unit / 15)))  # fmt: skip
    under = np.asarray(image)[int(y0) : max(int(y0) + 1, int(y1)), int(x0) : max(int(x0) + 1, int(x1))]
    under = under.reshape(-1, 3).mean(0)
    ink = _ink_colour(rng, under)
    font_entry = fonts[int(rng.integers(len(fonts)))]
    height_frac = rng.uniform(0.72, 0.95)
    outline_colour = _ink_colour(rng, ink) if rng.random() < 0.15 else None
    lo, hi = _sides(boxes)
    ink_boxes = []
    for (bx, by, bw, bh), d, left, right in zip(boxes, digits, lo, hi):
        th = max(4, int(bh * height_frac))
        font = _font(font_entry, max(6, th))
        outline = max(1, round(th / 14)) if outline_colour else 0
        fill, both = _glyph(font, str(int(d)), outline)
        gw = both.width * th / both.height * rng.uniform(0.9, 1.1)
        tw = int(max(2, min(gw, 0.95 * (right - left))))
        fill, both = fill.resize((tw, th), Image.LANCZOS), both.resize((tw, th), Image.LANCZOS)
        free_x, free_y = (right - left) - tw, bh - th
        gx = int(np.floor(left + free_x * rng.uniform(0.3, 0.7)))
        gy = int(np.floor(by + free_y * rng.uniform(0.3, 0.7)))
        gx = min(max(gx, int(np.ceil(bx))), int(np.floor(bx + bw)) - tw)
        gy = min(max(gy, int(np.ceil(by))), int(np.floor(by + bh)) - th)
        if outline_colour:
            image.paste(outline_colour, (gx, gy), both)
        image.paste(ink, (gx, gy), fill)
        ink_boxes.append((gx, gy, gx + tw, gy + th))
    image = _finish(rng, image)
    ink_boxes = np.asarray(ink_boxes, dtype=np.float64)
    return image, boxes, np.asarray(digits, dtype=np.int64), ink_boxes, _font_name(font_entry)


def _finish(rng, image):
    """Lighting, blur, noise and JPEG over the whole image."""
    arr = np.asarray(image, dtype=np.float64)
    h, w = arr.shape[:2]
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * np.linspace(-1, 1, w)[None, :] + np.sin(angle) * np.linspace(-1, 1, h)[:, None]
        arr = arr * (1 + rng.uniform(0.1, 0.5) * ramp[..., None])
    if rng.random() < 0.4:
        arr = arr * rng.uniform(0.5, 0.9) + rng.uniform(0, 60)  # washed out, low contrast
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.6:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * h / 64))
    if rng.random() < 0.5:
        arr = np.asarray(image, dtype=np.float64) + rng.normal(0, rng.uniform(2, 12), size=(h, w, 3))
        image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.7:
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=int(rng.integers(25, 91)))
        image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return image


def generate(out, geometry, fonts, count, seed=0, progress=True, framing="train"):
    """
    Render ``count`` images into ``OUT/test_ood`` and write ``OUT/test_ood.json``; returns its path.
    ``framing`` "test" reframes each real layout as the real test images are (``layout.ReframedSampler``:
    a wider image, the number ~0.7 of its share of the width), what the HW2 test images look like.
    """
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
    sampler = SVHNGeometrySampler(geometry)
    if framing == "test":
        sampler = ReframedSampler(sampler)
    photos = _photos()
    image_dir = os.path.join(out, "test_ood")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    steps = range(1, count + 1)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="independent numbers", unit="img")
    for image_id in steps:
        rng = np.random.default_rng([seed, image_id])
        image, boxes, digits, _, font = render_number(rng, sampler(rng), fonts, photos)
        file_name = f"{image_id}.png"
        with atomic_open(os.path.join(image_dir, file_name), "wb") as f:
            image.save(f, "PNG")
        images.append({"id": image_id, "file_name": file_name, "width": image.width, "height": image.height,
                       "glyph_source": font})  # fmt: skip
        for box, d in zip(boxes, digits):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(d) + 1,
                                "bbox": [round(float(v), 2) for v in box], "area": round(float(box[2] * box[3]), 2),
                                "iscrowd": 0})  # fmt: skip
    info = {
        "description": "house numbers rendered by benchmarks/independent_numbers.py (not the project's generator)",
        "generator": "independent",
        "seed": seed,
        "count": count,
        "geometry": os.path.basename(geometry),
        "framing": framing,
        "fonts": [_font_name(f) for f in fonts],
        "photos": list(PHOTOS),
    }
    categories = [{"id": d + 1, "name": str(d)} for d in range(10)]
    path = os.path.join(out, "test_ood.json")
    atomic_write_json(path, {"info": info, "images": images, "annotations": annotations, "categories": categories})
    return path


def main(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("out", help="output folder (test_ood/ and test_ood.json are written there)")
    parser.add_argument(
        "--geometry", required=True, help="COCO json of real SVHN boxes (../shared/svhn_geometry/train.json)"
    )
    parser.add_argument("--fonts", nargs="*", default=[], help="font files, folders or font-package archives")
    parser.add_argument("--no-default-font", action="store_true", help="leave out Pillow's built-in font")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--framing", choices=FRAMINGS, default="train",
        help="train: the real layouts as they are; test: reframed as the real test images (wider, smaller number)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")
    fonts, skipped = load_fonts(args.fonts, include_default=not args.no_default_font)
    for name, why in skipped.items():
        print(f"skipped font {name}: {why}")
    if not fonts:
        raise FontError("no usable font: pass --fonts, or drop --no-default-font")
    print(f"{len(fonts)} fonts, {len(skipped)} skipped")
    path = generate(args.out, args.geometry, fonts, args.count, args.seed, framing=args.framing)
    print(f"{args.count} images -> {path}")


if __name__ == "__main__":
    run_tool(main)
