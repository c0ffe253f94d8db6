"""The synthetic house-number generator: determinism, HW2 layout, valid COCO, boxes that hold the ink, style split."""

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from detectron2.data.datasets import load_coco_json

from digit_detectron.data.datasets import (
    DatasetError,
    dataset_style,
    load_digits_json,
    load_digits_test,
    register_digits,
)
from digit_detectron.data.image_io import read_image
from digit_detectron.data.synthetic.generate import SampleRenderer, generate_dataset
from digit_detectron.data.synthetic.glyphs import GlyphBank
from digit_detectron.data.synthetic.layout import PARAMETRIC, Layout, build_layout_sampler
from digit_detectron.data.synthetic.render import (
    GLYPH_MIN_WIDTH,
    INK_THRESHOLD,
    _extrude,
    _keep_apart,
    ink_contrast,
    render_sample,
    slant_glyphs,
)
from digit_detectron.data.synthetic.styles import IN_STYLE, OUT_OF_STYLE, SPLIT_STYLES, overlap
from digit_detectron.data.synthetic.textures import (
    PHOTOS,
    ColourScheme,
    clutter,
    load_photo,
    painted_wall,
    photo,
    random_background,
)
from digit_detectron.utils.cli import run_tool

from conftest import GEOMETRY, REPO_ROOT

COUNTS = (6, 3, 3)


@pytest.fixture(scope="module")
def glyphs():
    return GlyphBank(IN_STYLE.glyph_sources)


