"""analysis.visualization / drawing and tools/visualize.py on generated images, prediction files and a checkpoint."""

import csv
import importlib.util
import json
import math
import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from PIL import Image

from digit_detectron import get_digit_cfg
from digit_detectron.data import read_image, register_digits
from digit_detectron.evaluation.drawing import (
    BORDER,
    CAPTION_HEIGHT,
    GAP,
    MAX_PANEL_WIDTH,
    MIN_PANEL_WIDTH,
    PANEL_HEIGHT,
    RIGHT_COLOR,
    UNKNOWN_COLOR,
    WRONG_COLOR,
    draw_panel,
    draw_sample,
    make_grid,
)
from digit_detectron.evaluation.number_accuracy import record_ground_truth as ground_truth
from digit_detectron.utils.cli import run_tool

from conftest import REPO_ROOT, tiny_model_opts, write_digit_dataset

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VISUALIZE = load_tool("visualize")


def run_visualize(*argv):
    return run_tool(VISUALIZE.main, [str(a) for a in argv])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 labelled valid images and 3 test images registered as vis_{train,valid,test}."""
    root = write_digit_dataset(tmp_path_factory.mktemp("vis") / "digits", counts=(1, 8, 3), seed=3)
    register_digits(root, "vis")
    return root


def write_predictions(dataset, out_dir, wrong_ids=(), with_csv=True):
    """pred.json = the true boxes (score 0.9); pred.csv = the true numbers, off by one for ``wrong_ids``."""
    os.makedirs(out_dir, exist_ok=True)
    results, rows = [], []
    for record in DatasetCatalog.get("vis_valid"):
        truth = ground_truth(record)
        for (x0, y0, x1, y1), digit in zip(truth["boxes"], truth["classes"]):
            results.append(
                {
                    "image_id": record["image_id"],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": 0.9,
                    "category_id": int(digit) + 1,
                }
            )
        rows.append((record["image_id"], truth["number"] + (1 if record["image_id"] in wrong_ids else 0)))
    with open(os.path.join(out_dir, "pred.json"), "w") as f:
        json.dump(results, f)
    if with_csv:
        with open(os.path.join(out_dir, "pred.csv"), "w", newline="") as f:
            csv.writer(f).writerows([("image_id", "pred_label"), *rows])
    return os.path.join(out_dir, "pred.json")


def load_rgb(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def expected_size(record, panels):
    """(width, height) of a sample PNG with ``panels`` panels of ``record``'s image."""
    panel_w = max(MIN_PANEL_WIDTH, round(record["width"] * PANEL_HEIGHT / record["height"]))
    return panels * panel_w + (panels - 1) * GAP + 2 * BORDER, PANEL_HEIGHT + CAPTION_HEIGHT + 2 * BORDER


def frame_color(pixels):
    """The colour of the whole BORDER-px frame, or None if it is not uniform."""
    frame = np.concatenate(
        [
            pixels[:BORDER].reshape(-1, 3),
            pixels[-BORDER:].reshape(-1, 3),
            pixels[:, :BORDER].reshape(-1, 3),
            pixels[:, -BORDER:].reshape(-1, 3),
        ]
    )
    colors = np.unique(frame, axis=0)
    return tuple(int(c) for c in colors[0]) if len(colors) == 1 else None


def has_color(pixels, color):
    return bool((pixels == np.asarray(color, np.uint8)).all(axis=-1).any())


