"""
Synthetic SVHN-like house-number datasets in the NYCU HW2 layout (the embedded default data)::

    ROOT/train/1.png ...          ROOT/train.json           in-style
    ROOT/valid/1.png ...          ROOT/valid.json           out-of-style (recipes are chosen on it)
    ROOT/test/1.png ...           (no json, like HW2)       out-of-style
    ROOT/valid_instyle/1.png ...  ROOT/valid_instyle.json   in-style (optional)
    ROOT/test_ood/1.png ...       ROOT/test_ood.json        out-of-style, never used to choose (optional)
    ROOT/test_wide/1.png ...      ROOT/test_wide.json       out-of-style, framed as the real test images (optional)
    ROOT/free/1.png ...           ROOT/free.json            out-of-style, test framing, no digit at all (optional)
    ROOT/valid_free/1.png ...     ROOT/valid_free.json      the same kind, to choose the reader's gate (optional)

Each json image entry also names the glyph source its digits were drawn from (``glyph_source``) and,
when it shows digits, the ink contrast of its faintest digit (``ink_contrast``: ``render.ink_contrast``),
so that the evaluation report can show accuracy per font and per contrast.

The styles are the two disjoint sides of ``styles``' split, recorded in each json's ``info``. Image
sizes and box layouts (and the digits, when the geometry file labels them) come from real SVHN
geometry (``layout``); each image is drawn from its own seed ``(seed, split, image id)``, so a dataset
is byte-identical for a seed whatever the number of worker processes.

Framing and hard negatives (``SPLIT_FRAMING``, ``DIGIT_FREE_SHARE``): a share of the train images is
framed as the real test images (wider, the number a smaller part of it; ``layout.ReframedSampler``)
and a share shows a wall with no digit at all (``render_sample(digit_free=True)``: no boxes; the
loader keeps them, ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` False). ``test_wide`` is framed as the test
images; ``free`` is all digit-free walls in that framing, to count the numbers read where there is none.
"""

import functools
import multiprocessing as mp
import os
import shutil
import tempfile
import time

import cv2
import numpy as np
from tqdm import tqdm

from ...utils.io import atomic_open, atomic_write_json
from ..datasets import DIGIT_CLASSES, DatasetError, load_digits_json
from ..image_io import read_image
from .glyphs import GlyphBank
from .layout import ReframedSampler, build_layout_sampler, layout_info
from .render import ink_contrast, render_sample
from .styles import split_styles

# In this order: a split's index is part of its images' seeds.
SPLITS = ("train", "valid", "test", "valid_instyle", "test_ood", "test_wide", "free", "valid_free")
LABELLED = ("train", "valid", "valid_instyle", "test_ood", "test_wide", "free", "valid_free")
# Share of each split's images framed as the real test images (the rest: the layout source's train framing).
SPLIT_FRAMING = {"train": 0.25, "test_wide": 1.0, "free": 1.0, "valid_free": 1.0}
# Share of each split's images that show no digit (hard negatives for training; all of "free").
DIGIT_FREE_SHARE = {"train": 0.1, "free": 1.0, "valid_free": 1.0}
CATEGORIES = [{"id": d + 1, "name": name} for d, name in enumerate(DIGIT_CLASSES)]


class SampleRenderer:
    """
    Renders image ``image_id`` of ``split`` for ``seed`` from a layout sampler, in the split's style
    (``styles``: split -> Style, default ``styles.SPLIT_STYLES``) with that style's GlyphBank
    (``glyph_banks``: style name -> GlyphBank, built when missing).
    """

    def __init__(self, layout_sampler, seed, glyph_banks=None, styles=None):
        self.layout_sampler, self.seed = layout_sampler, seed
        self.test_framing = ReframedSampler(layout_sampler)
        self.glyph_banks = dict(glyph_banks or {})
        self.styles = styles or split_styles()

    def glyphs(self, style):
        if style.name not in self.glyph_banks:
            self.glyph_banks[style.name] = GlyphBank(style.glyph_sources)
        return self.glyph_banks[style.name]

    def __call__(self, split, image_id):
        style = self.styles[split]
        rng = np.random.default_rng([self.seed, SPLITS.index(split), image_id])
        # Framing and digit-free draws from their own stream: a split without them renders as before.
        choice = np.random.default_rng([self.seed, SPLITS.index(split), image_id, 1]).random(2)
        sampler = self.test_framing if choice[0] < SPLIT_FRAMING.get(split, 0.0) else self.layout_sampler
        digit_free = bool(choice[1] < DIGIT_FREE_SHARE.get(split, 0.0))
        return render_sample(rng, sampler(rng), self.glyphs(style), style, digit_free=digit_free)


def _write_png(path, image_rgb):
    ok, data = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with open(path, "wb") as f:
        f.write(data.tobytes())


_renderer = None  # the SampleRenderer of a worker process


def _init_worker(renderer):
    global _renderer
    _renderer = renderer


