"""benchmarks/independent_numbers.py: the ruler rendered without the project's generator."""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageFont

from digit_detectron.data.datasets import load_digits_json
from digit_detectron.data.synthetic.layout import Layout, SVHNGeometrySampler

from conftest import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "independent_numbers.py")
_spec = importlib.util.spec_from_file_location("independent_numbers", SCRIPT)
ind = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ind)


def write_geometry(path):
    """Five real-looking SVHN layouts: overlapping neighbours, a narrow "1", a single digit, one box past the edge."""
    images = [(1, 120, 60), (2, 90, 45), (3, 400, 200), (4, 60, 40), (5, 100, 50)]
    boxes = {
        1: [(30, 10, 22, 40, 2), (48, 10, 22, 40, 6), (66, 12, 24, 40, 10)],  # overlapping boxes, a "0" (id 10)
        2: [(20, 5, 14, 36, 2), (36, 5, 18, 36, 8)],  # a narrow box labelled "1"
        3: [(100, 40, 80, 140, 4), (178, 42, 82, 138, 5), (258, 40, 80, 140, 6)],  # large: scaled to MAX_SIDE
        4: [(20, 5, 20, 30, 8)],
        5: [(80, 10, 25, 45, 3)],  # reaches past the right edge
    }
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i, w, h in images],
        "annotations": [
            {"id": 10 * i + k, "image_id": i, "bbox": list(b[:4]), "category_id": b[4]}
            for i, bs in boxes.items()
            for k, b in enumerate(bs)
        ],
    }
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def pillow_font_file(path):
    """Pillow's built-in scalable face (Aileron Regular) as a .ttf file: a font no generator style uses."""
    with open(path, "wb") as f:
        f.write(ImageFont.load_default(10).font_bytes)
    return str(path)


def test_every_digit_is_drawn_inside_its_box_and_apart_from_its_neighbour(tmp_path):
    sampler = SVHNGeometrySampler(write_geometry(tmp_path / "geometry.json"))
    fonts, _ = ind.load_fonts([])
    photos = ind._photos()
    drawn = 0
    for image_id in range(60):
        rng = np.random.default_rng([7, image_id])
        layout = sampler(rng)
        image, boxes, digits, ink, font = ind.render_number(rng, layout, fonts, photos)
        assert font == "pillow:default"
        assert image.mode == "RGB" and max(image.size) <= ind.MAX_SIDE
        assert list(digits) == list(layout.digits)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= image.width + 1e-6).all()
        # Ink inside the label box, with its height below the box's (annotators box a digit loosely).
        assert (ink[:, 0] >= np.floor(boxes[:, 0])).all() and (ink[:, 1] >= np.floor(boxes[:, 1])).all()
        assert (ink[:, 2] <= boxes[:, 0] + boxes[:, 2] + 1).all() and (ink[:, 3] <= boxes[:, 1] + boxes[:, 3] + 1).all()
        assert ((ink[:, 3] - ink[:, 1]) <= boxes[:, 3] + 1e-6).all()
        # Left to right, a glyph never reaches into the next one, even where the boxes overlap.
        order = np.argsort(boxes[:, 0])
        assert (ink[order[1:], 0] >= ink[order[:-1], 2]).all()
        drawn += len(boxes)
    assert drawn > 60


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    geometry = write_geometry(tmp_path / "geometry.json")
    fonts, _ = ind.load_fonts([pillow_font_file(tmp_path / "Aileron-Regular.ttf")])
    assert len(fonts) == 2  # the built-in face and its file (another name, the same face)

    def digest(root, seed):
        ind.generate(str(root), geometry, fonts, count=6, seed=seed, progress=False)
        files = sorted(os.listdir(root / "test_ood"))
        return [hashlib.sha256((root / "test_ood" / f).read_bytes()).hexdigest() for f in files]

    first = digest(tmp_path / "a", 0)
    assert digest(tmp_path / "b", 0) == first
    assert digest(tmp_path / "c", 1) != first
    assert (tmp_path / "a" / "test_ood.json").read_bytes() == (tmp_path / "b" / "test_ood.json").read_bytes()


def test_the_written_split_is_a_digit_dataset_the_project_evaluates(tmp_path):
    geometry = write_geometry(tmp_path / "geometry.json")
    fonts, _ = ind.load_fonts([])
    path = ind.generate(str(tmp_path), geometry, fonts, count=8, seed=0, progress=False)
    info = json.load(open(path))["info"]
    assert info["generator"] == "independent" and info["fonts"] == ["pillow:default"] and info["count"] == 8
    assert {im["glyph_source"] for im in json.load(open(path))["images"]} == {"pillow:default"}
    dicts = load_digits_json(path, str(tmp_path / "test_ood"))
    assert len(dicts) == 8
    for d in dicts:
        assert d["glyph_source"] == "pillow:default"  # read by the evaluation report's accuracy by font
        with Image.open(d["file_name"]) as im:
            assert im.size == (d["width"], d["height"])
        assert 1 <= len(d["annotations"]) <= 3
        assert all(0 <= a["category_id"] <= 9 for a in d["annotations"])