@pytest.mark.slow
def test_pred_files_wrong_numbers_are_framed_red(dataset, tmp_path):
    records = {r["image_id"]: r for r in DatasetCatalog.get("vis_valid")}
    wrong = set(sorted(records)[::3])
    pred_json = write_predictions(dataset, tmp_path / "run", wrong_ids=wrong)
    out = tmp_path / "vis"
    paths, grid, counts = run_visualize(
        "--dataset", "vis_valid", "--predictions", pred_json, "--output", out, "--grid-size", "4"
    )
    assert counts == {"drawn": 8, "wrong": len(wrong), "unreadable": 0}
    assert sorted(os.listdir(out)) == sorted([f"{i}.png" for i in records] + ["grid.png"])
    samples = []
    for image_id, record in records.items():
        pixels = load_rgb(out / f"{image_id}.png")
        assert (pixels.shape[1], pixels.shape[0]) == expected_size(record, panels=2)
        assert pixels.std() > 0
        color = WRONG_COLOR if image_id in wrong else RIGHT_COLOR
        assert frame_color(pixels) == color
        # The captions are on the frame colour too; the other colour appears nowhere.
        caption = pixels[BORDER + PANEL_HEIGHT : -BORDER, BORDER:-BORDER]
        assert has_color(caption, color)
        assert not has_color(pixels, RIGHT_COLOR if image_id in wrong else WRONG_COLOR)
        # Boxes and labels were drawn over the upscaled image, whose left panel fills its width.
        plain = draw_panel(read_image(record["file_name"], "RGB"), np.zeros((0, 4)), [])
        panel = pixels[BORDER : BORDER + PANEL_HEIGHT, BORDER : BORDER + plain.shape[1]]
        assert plain.shape[1] > MIN_PANEL_WIDTH
        assert 0.01 < (panel != plain).any(axis=-1).mean() < 0.5
        samples.append(pixels)
    grid_pixels = load_rgb(grid)
    cell_w = max(s.shape[1] for s in samples[:4])
    cell_h = max(s.shape[0] for s in samples[:4])
    assert grid_pixels.shape[:2] == (2 * cell_h + GAP, 2 * cell_w + GAP)  # 4 samples: 2 x 2
    assert has_color(grid_pixels, WRONG_COLOR) == bool(wrong & set(sorted(records)[:4]))


def test_numbers_read_from_pred_json_alone(dataset, tmp_path):
    """Without pred.csv the reader reads the boxes: the true boxes give the true numbers, all green."""
    pred_json = write_predictions(dataset, tmp_path / "run", with_csv=False)
    paths, grid, counts = run_visualize(
        "--dataset", "vis_valid", "--predictions", pred_json, "--output", tmp_path / "vis", "--num", "3"
    )
    assert counts["drawn"] == 3 and counts["wrong"] == 0 and len(paths) == 3
    assert all(frame_color(load_rgb(p)) == RIGHT_COLOR for p in paths)


def test_wrong_only(dataset, tmp_path):
    records = sorted(r["image_id"] for r in DatasetCatalog.get("vis_valid"))
    pred_json = write_predictions(dataset, tmp_path / "run", wrong_ids={records[1], records[5]})
    paths, grid, counts = run_visualize(
        "--dataset", "vis_valid", "--predictions", pred_json, "--output", tmp_path / "vis", "--wrong-only"
    )
    assert sorted(os.path.basename(p) for p in paths) == sorted(f"{i}.png" for i in (records[1], records[5]))
    assert all(frame_color(load_rgb(p)) == WRONG_COLOR for p in paths)


def test_predictions_of_another_split_are_refused(dataset, tmp_path):
    pred_json = write_predictions(dataset, tmp_path / "run")
    with pytest.raises(SystemExit) as info:
        run_visualize("--input", os.path.join(dataset, "test"), "--predictions", pred_json, "--output", tmp_path / "v")
    assert "pred.csv holds none of the 3 image ids" in str(info.value)


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("pred.json", "{not json", "malformed json"),
        ("pred.json", '{"image_id": 1}', "expected a json list"),
        ("pred.json", '[{"image_id": 9, "bbox": [0, 0, 5], "score": 0.5, "category_id": 3}]', "detection 0"),
        ("pred.json", '[{"image_id": 9, "bbox": [0, 0, 5, 5], "score": 0.5, "category_id": 0}]', "not in 1..10"),
        ("pred.csv", "id,label\n9,1\n", "header 'image_id,pred_label'"),
        ("pred.csv", "image_id,pred_label\n9,seven\n", ":2: expected two integers"),
    ],
)
def test_bad_prediction_files_name_the_file(dataset, tmp_path, name, content, problem):
    pred_json = write_predictions(dataset, tmp_path / "run")
    (tmp_path / "run" / name).write_text(content)
    with pytest.raises(SystemExit) as info:
        run_visualize("--dataset", "vis_valid", "--predictions", pred_json, "--output", tmp_path / "v")
    assert str(tmp_path / "run" / name) in str(info.value) and problem in str(info.value)