def _worker_context():
    """Workers forked from a clean server process (forking this one, which may run threads, can deadlock)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    context = mp.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _render_and_write(task, renderer=None):
    split, image_id, folder = task
    sample = (renderer or _renderer)(split, image_id)
    _write_png(os.path.join(folder, f"{image_id}.png"), sample.image)
    height, width = sample.image.shape[:2]
    contrast = ink_contrast(sample.image, sample.boxes, sample.masks)
    faintest = round(min(contrast), 2) if contrast else None
    return split, image_id, width, height, sample.boxes.tolist(), sample.digits.tolist(), sample.source, faintest


def _coco_json(records, split, seed, style, layouts=None):
    images, annotations = [], []
    for _, image_id, width, height, boxes, digits, source, faintest in records:
        image = {
            "id": image_id,
            "file_name": f"{image_id}.png",
            "height": height,
            "width": width,
            "glyph_source": source,
        }
        if faintest is not None:
            image["ink_contrast"] = faintest
        images.append(image)
        for box, digit in zip(boxes, digits):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "bbox": box,
                    "category_id": digit + 1,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    info = {
        "description": f"synthetic house numbers, split {split}",
        "seed": seed,
        "style": style.info(),
        "test_framing_share": SPLIT_FRAMING.get(split, 0.0),
        "digit_free_share": DIGIT_FREE_SHARE.get(split, 0.0),
        "layouts": layouts,
    }
    return {"info": info, "images": images, "annotations": annotations, "categories": CATEGORIES}


def generate_dataset(
    root,
    num_train,
    num_valid,
    num_test,
    seed=0,
    geometry=None,
    workers=1,
    overwrite=False,
    progress=False,
    num_valid_instyle=0,
    num_test_ood=0,
    fonts=(),
    num_test_wide=0,
    num_free=0,
    num_valid_free=0,
):
    """
    Write a synthetic dataset under ``root`` and return a summary dict (counts, styles, geometry
    source, wall-clock images/s, worker start-up included). ``valid_instyle`` and ``test_ood`` are
    written only when asked for, and so are ``test_wide``, ``free`` and ``valid_free``. ``geometry``: see
    ``layout.build_layout_sampler``. ``fonts``: font files added to the in-style glyph sources
    (``styles.split_styles``; recorded in the jsons).
    Existing split folders or jsons are an error unless ``overwrite``. Everything is written into a
    hidden staging folder under ``root`` and moved into place at the end, so an interrupted run leaves
    no partial split.
    """
    counts = {
        "train": num_train,
        "valid": num_valid,
        "test": num_test,
        "valid_instyle": num_valid_instyle,
        "test_ood": num_test_ood,
        "test_wide": num_test_wide,
        "free": num_free,
        "valid_free": num_valid_free,
    }
    for split, n in counts.items():
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"number of {split} images must be a non-negative integer, got {n!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    splits = [s for s in SPLITS if counts[s] or s in ("train", "valid", "test")]
    names = [n for s in splits for n in ((s, s + ".json") if s in LABELLED else (s,))]
    targets = [os.path.join(root, name) for name in names]
    existing = [t for t in targets if os.path.exists(t)]
    if existing and not overwrite:
        raise DatasetError(f"{existing[0]}: already exists; pass overwrite=True (--overwrite) to replace it")

    styles = split_styles(fonts)
    renderer = SampleRenderer(build_layout_sampler(geometry), seed, styles=styles)
    for split in splits:
        renderer.glyphs(styles[split])  # built once here, not in every worker
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(dir=root, prefix=".synthetic-")
    try:
        tasks = []
        for split in splits:
            os.makedirs(os.path.join(staging, split))
            tasks += [(split, i, os.path.join(staging, split)) for i in range(1, counts[split] + 1)]
        start = time.perf_counter()
        bar = functools.partial(tqdm, total=len(tasks), desc="synthetic images", unit="img", disable=not progress)
        if workers == 1:
            records = list(bar(_render_and_write(task, renderer) for task in tasks))
        else:
            with _worker_context().Pool(workers, initializer=_init_worker, initargs=(renderer,)) as pool:
                records = list(bar(pool.imap(_render_and_write, tasks, chunksize=8)))
        seconds = time.perf_counter() - start
        layouts = layout_info(renderer.layout_sampler)
        for split in splits:
            if split in LABELLED:
                coco = _coco_json((r for r in records if r[0] == split), split, seed, styles[split], layouts)
                atomic_write_json(os.path.join(staging, split + ".json"), coco)
        for target in targets:
            if os.path.isdir(target):
                shutil.rmtree(target)
            os.replace(os.path.join(staging, os.path.basename(target)), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    return {
        "root": os.path.abspath(root),
        "seed": seed,
        "geometry": renderer.layout_sampler.source,
        "splits": {
            split: {
                "images": counts[split],
                "boxes": sum(len(r[4]) for r in records if r[0] == split),
                "style": styles[split].name,
            }
            for split in splits
        },
        "seconds": seconds,
        "images_per_s": len(tasks) / max(seconds, 1e-9),
    }


def draw_sample_grid(root, out_png, n=24, split="train", columns=6, tile_height=80):
    """
    Save a grid of the first ``n`` images of ``split`` (a labelled split of a dataset under
    ``root``), scaled to ``tile_height`` px with their boxes and digits drawn; returns ``out_png``.
    """
    records = load_digits_json(os.path.join(root, split + ".json"), os.path.join(root, split))[:n]
    if not records:
        raise DatasetError(f"{os.path.join(root, split + '.json')}: no images to draw")
    tile_width = 3 * tile_height
    tiles = []
    for record in records:
        image = read_image(record["file_name"], "BGR")
        scale = min(tile_height / image.shape[0], tile_width / image.shape[1])
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        for ann in record["annotations"]:
            x, y, w, h = (np.array(ann["bbox"]) * scale).round().astype(int)
            cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), (0, 255, 0), 1)
            cv2.putText(image, str(ann["category_id"]), (x + 1, y + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 255), 1)
        tile = np.full((tile_height + 4, tile_width + 4, 3), 255, np.uint8)
        tile[2 : 2 + image.shape[0], 2 : 2 + image.shape[1]] = image
        tiles.append(tile)
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    grid = np.vstack([np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)])
    ok, data = cv2.imencode(".png", grid)
    with atomic_open(out_png, "wb") as f:
        f.write(data.tobytes())
    return out_png