def test_fonts_of_the_generator_and_fonts_without_digits_are_refused(tmp_path):
    import matplotlib

    mpl_fonts = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")
    ok = pillow_font_file(tmp_path / "Aileron-Regular.ttf")
    trained = pillow_font_file(tmp_path / "Lato-Bold.ttf")  # an extra training font (datasets/fetch_fonts.py)
    wheel = tmp_path / "font_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(ok, "font_pkg/files/Aileron-Bold.otf")
        z.writestr("font_pkg/__init__.py", "")
    fonts, skipped = ind.load_fonts(
        [ok, str(wheel), os.path.join(mpl_fonts, "DejaVuSans.ttf"), os.path.join(mpl_fonts, "cmr10.ttf"),
         os.path.join(mpl_fonts, "LastResortHE-Regular.ttf"), trained],
        include_default=False,
    )  # fmt: skip
    names = [os.path.basename(n.split("!")[-1]) for n, _ in fonts]
    assert names == ["Aileron-Regular.ttf", "Aileron-Bold.otf"]
    why = {os.path.basename(n): w for n, w in skipped.items()}
    assert why["DejaVuSans.ttf"] == why["cmr10.ttf"] == why["Lato-Bold.ttf"] == "a family the project's generator draws"
    assert why["LastResortHE-Regular.ttf"] == "does not draw ten different digits"
    with pytest.raises(ind.FontError, match="notes.txt: not a font file"):
        (tmp_path / "notes.txt").write_text("x")
        ind.load_fonts([str(tmp_path / "notes.txt")])


@pytest.mark.slow
def test_command_line_writes_the_split_and_names_a_missing_font(tmp_path):
    geometry = write_geometry(tmp_path / "geometry.json")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    run = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "out"), "--geometry", geometry, "--count", "4"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "4 images ->" in run.stdout and len(os.listdir(tmp_path / "out" / "test_ood")) == 4
    missing = tmp_path / "no_such_fonts"
    command = [sys.executable, SCRIPT, str(tmp_path / "o2"), "--geometry", geometry, "--fonts", str(missing)]
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == f"error: {missing}: font file or folder not found"
    assert not (tmp_path / "o2" / "test_ood.json").exists()


def test_its_photos_are_none_that_the_generator_draws():
    from digit_detectron.data.synthetic.styles import STYLES

    drawn = {photo for style in STYLES.values() for photo in style.photos}
    file_stem = {"immunohistochemistry": "ihc"}  # scikit-image's function name -> the file the generator names
    assert drawn and not {file_stem.get(p, p) for p in ind.PHOTOS} & drawn
    assert len(ind._photos()) == len(ind.PHOTOS)


def test_a_layout_without_labels_draws_digits_of_its_own():
    fonts, _ = ind.load_fonts([])
    layout = Layout(80, 40, np.array([[10.0, 5, 20, 30], [32, 5, 20, 30]]), None)
    _, _, digits, _, _ = ind.render_number(np.random.default_rng(0), layout, fonts, ind._photos())
    assert len(digits) == 2 and all(0 <= d <= 9 for d in digits)


def test_test_framing_widens_the_image_around_a_smaller_number(tmp_path):
    """--framing test: the same layouts (same seed) as wider images in which the number spans less of the width."""
    geometry = write_geometry(tmp_path / "geometry.json")
    fonts, _ = ind.load_fonts([])

    def shares(framing):
        path = ind.generate(str(tmp_path / framing), geometry, fonts, count=20, seed=0, progress=False, framing=framing)
        data = json.load(open(path))
        assert data["info"]["framing"] == framing
        boxes = {}
        for a in data["annotations"]:
            boxes.setdefault(a["image_id"], []).append(a["bbox"])
        out = []
        for im in data["images"]:
            b = np.asarray(boxes[im["id"]])
            span = (b[:, 0] + b[:, 2]).max() - b[:, 0].min()
            out.append((im["width"] / im["height"], span / im["width"]))
            with Image.open(tmp_path / framing / "test_ood" / im["file_name"]) as image:
                assert image.size == (im["width"], im["height"])
        return np.asarray(out)

    train, test = shares("train"), shares("test")  # the same seed: the same real layout per image id
    ratio = test / train
    assert 1.03 < ratio[:, 0].mean() < 1.12  # the image ~1.07x wider (layout.TEST_ASPECT_RATIO)
    assert 0.6 < ratio[:, 1].mean() < 0.8  # the number ~0.69 of its share of the width (TEST_SHARE_W_RATIO)
    with pytest.raises(ValueError, match="framing"):
        ind.generate(str(tmp_path / "x"), geometry, fonts, count=1, framing="square", progress=False)
