"""tools/predict.py and digit_detectron.inference.predictor on generated images with a randomly initialised model."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from digit_detectron import get_digit_cfg
from digit_detectron.data import DatasetError
from digit_detectron.inference.predictor import DigitPredictor, list_input_images

from conftest import REPO_ROOT, draw_digits, save_random_checkpoint, tiny_model_opts

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")
PREDICT = os.path.join(REPO_ROOT, "tools", "predict.py")
READABLE = {3: [1, 2], 7: [5], 10: [9, 0, 4]}  # image id -> digits drawn
UNREADABLE = (5, 12)  # zero bytes, truncated png


def load_tool():
    spec = importlib.util.spec_from_file_location("predict_tool", PREDICT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_random_checkpoint(tmp_path_factory.mktemp("model"), CONFIG)


def model_opts(checkpoint, output_dir):
    # Score thresholds 0 make the random model's boxes reach pred.json and the reader.
    return tiny_model_opts(output_dir) + [
        "MODEL.WEIGHTS",
        checkpoint,
        "DIGITS.PRED_JSON_SCORE_THRESH",
        "0.0",
        "DIGITS.READER.SCORE_THRESHS",
        "(0.0,)",
    ]


def write_image(path, digits, height, seed):
    image, _ = draw_digits(np.random.default_rng(seed), digits, height=height)
    cv2.imwrite(str(path), image)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for (image_id, digits), height in zip(READABLE.items(), (32, 48, 120)):  # 120: resized down for the model
        write_image(folder / f"{image_id}.png", digits, height, image_id)
    (folder / "5.png").write_bytes(b"")
    (folder / "12.png").write_bytes((folder / "3.png").read_bytes()[:150])
    (folder / "notes.txt").write_text("not an image")
    return folder


def image_sizes(folder):
    return {
        int(os.path.splitext(f)[0]): cv2.imread(str(folder / f)).shape[:2]
        for f in os.listdir(folder)
        if f.endswith(".png") and int(os.path.splitext(f)[0]) in READABLE
    }


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [(int(i), int(label)) for i, label in rows[1:]]


@pytest.mark.slow
def test_predict_tool_writes_pred_json_and_csv(checkpoint, images, tmp_path):
    out = tmp_path / "pred"
    proc = subprocess.run(
        [
            sys.executable,
            PREDICT,
            "--config-file",
            CONFIG,
            "--input",
            str(images),
            "--output",
            str(out),
            "--batch-size",
            "2",
            *model_opts(checkpoint, tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Wrote {out / 'pred.json'} and {out / 'pred.csv'}" in proc.stdout
    assert "skipped 2 unreadable image(s)" in proc.stdout
    assert "5.png: empty (zero-byte) file" in proc.stdout and "12.png: corrupt or truncated" in proc.stdout
    assert "images/s" in proc.stdout

    boxes = json.loads((out / "pred.json").read_text())
    sizes = image_sizes(images)
    assert isinstance(boxes, list) and boxes
    assert {b["image_id"] for b in boxes} == set(READABLE)  # no boxes for unreadable images
    for b in boxes:
        assert set(b) == {"image_id", "bbox", "score", "category_id"}
        assert b["category_id"] in range(1, 11)
        assert 0.0 <= b["score"] <= 1.0
        x, y, w, h = b["bbox"]
        assert all(round(v, 2) == v for v in b["bbox"])
        height, width = sizes[b["image_id"]]
        assert x >= 0 and y >= 0 and w > 0 and h > 0
        assert x + w <= width + 1e-6 and y + h <= height + 1e-6
    # Image 10 is resized to 64 px tall (INPUT.MIN_SIZE_TEST) for the model; boxes come back in the
    # original pixels, so some reach past the resized width.
    height, width = sizes[10]
    assert max(b["bbox"][0] + b["bbox"][2] for b in boxes if b["image_id"] == 10) > width * 64 / height

    header, rows = read_csv(out / "pred.csv")
    assert header == ["image_id", "pred_label"]
    assert [i for i, _ in rows] == [3, 5, 7, 10, 12]  # every image, numerically sorted
    labels = dict(rows)
    assert labels[5] == labels[12] == -1
    assert all(0 <= labels[i] < 10**6 for i in READABLE)  # reader at 0.0, at most MAX_DIGITS = 6


@pytest.mark.slow
def test_non_integer_file_stem_is_a_clear_error(images, tmp_path):
    folder = tmp_path / "named"
    folder.mkdir()
    (folder / "house.png").write_bytes((images / "3.png").read_bytes())
    proc = subprocess.run(
        [
            sys.executable,
            PREDICT,
            "--config-file",
            CONFIG,
            "--input",
            str(folder),
            "--output",
            str(tmp_path / "p"),
            "MODEL.WEIGHTS",
            "unused.pth",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert proc.returncode != 0
    assert "house.png: file stem 'house' is not an integer image id" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_id_map_names_the_images(checkpoint, images, tmp_path):
    tool = load_tool()
    folder = tmp_path / "named"
    folder.mkdir()
    (folder / "front.png").write_bytes((images / "3.png").read_bytes())
    (folder / "back.png").write_bytes((images / "7.png").read_bytes())
    flat = tmp_path / "ids.json"
    flat.write_text(json.dumps({"front.png": 21, "back.png": 4}))
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [{"id": 21, "file_name": "front.png"}, {"id": 4, "file_name": "back.png"}]}))
    for id_map in (flat, coco):
        out = tmp_path / id_map.stem
        args = [
            "--config-file",
            CONFIG,
            "--input",
            str(folder / "*.png"),
            "--output",
            str(out),
            "--id-map",
            str(id_map),
        ]
        tool.main(args + model_opts(checkpoint, tmp_path))
        _, rows = read_csv(out / "pred.csv")
        assert [i for i, _ in rows] == [4, 21] and all(label >= 0 for _, label in rows)
        assert {b["image_id"] for b in json.loads((out / "pred.json").read_text())} == {4, 21}

    flat.write_text(json.dumps({"front.png": 21}))
    with pytest.raises(DatasetError, match="back.png.*not in the id map"):
        tool.main(args[:-1] + [str(flat)] + model_opts(checkpoint, tmp_path))
    flat.write_text(json.dumps({"front.png": 21, "back.png": 21}))
    with pytest.raises(DatasetError, match="both have image id 21"):
        tool.main(args[:-1] + [str(flat)] + model_opts(checkpoint, tmp_path))


def test_test_mode_keeps_only_confident_boxes(checkpoint, images, tmp_path):
    tool = load_tool()
    argv = ["--config-file", CONFIG, "--input", str(images), "--output", str(tmp_path / "p"), "--test-mode"]
    argv += model_opts(checkpoint, tmp_path)
    cfg = tool.setup_cfg(tool.get_parser().parse_args(argv))
    assert cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST == 0.3 and cfg.DIGITS.PRED_JSON_SCORE_THRESH == 0.7
    tool.main(argv)
    scores = [b["score"] for b in json.loads((tmp_path / "p" / "pred.json").read_text())]
    assert scores and all(s >= 0.7 for s in scores)


@pytest.mark.slow
def test_predictor_score_threshold_and_original_pixels(checkpoint, images, tmp_path):
    cfg = get_digit_cfg(CONFIG, tiny_model_opts(tmp_path) + ["MODEL.WEIGHTS", checkpoint])
    assert DigitPredictor(cfg).model.roi_heads.box_predictor.test_score_thresh == 0.05  # pred.json's
    cfg.merge_from_list(["DIGITS.PRED_JSON_SCORE_THRESH", "0.5", "DIGITS.READER.SCORE_THRESHS", "(0.7, 0.2)"])
    predictor = DigitPredictor(cfg)
    assert predictor.model.roi_heads.box_predictor.test_score_thresh == 0.2  # the reader's lowest
    files = list_input_images(str(images))
    assert [os.path.basename(f) for f in files] == ["10.png", "12.png", "3.png", "5.png", "7.png"]
    run = predictor.predict_files(files, batch_size=3, progress=False)
    assert sorted(run.failures) == [str(images / "12.png"), str(images / "5.png")]
    sizes = image_sizes(images)
    for path, instances in run.instances.items():
        assert instances.image_size == sizes[int(os.path.basename(path)[:-4])]


def test_missing_weights_are_a_clear_error(tmp_path):
    cfg = get_digit_cfg(CONFIG, tiny_model_opts(tmp_path) + ["MODEL.WEIGHTS", str(tmp_path / "nope.pth")])
    with pytest.raises(FileNotFoundError, match="nope.pth: checkpoint"):
        DigitPredictor(cfg)
    cfg.MODEL.WEIGHTS = ""
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty"):
        DigitPredictor(cfg)