@pytest.fixture(scope="module")
def banks():
    return {style.name: GlyphBank(style.glyph_sources) for style in (IN_STYLE, OUT_OF_STYLE)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic") / "digits")
    summary = generate_dataset(root, *COUNTS, seed=3, geometry=GEOMETRY)
    return root, summary


def _files(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.mark.slow
def test_same_seed_same_bytes_any_workers(dataset, tmp_path):
    root, summary = dataset
    again = str(tmp_path / "again")
    generate_dataset(again, *COUNTS, seed=3, workers=2, geometry=GEOMETRY)
    first, second = _files(root), _files(again)
    assert sorted(first) == sorted(second)
    assert len(first) == sum(COUNTS) + 2  # images + train.json + valid.json
    for name in first:
        assert first[name] == second[name], name
    assert summary["splits"]["train"]["images"] == COUNTS[0] and summary["images_per_s"] > 0


@pytest.mark.slow
def test_different_seed_different_data(dataset, tmp_path):
    root, _ = dataset
    other = str(tmp_path / "other")
    generate_dataset(other, *COUNTS, seed=4, geometry=GEOMETRY)
    first, second = _files(root), _files(other)
    assert first["train.json"] != second["train.json"]
    differing = [n for n in first if n.endswith(".png") and first[n] != second.get(n)]
    assert len(differing) == sum(COUNTS)


def test_hw2_layout_and_coco_fields(dataset):
    root, summary = dataset
    assert sorted(os.listdir(root)) == ["test", "train", "train.json", "valid", "valid.json"]
    for split, n in zip(("train", "valid", "test"), COUNTS):
        assert sorted(os.listdir(os.path.join(root, split))) == sorted(f"{i}.png" for i in range(1, n + 1))
    test_records = load_digits_test(os.path.join(root, "test"))
    assert [r["image_id"] for r in test_records] == list(range(1, COUNTS[2] + 1))

    for split, n in (("train", COUNTS[0]), ("valid", COUNTS[1])):
        with open(os.path.join(root, split + ".json")) as f:
            data = json.load(f)
        assert data["categories"] == [{"id": d + 1, "name": str(d)} for d in range(10)]
        assert [img["id"] for img in data["images"]] == list(range(1, n + 1))
        sizes = {}
        for img in data["images"]:
            assert img["file_name"] == f"{img['id']}.png"
            image = read_image(os.path.join(root, split, img["file_name"]))
            assert image.shape[:2] == (img["height"], img["width"])
            sizes[img["id"]] = (img["width"], img["height"])
        assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
        assert len(data["annotations"]) == summary["splits"][split]["boxes"] >= n
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            width, height = sizes[ann["image_id"]]
            assert all(isinstance(v, int) for v in ann["bbox"])
            assert w >= 1 and h >= 1 and x >= 0 and y >= 0 and x + w <= width and y + h <= height
            assert 1 <= ann["category_id"] <= 10 and ann["area"] == w * h and ann["iscrowd"] == 0


def test_json_loads_with_both_loaders(dataset):
    root, _ = dataset
    for split in ("train", "valid"):
        ours = load_digits_json(os.path.join(root, split + ".json"), os.path.join(root, split))
        theirs = load_coco_json(os.path.join(root, split + ".json"), os.path.join(root, split), f"synthetic_{split}")
        assert len(ours) == len(theirs) == COUNTS[("train", "valid").index(split)]
        for a, b in zip(ours, sorted(theirs, key=lambda r: r["image_id"])):
            assert (a["file_name"], a["height"], a["width"]) == (b["file_name"], b["height"], b["width"])
            assert [x["bbox"] for x in a["annotations"]] == [x["bbox"] for x in b["annotations"]]
            assert [x["category_id"] for x in a["annotations"]] == [x["category_id"] for x in b["annotations"]]


@pytest.mark.slow
def test_files_match_the_rendered_samples(dataset, glyphs):
    """The written PNG and json boxes are exactly what render_sample drew (so the mask checks below hold)."""
    root, summary = dataset
    renderer = SampleRenderer(build_layout_sampler(summary["geometry"]), seed=3, glyph_banks={IN_STYLE.name: glyphs})
    records = load_digits_json(os.path.join(root, "train.json"), os.path.join(root, "train"))
    for record in records[:3]:
        sample = renderer("train", record["image_id"])
        assert np.array_equal(read_image(record["file_name"], "RGB"), sample.image)
        assert [a["bbox"] for a in record["annotations"]] == sample.boxes.astype(float).tolist()
        assert [a["category_id"] for a in record["annotations"]] == sample.digits.tolist()
        assert record["glyph_source"] == sample.source and sample.source in IN_STYLE.glyph_sources
        # The json's ink contrast is the faintest digit's, measured on the image as written.
        faintest = min(ink_contrast(sample.image, sample.boxes, sample.masks))
        assert record["ink_contrast"] == pytest.approx(faintest, abs=0.005)


def test_ink_contrast_of_constructed_digits():
    """Ink contrast: |median ink - median wall| / (wall std + 4), on the wall around the box that no ink covers."""
    image = np.full((40, 80, 3), 100, np.uint8)
    masks = np.zeros((3, 40, 80), np.float32)
    masks[0, 10:30, 10:16], image[10:30, 10:16] = 1, 200  # plain and strong: 100 / 4
    masks[1, 10:30, 34:40], image[10:30, 34:40] = 1, 104  # faint: 4 / 4
    boxes = [[8, 8, 10, 24], [32, 8, 10, 24], [60, 8, 10, 24]]
    assert ink_contrast(image, boxes, masks) == [25.0, 1.0, 0.0]  # the third digit has no ink left
    # The same strong digit on a busy wall (a checkerboard of 60 and 140: std 40) scores far lower.
    busy = image.copy()
    yy, xx = np.mgrid[:40, :80]
    busy[((yy // 2 + xx // 2) % 2 == 0)] = 60
    busy[((yy // 2 + xx // 2) % 2 == 1)] = 140
    busy[10:30, 10:16] = 200
    low = ink_contrast(busy, boxes[:1], masks[:1])[0]
    assert 1.5 < low < 3.0  # |200 - median wall| / (40 + 4)
    assert ink_contrast(image, np.zeros((0, 4)), np.zeros((0, 40, 80), np.float32)) == []


def assert_boxes_hold_visible_ink(samples):
    """Every box lies in its image and holds all of its digit's ink, which differs in colour from its surroundings."""
    contrasts = []
    for sample in samples:
        image = sample.image.astype(np.float64)
        height, width = image.shape[:2]
        all_ink = sample.masks.max(0)
        assert len(sample.boxes) == len(sample.digits) == len(sample.masks) >= 1
        for (x, y, w, h), mask in zip(sample.boxes, sample.masks):
            assert 0 <= x < x + w <= width and 0 <= y < y + h <= height
            ink = mask >= min(INK_THRESHOLD, mask.max() / 2)
            ys, xs = np.nonzero(ink)
            # The box holds the ink and, as an annotator's box, spans about its height (it may be wider:
            # a thin "1" in a wide box).
            assert x <= xs.min() and xs.max() < x + w and y <= ys.min() and ys.max() < y + h
            assert h <= 1.35 * (ys.max() - ys.min() + 1) + 3
            # The ink is visible in the image: its colour differs from the background around it.
            ring = np.zeros((height, width), bool)
            ring[max(y - 2, 0) : y + h + 2, max(x - 2, 0) : x + w + 2] = True
            ring[ink] = False
            ring &= all_ink < 0.05
            if ring.sum() >= 4:
                contrasts.append(np.abs(image[ink].mean(0) - image[ring].mean(0)).max())
    contrasts = np.array(contrasts)
    assert len(contrasts) > 30
    assert np.percentile(contrasts, 5) > 10 and np.median(contrasts) > 40
    return contrasts


@pytest.mark.slow
@pytest.mark.parametrize("geometry", [GEOMETRY, PARAMETRIC])
@pytest.mark.parametrize("style", [IN_STYLE, OUT_OF_STYLE], ids=lambda s: s.name)
def test_boxes_hold_visible_ink(banks, geometry, style):
    sampler = build_layout_sampler(geometry)
    samples = []
    for i in range(40):
        rng = np.random.default_rng([7, i])
        samples.append(render_sample(rng, sampler(rng), banks[style.name], style))
    assert_boxes_hold_visible_ink(samples)


@pytest.mark.parametrize("source", IN_STYLE.glyph_sources + OUT_OF_STYLE.glyph_sources)
def test_every_glyph_source_renders_digits_whose_boxes_hold_the_ink(source):
    bank = GlyphBank([source])
    assert bank.font_names == [source] and len(bank.masks[0]) == 10
    style = IN_STYLE if source in IN_STYLE.glyph_sources else OUT_OF_STYLE
    layout = Layout(150, 50, np.array([[10.0 + 27 * i, 8, 24, 34] for i in range(5)]), np.array([0, 1, 4, 7, 8]))
    samples = [render_sample(np.random.default_rng([11, i]), layout, bank, style) for i in range(8)]
    for sample in samples:
        assert sample.digits.tolist() == [0, 1, 4, 7, 8]  # the layout's labels are drawn
    assert_boxes_hold_visible_ink(samples)


def test_glyphs_of_overlapping_boxes_stand_apart_inside_their_boxes():
    """Where neighbour boxes of a row overlap, each glyph keeps to its side; a column is left alone."""
    boxes = np.array([[0.0, 0, 20, 40], [14, 0, 20, 40], [30, 2, 20, 40], [60, 0, 20, 40]])
    gx, gw = np.array([0.0, 14, 30, 60]), np.array([20.0, 20, 20, 16])
    gy, gh = np.array([0.0, 0, 2, 0]), np.array([40.0, 40, 38, 40])
    x, width = _keep_apart(boxes, gx, gy, gw, gh)
    right = x + width
    assert np.all(x >= boxes[:, 0] - 1e-9) and np.all(right <= boxes[:, 0] + boxes[:, 2] + 1e-9)
    assert right[0] <= x[1] and right[1] <= x[2]  # no two neighbours overlap
    assert np.all(width >= GLYPH_MIN_WIDTH * gw - 1e-9)
    assert (x[3], width[3]) == (60, 16)  # the box that overlaps nothing keeps its glyph
    # a column: the same horizontal overlap, but one box above the other
    column = np.array([[0.0, 0, 20, 40], [10, 45, 20, 40]])
    x, width = _keep_apart(column, np.array([0.0, 10]), np.array([0.0, 45]), np.array([20.0, 20]), np.array([40.0, 40]))
    assert x.tolist() == [0, 10] and width.tolist() == [20, 20]


def _covered_neighbours(glyphs, style, n=150):
    """(neighbour pairs whose boxes overlap by over a tenth of the narrower, those whose ink overlaps by over 5%)."""
    sampler = build_layout_sampler(GEOMETRY)
    covered, overlapping_boxes = 0, 0
    for i in range(n):
        rng = np.random.default_rng([13, i])
        sample = render_sample(rng, sampler(rng), glyphs, style)
        order = np.argsort(sample.boxes[:, 0])
        ink = sample.masks[order] >= INK_THRESHOLD
        boxes = sample.boxes[order]
        for a, b, box_a, box_b in zip(ink[:-1], ink[1:], boxes[:-1], boxes[1:]):
            if box_a[0] + box_a[2] > box_b[0] + 0.1 * min(box_a[2], box_b[2]):
                overlapping_boxes += 1
                covered += (a & b).sum() > 0.05 * min(a.sum(), b.sum())
    return overlapping_boxes, covered


@pytest.mark.slow
def test_neighbouring_digits_do_not_cover_each_other(glyphs):
    """Real layouts whose boxes overlap: far fewer neighbours show one digit's ink over the other's."""
    assert IN_STYLE.glyphs_apart and OUT_OF_STYLE.glyphs_apart
    overlapping_boxes, covered = _covered_neighbours(glyphs, IN_STYLE)
    assert overlapping_boxes >= 20 and covered <= 0.25 * overlapping_boxes
    # the generator before: each glyph as wide as its box allows (measured: 38 of 107 pairs against 11 of 102)
    overlapping_boxes_before, covered_before = _covered_neighbours(glyphs, replace(IN_STYLE, glyphs_apart=False))
    assert covered_before >= 0.3 * overlapping_boxes_before and covered_before >= 2 * covered


def test_slanted_glyphs_lean_and_their_boxes_hold_the_ink(glyphs):
    bar = np.zeros((40, 8), np.uint8)
    bar[:, 2:6] = 255
    for slant in (0.3, -0.1):
        (sheared,) = slant_glyphs([bar], slant)
        assert sheared.shape[0] == 40 and sheared.shape[1] >= 4 + abs(slant) * 39 - 1  # the bar, leaning
        top, bottom = (np.nonzero(sheared[row] > 127)[0].mean() for row in (0, 39))
        assert np.sign(top - bottom) == np.sign(slant) and abs(top - bottom) >= abs(slant) * 39 - 1
        assert sheared[:, 0].any() and sheared[:, -1].any()  # cropped to the ink, none of it cut off
    assert bar[:, 2:6].min() == 255 and bar[:, :2].max() == 0  # the bank's mask is left as it was
    # Every number slanted: the annotator's boxes still hold all of the ink.
    style = replace(IN_STYLE, glyph_slant_prob=1.0)
    layout = Layout(150, 50, np.array([[10.0 + 27 * i, 8, 24, 34] for i in range(5)]), np.array([1, 1, 4, 7, 0]))
    samples = [render_sample(np.random.default_rng([5, i]), layout, glyphs, style) for i in range(8)]
    assert_boxes_hold_visible_ink(samples)
    # The held-out style draws no synthetic italics (it keeps its own italic fonts).
    assert IN_STYLE.glyph_slant_prob > 0 and OUT_OF_STYLE.glyph_slant_prob == 0


def test_photo_backgrounds_are_tinted_crops_of_real_photos(glyphs):
    assert set(IN_STYLE.photos) <= set(PHOTOS) and "photo" in IN_STYLE.textures
    for name in IN_STYLE.photos:
        grey = load_photo(name)  # a real file of scikit-image's samples, normalised
        assert grey.ndim == 2 and min(grey.shape) >= 300
        assert abs(float(grey.mean())) < 1e-3 and abs(float(grey.std()) - 1) < 1e-3
    scheme = ColourScheme(IN_STYLE.palette, IN_STYLE.hue_range)
    colour = np.array([200.0, 120.0, 40.0], np.float32)
    crops = [photo(np.random.default_rng([4, i]), 60, 150, colour, IN_STYLE.photos) for i in range(6)]
    for crop in crops:
        assert crop.shape == (60, 150, 3) and crop.std() > 3  # the photo's structure shows
        # tinted: every pixel is the colour times one shade, so the channels keep the colour's ratios
        shade = crop / colour
        assert np.allclose(shade[..., 0], shade[..., 1], atol=1e-4) and np.allclose(
            shade[..., 0], shade[..., 2], atol=1e-4
        )
    assert not np.allclose(crops[0], crops[1])
    again = photo(np.random.default_rng([4, 0]), 60, 150, colour, IN_STYLE.photos)
    assert np.array_equal(again, crops[0])  # deterministic per seed
    wall = random_background(np.random.default_rng(1), 60, 150, colour, 30, scheme, ("photo",), ("coffee",))
    assert wall.shape == (60, 150, 3) and wall.std() > 3 and np.allclose(wall[..., 1] / wall[..., 0], 0.6, atol=1e-4)
    with pytest.raises(ValueError, match="photo"):
        random_background(np.random.default_rng(1), 60, 150, colour, 30, scheme, ("photo",), ())
    # Numbers drawn on photo walls: boxes hold visible ink.
    style = replace(IN_STYLE, textures=("photo",))
    layout = Layout(150, 50, np.array([[10.0 + 27 * i, 8, 24, 34] for i in range(5)]), np.array([2, 1, 4, 7, 0]))
    samples = [render_sample(np.random.default_rng([8, i]), layout, glyphs, style) for i in range(8)]
    assert_boxes_hold_visible_ink(samples)


def test_photo_contrast_of_a_style_sets_how_strongly_the_photo_shows(glyphs):
    colour = np.array([200.0, 120.0, 40.0], np.float32)
    faint, strong = ((0.1, 0.15), (0.6, 0.7))
    for i in range(4):
        low = photo(np.random.default_rng([5, i]), 60, 150, colour, IN_STYLE.photos, faint)
        high = photo(np.random.default_rng([5, i]), 60, 150, colour, IN_STYLE.photos, strong)
        # the same crop (same draws), shown more strongly: the shade (image / colour) varies more
        assert (high[..., 0] / colour[0]).std() > 2.5 * (low[..., 0] / colour[0]).std()
    # The training style shows its photos more strongly than before (recipe log, run 15); recorded.
    assert IN_STYLE.photo_contrast[1] > 0.4 and IN_STYLE.info()["photo_contrast"] == list(IN_STYLE.photo_contrast)


def test_clutter_walls_hold_shapes_that_are_not_digits(glyphs):
    assert "clutter" in IN_STYLE.textures and "clutter" not in OUT_OF_STYLE.textures
    scheme = ColourScheme(IN_STYLE.palette, IN_STYLE.hue_range)
    colour = np.array([180.0, 170.0, 150.0], np.float32)
    walls = [clutter(np.random.default_rng([6, i]), 64, 160, colour, 30, scheme) for i in range(6)]
    plain = [painted_wall(np.random.default_rng([6, i]), 64, 160, colour, 30, scheme) for i in range(6)]
    for wall, flat in zip(walls, plain):
        assert wall.shape == (64, 160, 3) and wall.dtype == np.float32
        # the same wall (same draws) under shapes in other colours: some of it changed a lot
        far = np.abs(wall - flat).max(2) > 30
        assert 0.02 < far.mean() < 0.9
    assert np.array_equal(clutter(np.random.default_rng([6, 0]), 64, 160, colour, 30, scheme), walls[0])
    # Numbers drawn on cluttered walls: boxes hold visible ink.
    style = replace(IN_STYLE, textures=("clutter",))
    layout = Layout(150, 50, np.array([[10.0 + 27 * i, 8, 24, 34] for i in range(5)]), np.array([2, 1, 4, 7, 0]))
    samples = [render_sample(np.random.default_rng([9, i]), layout, glyphs, style) for i in range(8)]
    assert_boxes_hold_visible_ink(samples)


def test_extrusion_grows_the_masks_that_it_paints():
    fill = np.zeros((40, 60), np.uint8)
    fill[10:30, 20:26] = 255
    image = np.full((40, 60, 3), 200.0, np.float32)
    grown = _extrude(np.random.default_rng(0), image, [fill.copy()], fill, np.full(3, 20.0), unit=40)
    assert (grown[0] >= fill).all() and grown[0].sum() > fill.sum()  # the 3-D side is part of the digit
    painted = np.abs(image - 200).max(2) > 1
    assert painted.any() and (grown[0][painted] > 0).all()  # nothing painted outside the grown mask


@pytest.mark.slow
def test_style_split_is_disjoint_and_recorded_in_the_json(tmp_path):
    assert overlap(IN_STYLE, OUT_OF_STYLE) == {
        "glyph_sources": [], "palette": [], "textures": [], "blurs": [], "photos": [], "hue_range": [],
        "font_files": [],
    }  # fmt: skip
    assert SPLIT_STYLES["train"] is IN_STYLE and SPLIT_STYLES["valid_instyle"] is IN_STYLE
    assert SPLIT_STYLES["valid"] is SPLIT_STYLES["test"] is SPLIT_STYLES["test_ood"] is OUT_OF_STYLE
    root = str(tmp_path / "digits")
    summary = generate_dataset(root, 3, 2, 1, seed=0, geometry=GEOMETRY, num_valid_instyle=2, num_test_ood=2)
    assert sorted(os.listdir(root)) == [
        "test", "test_ood", "test_ood.json", "train", "train.json", "valid", "valid.json",
        "valid_instyle", "valid_instyle.json",
    ]  # fmt: skip
    for split, style in (("train", IN_STYLE), ("valid", OUT_OF_STYLE), ("valid_instyle", IN_STYLE),
                         ("test_ood", OUT_OF_STYLE)):  # fmt: skip
        with open(os.path.join(root, split + ".json")) as f:
            info = json.load(f)["info"]
        assert info["style"] == style.info() and info["seed"] == 0
        assert summary["splits"][split]["style"] == style.name
        records = load_digits_json(os.path.join(root, split + ".json"), os.path.join(root, split))
        assert len(records) == (3 if split == "train" else 2)
    # and read back per registered dataset, for the tables that name a split's style
    register_digits(root, prefix="styled")
    assert dataset_style("styled_valid") == dataset_style("styled_test_ood") == "out-of-style"
    assert dataset_style("styled_train") == dataset_style("styled_valid_instyle") == "in-style"
    assert dataset_style("styled_test") is None and dataset_style("no_such_dataset") is None
    register_digits(str(tmp_path / "nothing_here"), prefix="absent")
    assert dataset_style("absent_valid") is None  # registered, not on disk: no style, no error


@pytest.mark.slow
@pytest.mark.skipif(GEOMETRY == PARAMETRIC, reason="needs ../shared/svhn_geometry/train.json")
def test_ones_are_boxed_like_the_annotators_box_them(glyphs):
    """Real "1" boxes (h/w median 2.71, others ~2) keep their shape, and many a "1"'s ink is narrower than its box."""
    sampler = build_layout_sampler(GEOMETRY)
    aspect, fill = {True: [], False: []}, []
    for i in range(300):
        rng = np.random.default_rng([5, i])
        sample = render_sample(rng, sampler(rng), glyphs, IN_STYLE)
        for (_, _, w, h), digit, mask in zip(sample.boxes, sample.digits, sample.masks):
            aspect[digit == 1].append(h / w)
            if digit == 1:
                xs = np.nonzero((mask >= min(INK_THRESHOLD, mask.max() / 2)).any(0))[0]
                fill.append((xs.max() - xs.min() + 1) / w)
    assert len(fill) > 50
    assert 2.2 <= np.median(aspect[True]) <= 3.3 and np.median(aspect[True]) >= np.median(aspect[False]) + 0.4
    assert np.mean(np.array(fill) < 0.8) >= 0.2


def test_five_digits_at_any_scale(glyphs):
    for width, height in ((131, 47), (300, 90), (57, 21)):
        boxes = np.array([[width * (0.1 + 0.16 * i), height * 0.2, width * 0.12, height * 0.6] for i in range(5)])
        sample = render_sample(np.random.default_rng(width), Layout(width, height, boxes), glyphs, IN_STYLE)
        assert sample.image.shape == (height, width, 3) and sample.masks.shape == (5, height, width)
        assert np.all(np.diff(sample.boxes[:, 0] + sample.boxes[:, 2] / 2) > 0)


def test_digits_are_drawn_into_the_layout_boxes(glyphs):
    layout = Layout(120, 50, np.array([[30.0, 10, 16, 30], [50, 12, 16, 30], [70, 10, 16, 30]]))
    for i in range(10):
        sample = render_sample(np.random.default_rng(i), layout, glyphs, IN_STYLE)
        assert sample.image.shape == (50, 120, 3) and len(sample.boxes) == 3
        x, y, w, h = sample.boxes.T
        assert np.all(np.abs(h - 30) <= 4)  # the box height, up to slight rotation / shear
        assert np.all(np.abs(y + h / 2 - np.array([25, 27, 25])) <= 3)
        assert np.all(np.diff(x + w / 2) > 8)  # left to right, side by side
        assert np.all(np.abs((x + w / 2).mean() - 58) <= 6)


def test_geometry_file_sizes_and_layouts(tmp_path):
    geometry = tmp_path / "geometry.json"
    images = [
        {"id": 5, "file_name": "5.png", "width": 90, "height": 40},
        {"id": 9, "file_name": "9.png", "width": 60, "height": 30},
    ]
    annotations = [
        {"id": 1, "image_id": 9, "bbox": [30, 5, 9, 20], "category_id": 3},
        {"id": 2, "image_id": 5, "bbox": [20, 8, 12, 25], "category_id": 2},
        {"id": 3, "image_id": 9, "bbox": [18, 5, 10, 20], "category_id": 1},
    ]
    geometry.write_text(json.dumps({"images": images, "annotations": annotations}))
    sampler = build_layout_sampler(str(geometry))
    seen = {}
    for i in range(30):
        layout = sampler(np.random.default_rng(i))
        seen[(layout.width, layout.height)] = layout.boxes.tolist()
    assert seen == {(90, 40): [[20, 8, 12, 25]], (60, 30): [[18, 5, 10, 20], [30, 5, 9, 20]]}


@pytest.mark.slow
def test_parametric_layouts_without_a_geometry_file(tmp_path, glyphs):
    sampler = build_layout_sampler(None)
    assert sampler.source == PARAMETRIC
    rng = np.random.default_rng(0)
    layouts = [sampler(rng) for _ in range(2000)]
    heights = np.array([lay.height for lay in layouts])
    counts = np.array([len(lay.boxes) for lay in layouts])
    ratio = np.concatenate([lay.boxes[:, 3] / lay.height for lay in layouts])
    aspect = np.concatenate([lay.boxes[:, 3] / lay.boxes[:, 2] for lay in layouts])
    assert 38 <= np.median(heights) <= 58 and counts.min() == 1 and counts.max() <= 5
    assert 1.8 <= np.mean(counts) <= 2.6 and 0.55 <= np.median(ratio) <= 0.75 and 1.8 <= np.median(aspect) <= 2.4
    for lay in layouts:
        assert np.all(lay.boxes[:, :2] >= 0) and np.all(lay.boxes[:, 0] + lay.boxes[:, 2] <= lay.width + 1e-6)
        assert np.all(lay.boxes[:, 1] + lay.boxes[:, 3] <= lay.height + 1e-6)

    summary = generate_dataset(str(tmp_path / "digits"), 3, 2, 1, seed=0)
    assert summary["geometry"] == PARAMETRIC
    assert len(load_digits_json(str(tmp_path / "digits" / "train.json"), str(tmp_path / "digits" / "train"))) == 3


def test_clear_errors(tmp_path, dataset):
    root, _ = dataset
    with pytest.raises(DatasetError, match="train.*already exists"):
        generate_dataset(root, 1, 1, 1)
    for name, text, problem in (
        ("broken.json", "{not json", "malformed json"),
        (
            "nobox.json",
            json.dumps({"images": [{"id": 1, "width": 9, "height": 9}], "annotations": []}),
            "no image with",
        ),
        ("nosize.json", json.dumps({"images": [{"id": 1}], "annotations": []}), "not a COCO box file"),
    ):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(DatasetError, match=f"{name}: {problem}"):
            build_layout_sampler(str(path))
    with pytest.raises(DatasetError, match="missing.json: geometry file not found"):
        build_layout_sampler(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="non-negative"):
        generate_dataset(str(tmp_path / "new"), -1, 1, 1)


@pytest.mark.slow
def test_overwrite_replaces_every_split(tmp_path):
    root = str(tmp_path / "digits")
    generate_dataset(root, 4, 2, 2, seed=0, geometry=PARAMETRIC)
    generate_dataset(root, 2, 1, 1, seed=1, geometry=PARAMETRIC, overwrite=True)
    assert sorted(os.listdir(os.path.join(root, "train"))) == ["1.png", "2.png"]
    assert sorted(os.listdir(os.path.join(root, "test"))) == ["1.png"]
    assert sorted(os.listdir(root)) == ["test", "train", "train.json", "valid", "valid.json"]  # no staging left


def load_prepare_tool():
    """datasets/prepare_synthetic.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location(
        "prepare_synthetic", os.path.join(REPO_ROOT, "datasets", "prepare_synthetic.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.mark.slow
def test_prepare_synthetic_cli(tmp_path, capsys):
    tool = load_prepare_tool()
    root, grid = tmp_path / "digits", tmp_path / "grid.png"
    tool.main([str(root), "--train", "5", "--valid", "2", "--test", "2", "--seed", "1", "--grid", str(grid)])
    out = capsys.readouterr().out
    assert "train: 5 images" in out and str(root / "train.json") in out and "images/s" in out
    assert "sample grid" in out and read_image(str(grid)).shape == (
        80 + 4,
        6 * (3 * 80 + 4),
        3,
    )  # one row of 5 tiles + 1 blank
    with pytest.raises(SystemExit, match="already exists"):
        run_tool(tool.main, [str(root), "--train", "1"])


def load_demo_tool():
    """tools/demo.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("demo", os.path.join(REPO_ROOT, "tools", "demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def test_demo_knows_the_size_of_the_synthetic_data_it_finds(tmp_path):
    """make demo regenerates its synthetic data when the size, seed or a split's style it asks for
    changed (e.g. a new default, new fonts), and uses any other dataset (HW2's) as it is."""
    demo = load_demo_tool()
    root = str(tmp_path / "digits")
    generate_dataset(
        root, 4, 2, 2, seed=3, geometry=PARAMETRIC, num_test_ood=3, num_test_wide=2, num_free=2, num_valid_free=2
    )
    assert demo.synthetic_data_made(root) == (4, 3, 3, True)
    free_json = os.path.join(root, "free.json")
    os.rename(free_json, free_json + ".away")  # made before the digit-free split existed
    assert demo.synthetic_data_made(root) == (4, 3, 3, False)
    os.rename(free_json + ".away", free_json)
    train_json = os.path.join(root, "train.json")
    with open(train_json) as f:
        data = json.load(f)
    original = json.dumps(data)
    data["info"]["style"]["glyph_sources"] = data["info"]["style"]["glyph_sources"][:3]  # an older generator's
    with open(train_json, "w") as f:
        json.dump(data, f)
    assert demo.synthetic_data_made(root) == (4, 3, 3, False)
    data = json.loads(original)
    del data["info"]["style"]["glyphs_apart"]  # made before neighbouring glyphs were kept apart
    with open(train_json, "w") as f:
        json.dump(data, f)
    assert demo.synthetic_data_made(root) == (4, 3, 3, False)
    for layouts in (None, {"source": "parametric", "stats_format": 1}):  # before the layouts were recorded / copula
        data = json.loads(original)
        data["info"]["layouts"] = layouts
        with open(train_json, "w") as f:
            json.dump(data, f)
        assert demo.synthetic_data_made(root) == (4, 3, 3, False)
    with open(train_json, "w") as f:
        f.write(original)
    assert json.loads(original)["info"]["layouts"] == {"source": "parametric", "stats_format": 2}
    valid_json = os.path.join(root, "valid.json")
    with open(valid_json) as f:
        data = json.load(f)
    data["info"]["style"]["palette"] = ["white"]  # the held-out style changed
    with open(valid_json, "w") as f:
        json.dump(data, f)
    assert demo.synthetic_data_made(root) == (4, 3, 3, False)
    hw2 = tmp_path / "hw2"
    hw2.mkdir()
    (hw2 / "train.json").write_text(json.dumps({"images": [{"id": 1}], "annotations": [], "categories": []}))
    assert demo.synthetic_data_made(str(hw2)) is None
    assert demo.synthetic_data_made(str(tmp_path / "missing")) is None
    (hw2 / "train.json").write_text("{not json")
    assert demo.synthetic_data_made(str(hw2)) is None


@pytest.mark.slow
def test_demo_trains_again_when_its_data_or_config_changed_and_keeps_the_old_training(tmp_path):
    """A finished demo training is reused only under the train.json, config and opts it was made with;
    otherwise it is moved aside (not deleted) and the demo trains again."""
    demo = load_demo_tool()
    root = tmp_path / "digits"
    generate_dataset(str(root), 4, 2, 2, seed=3, geometry=PARAMETRIC)
    # The shipped config and its base, copied: an edit of the base is a config change too.
    base_text = open(os.path.join(REPO_ROOT, "configs", "Base-Digits-RCNN-FPN.yaml")).read()
    (tmp_path / "Base-Digits-RCNN-FPN.yaml").write_text(base_text)
    config = tmp_path / "digits_cpu.yaml"
    config_text = open(os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")).read()
    config.write_text(config_text)
    train_dir = str(tmp_path / "out" / "train")
    sig = demo.training_signature(str(root), str(config), ["SEED", "1"])
    assert demo.prepare_train_dir(train_dir, sig) is None  # nothing there yet
    with open(os.path.join(train_dir, "model_final.pth"), "wb") as f:
        f.write(b"trained on the first data")
    # Same data, config and opts: the training is kept (the demo skips it).
    assert demo.training_signature(str(root), str(config), ["SEED", "1"]) == sig
    assert demo.prepare_train_dir(train_dir, sig) is None
    assert os.path.isfile(os.path.join(train_dir, "model_final.pth"))
    # The data regenerated with another seed: moved aside, kept, and the train dir starts empty.
    generate_dataset(str(root), 4, 2, 2, seed=4, geometry=PARAMETRIC, overwrite=True)
    new_sig = demo.training_signature(str(root), str(config), ["SEED", "1"])
    assert new_sig != sig
    moved = demo.prepare_train_dir(train_dir, new_sig)
    assert moved and os.path.basename(moved).startswith("train.stale-")
    with open(os.path.join(moved, "model_final.pth"), "rb") as f:
        assert f.read() == b"trained on the first data"
    assert os.listdir(train_dir) == [demo.SIGNATURE_FILE]
    # A config edit, an edit of its base or other opts are stale too; a comment is not a change;
    # a training with no record (an older demo) is stale as well.
    config.write_text(config_text + "# a comment\n")
    assert demo.training_signature(str(root), str(config), ["SEED", "1"]) == new_sig
    assert "  BASE_LR: 0.001\n" in config_text and "  WARMUP_ITERS: 100\n" in base_text
    config.write_text(config_text.replace("  BASE_LR: 0.001\n", "  BASE_LR: 0.002\n"))
    assert demo.training_signature(str(root), str(config), ["SEED", "1"]) != new_sig
    config.write_text(config_text)
    (tmp_path / "Base-Digits-RCNN-FPN.yaml").write_text(base_text.replace("WARMUP_ITERS: 100", "WARMUP_ITERS: 101"))
    assert demo.training_signature(str(root), str(config), ["SEED", "1"]) != new_sig
    (tmp_path / "Base-Digits-RCNN-FPN.yaml").write_text(base_text)
    assert demo.training_signature(str(root), str(config), ["SEED", "1"]) == new_sig
    assert demo.training_signature(str(root), str(config), ["SEED", "2"]) != demo.training_signature(
        str(root), str(config), ["SEED", "1"]
    )
    os.remove(os.path.join(train_dir, demo.SIGNATURE_FILE))
    with open(os.path.join(train_dir, "last_checkpoint"), "w") as f:
        f.write("model_0000499.pth")
    assert demo.prepare_train_dir(train_dir, new_sig) is not None
    # The model a training starts from (MODEL.WEIGHTS: the ready model for the demo's config) is part of
    # it: other bytes under the same path are a change.
    start = tmp_path / "start.pth"
    start.write_bytes(b"one model")
    from_model = demo.training_signature(str(root), str(config), ["MODEL.WEIGHTS", str(start)])
    assert demo.training_signature(str(root), str(config), ["MODEL.WEIGHTS", str(start)]) == from_model
    start.write_bytes(b"the model trained again")
    assert demo.training_signature(str(root), str(config), ["MODEL.WEIGHTS", str(start)]) != from_model


@pytest.mark.slow
def test_demo_trains_in_two_processes_on_two_cores_and_names_a_bad_count(tmp_path):
    demo = load_demo_tool()
    assert [demo.training_processes("auto", cores) for cores in (1, 2, 16)] == [1, 2, 2]
    assert demo.training_processes("3", 2) == 3
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="--processes"):
            demo.training_processes(bad, 2)
    # Through the tool: one line naming the option, exit code 2, before any data is made.
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "demo.py"), "--processes", "0", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --processes")
    assert os.listdir(tmp_path) == []


def test_demo_prints_accuracy_by_ink_contrast():
    demo = load_demo_tool()
    by_contrast = {"0-1": {"images": 10, "accuracy": 0.4}, ">=5": {"images": 30, "accuracy": 0.9}}
    assert demo.contrast_line(by_contrast) == "0-1 40% of 10, >=5 90% of 30"


def test_demo_names_the_weakest_glyph_sources():
    demo = load_demo_tool()
    by_source = {
        "dotmatrix": {"images": 20, "accuracy": 0.6},
        "ttf:cmti10.ttf": {"images": 25, "accuracy": 0.56},
        "hershey:plain": {"images": 30, "accuracy": 0.9},
        "segment7-slant": {"images": 22, "accuracy": 0.95},
    }
    line = demo.weakest_sources(by_source, n=2)
    assert line == "ttf:cmti10.ttf 56% of 25, dotmatrix 60% of 20"


@pytest.mark.slow
def test_fonts_of_a_folder_join_the_training_fonts_except_held_out_families_and_non_digits(tmp_path, capsys):
    import shutil

    from digit_detectron.data.synthetic.glyphs import collect_fonts, default_font_dir
    from digit_detectron.data.synthetic.styles import split_styles, training_fonts

    folder = tmp_path / "fonts"
    (folder / "sub").mkdir(parents=True)
    for name in ("DejaVuSansMono-Oblique.ttf", "cmsy10.ttf", "LastResortHE-Regular.ttf", "DejaVuSerif.ttf",
                 "DejaVuSans.ttf", "cmmi10.ttf"):  # fmt: skip
        shutil.copy(os.path.join(default_font_dir(), name), folder / name)
    shutil.copy(
        os.path.join(default_font_dir(), "DejaVuSansMono-Oblique.ttf"), folder / "sub" / "DejaVuSansMono-Oblique.ttf"
    )
    (folder / "broken.ttf").write_bytes(b"not a font")
    (folder / "readme.txt").write_text("not a font file name")
    fonts, skipped = training_fonts([str(folder)])
    assert fonts == [str(folder / "DejaVuSansMono-Oblique.ttf")]
    why = {os.path.relpath(p, folder): reason for p, reason in skipped.items()}
    assert "do not look like digits" in why["cmsy10.ttf"]  # a symbol font maps "0".."9" to symbols
    assert "same box" in why["LastResortHE-Regular.ttf"]
    assert "DejaVuSerif is held out" in why["DejaVuSerif.ttf"] and "cmmi is held out" in why["cmmi10.ttf"]
    assert (
        "training font already" in why["DejaVuSans.ttf"]
        and "training font already" in why["sub/DejaVuSansMono-Oblique.ttf"]
    )
    assert why["broken.ttf"].startswith("cannot draw the digits") and "readme.txt" not in why
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        collect_fonts([str(tmp_path / "no_such_folder")])
    # The in-style side gains the font (the split stays disjoint, the held-out side unchanged) ...
    styles = split_styles(fonts)
    assert styles["train"].glyph_sources[-1] == f"ttf:{fonts[0]}" and styles["valid_instyle"] is styles["train"]
    assert styles["valid"] is OUT_OF_STYLE and not any(overlap(styles["train"], OUT_OF_STYLE).values())
    with pytest.raises(ValueError, match="DejaVuSerif.ttf: font family DejaVuSerif is held out"):
        split_styles([str(folder / "DejaVuSerif.ttf")])
    # ... and prepare_synthetic.py draws numbers in it, recorded in the json, skips listed with their reason.
    root = tmp_path / "data"
    load_prepare_tool().main([str(root), "--train", "40", "--valid", "2", "--test", "0", "--test-ood", "0",
                            "--valid-instyle", "0", "--fonts", str(folder)])  # fmt: skip
    out = capsys.readouterr().out
    assert f"font skipped: {folder / 'cmsy10.ttf'}: its glyphs" in out and "fonts: 1 added" in out
    with open(root / "train.json") as f:
        train = json.load(f)
    assert train["info"]["style"] == styles["train"].info()
    assert f"ttf:{fonts[0]}" in {img["glyph_source"] for img in train["images"]}