@pytest.mark.slow
def test_random_init_checkpoint_on_a_folder(dataset, tmp_path):
    """A model run on an unlabelled folder with one corrupt file: grey frames, one panel, the bad file skipped."""
    opts = tiny_model_opts(tmp_path)
    torch.manual_seed(0)
    model = build_model(get_digit_cfg(CONFIG, opts))
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_random")
    folder = tmp_path / "photos"
    folder.mkdir()
    for f in os.listdir(os.path.join(dataset, "test")):
        (folder / f).write_bytes(open(os.path.join(dataset, "test", f), "rb").read())
    (folder / "999.png").write_bytes(b"not a png")
    paths, grid, counts = run_visualize(
        "--config-file",
        CONFIG,
        "--input",
        folder,
        "--output",
        tmp_path / "vis",
        "--score-thresh",
        "0",
        *opts,
        "MODEL.WEIGHTS",
        tmp_path / "model_random.pth",
    )
    assert counts == {"drawn": 3, "wrong": 0, "unreadable": 1}
    for path in paths:
        pixels = load_rgb(path)
        with Image.open(folder / os.path.basename(path)) as im:
            w, h = im.size
        assert (pixels.shape[1], pixels.shape[0]) == expected_size({"width": w, "height": h}, panels=1)
        assert frame_color(pixels) == UNKNOWN_COLOR
    assert load_rgb(grid).shape[:2] == (
        2 * (PANEL_HEIGHT + CAPTION_HEIGHT + 2 * BORDER) + GAP,
        2 * max(load_rgb(p).shape[1] for p in paths) + GAP,
    )


def test_missing_checkpoint_is_a_clear_error(dataset, tmp_path):
    with pytest.raises(SystemExit) as info:
        run_visualize(
            "--config-file",
            CONFIG,
            "--dataset",
            "vis_valid",
            "--output",
            tmp_path / "v",
            "MODEL.WEIGHTS",
            tmp_path / "nope.pth",
        )
    assert "nope.pth" in str(info.value) and "not found" in str(info.value)


@pytest.mark.parametrize("h, w, panel_w", [(40, 10, MIN_PANEL_WIDTH), (40, 2000, MAX_PANEL_WIDTH), (300, 600, 512)])
def test_sample_size_for_narrow_wide_and_large_images(h, w, panel_w):
    image = np.random.default_rng(0).integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    prediction = {
        "boxes": np.array([[1.0, 1.0, w / 2, h / 2]]),
        "scores": np.array([0.8]),
        "classes": np.array([4]),
        "number": 4,
    }
    truth = {"boxes": prediction["boxes"], "classes": np.array([4]), "number": 4}
    sample = draw_sample(image, prediction, truth)
    assert sample.shape == (PANEL_HEIGHT + CAPTION_HEIGHT + 2 * BORDER, 2 * panel_w + GAP + 2 * BORDER, 3)
    assert frame_color(sample) == RIGHT_COLOR
    assert frame_color(draw_sample(image, prediction)) == UNKNOWN_COLOR


def test_make_grid_layout():
    images = [np.full((10, 20 + i, 3), i, np.uint8) for i in range(5)]
    grid = make_grid(images)
    cols = math.ceil(math.sqrt(5))
    assert grid.shape == (2 * 10 + GAP, cols * 24 + (cols - 1) * GAP, 3)
    assert (grid[:10, 2:22] == 0).all() and (grid[10 + GAP :, 24 + GAP : 24 + GAP + 24] == 4).all()
