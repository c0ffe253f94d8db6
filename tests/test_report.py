"""The evaluation report (evaluation/report.py) on hand-made predictions with known answers."""

import json
import os

import numpy as np
import pytest

from digit_detectron.data.datasets import get_dataset_dicts, register_digits
from digit_detectron.evaluation.number_accuracy import record_ground_truth
from digit_detectron.evaluation.report import (
    BACKGROUND,
    ERROR_KINDS,
    INK_CONTRAST_BANDS,
    coco_ap_tables,
    confusion_matrix,
    headline,
    match_read_digits,
    number_error_kind,
    pr_curves,
    write_report,
)
from digit_detectron.modeling.number_reader import NumberReader

from conftest import REPO_ROOT, write_digit_dataset


@pytest.mark.parametrize(
    "read, truth, kind",
    [
        ("123", "123", "correct"),
        ("0123", "123", "leading zero"),
        ("", "45", "nothing detected"),
        ("12", "123", "missed digit"),
        ("1234", "123", "extra digit"),
        ("124", "123", "wrong digit"),
        ("321", "123", "wrong order"),
        ("13", "123", "missed digit"),
        ("", "", "correct"),
        ("0", "", "extra digit"),  # a wall without digits read as "0" is a number read where there is none
        ("7", "", "extra digit"),
    ],
)
def test_each_error_kind(read, truth, kind):
    assert number_error_kind(read, truth) == kind
    assert kind in ERROR_KINDS


def test_confusion_matrix_of_hand_made_boxes():
    gt_boxes = np.array([[0, 0, 10, 20], [12, 0, 22, 20], [24, 0, 34, 20]], float)
    gt_classes = np.array([1, 2, 3])
    read_boxes = np.array([[0, 0, 10, 20], [12, 1, 22, 21], [60, 0, 70, 20], [1, 0, 11, 20]], float)
    read_classes = np.array([1, 7, 5, 4])
    read_scores = np.array([0.9, 0.8, 0.7, 0.6])  # the "4" on the first digit comes after the "1" took it
    pairs = match_read_digits(read_boxes, read_classes, read_scores, gt_boxes, gt_classes)
    assert sorted(pairs) == sorted([(1, 1), (2, 7), (BACKGROUND, 5), (BACKGROUND, 4), (3, BACKGROUND)])
    matrix = confusion_matrix(pairs)
    assert matrix.shape == (11, 11) and matrix.sum() == 5
    assert matrix[1, 1] == 1 and matrix[2, 7] == 1 and matrix[10, 5] == 1 and matrix[10, 4] == 1 and matrix[3, 10] == 1


def _random_images(seed=0, count=12):
    rng = np.random.default_rng(seed)
    images = []
    for image_id in range(count):
        n = int(rng.integers(1, 5))
        x = np.cumsum(rng.uniform(12, 20, n))
        gt = np.stack([x, np.full(n, 5.0), x + 10, np.full(n, 25.0)], 1)
        gt_classes = rng.integers(0, 10, n)
        dets, scores, classes = [], [], []
        for box, cls in zip(gt, gt_classes):
            if rng.random() < 0.85:  # found, sometimes shifted or with the wrong class
                dets.append(box + rng.normal(0, 2.0, 4))
                classes.append(cls if rng.random() < 0.8 else int(rng.integers(0, 10)))
                scores.append(float(rng.uniform(0.3, 1.0)))
        for _ in range(int(rng.integers(0, 3))):  # false positives
            x0 = float(rng.uniform(0, 80))
            dets.append(np.array([x0, 0, x0 + 9, 18]))
            classes.append(int(rng.integers(0, 10)))
            scores.append(float(rng.uniform(0.05, 0.9)))
        images.append((image_id, gt, gt_classes, np.array(dets).reshape(-1, 4), np.array(scores), np.array(classes)))
    return images


def test_pr_curves_equal_pycocotools():
    images = _random_images()
    ours = pr_curves(images)
    coco = coco_ap_tables(images)["coco_precision_iou50"]  # [class][recall point], -1 without ground truth
    for k in range(10):
        if ours[k]["ap"] < 0:
            assert max(coco[k]) == -1
            continue
        assert np.allclose(ours[k]["precision"], coco[k], atol=1e-12), k
        assert ours[k]["ap"] * 100 == pytest.approx(coco_ap_tables(images)["per_class"][str(k)]["AP50"])
    assert any(0 < ours[k]["ap"] < 1 for k in range(10))  # the data is not trivially perfect


@pytest.mark.slow
def test_report_files_and_headline(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(2, 6, 1))
    register_digits(str(root), "report")
    records = get_dataset_dicts("report_valid")
    predictions = {}
    expected = {}
    for i, record in enumerate(records):
        truth = record_ground_truth(record)
        boxes, classes = truth["boxes"].copy(), truth["classes"].copy()
        scores = np.full(len(boxes), 0.9)
        if i == 0:  # drop a digit (or everything if there is one)
            boxes, classes, scores = boxes[1:], classes[1:], scores[1:]
        elif i == 1:
            classes[0] = (classes[0] + 1) % 10
        predictions[record["file_name"]] = (boxes, scores, classes)
        order = np.argsort((truth["boxes"][:, 0] + truth["boxes"][:, 2]) / 2)
        expected[record["file_name"]] = "".join(str(c) for c in truth["classes"][order])
    reader = NumberReader((0.5,), 0.3, 6)
    out = tmp_path / "report"
    report = write_report(records, predictions, reader, str(out), title="tiny")
    kinds = {k: v["count"] for k, v in report["error_kinds"].items()}
    first_truth = expected[records[0]["file_name"]]
    assert kinds["missed digit" if len(first_truth) > 1 else "nothing detected"] >= 1
    assert kinds["wrong digit"] >= 1
    assert kinds["correct"] + kinds["leading zero"] == len(records) - 2
    assert report["accuracy"] == pytest.approx((len(records) - 2) / len(records))
    for name in ("pr_curves", "confusion_matrix", "error_kinds", "ap_by_height"):
        assert (out / f"{name}.png").stat().st_size > 1000 and (out / f"{name}.json").is_file()
    assert report["galleries"] and all(os.path.isfile(p) for p in report["galleries"].values())
    matrix = np.array(report["confusion_matrix"]["rows_true_cols_read"])
    assert matrix.sum() >= sum(len(record_ground_truth(r)["boxes"]) for r in records) - 1
    assert json.loads((out / "report.json").read_text())["images"] == len(records)
    assert headline(report).startswith(f"{len(records)} images, ") and "wrong digit 1" in headline(report)
    assert set(report["ap_by_height"]) == {"0-16 px", "16-32 px", "32-64 px", ">=64 px"}
    # tools/compare_runs.py prints two reports side by side
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_runs", os.path.join(REPO_ROOT, "tools", "compare_runs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.main([str(out), str(out / "report.json")])
    assert "wrong digit" in text and "accuracy" in text and text.count("tiny") >= 2


@pytest.mark.slow
def test_report_shows_accuracy_by_glyph_source_of_synthetic_data(tmp_path):
    from digit_detectron.data.synthetic.generate import generate_dataset

    root = str(tmp_path / "synthetic")
    generate_dataset(root, 1, 12, 0, seed=2, geometry="parametric")
    with open(os.path.join(root, "valid.json")) as f:
        sources = {img["id"]: img["glyph_source"] for img in json.load(f)["images"]}
    register_digits(root, "bysource")
    records = get_dataset_dicts("bysource_valid")
    assert {r["image_id"]: r["glyph_source"] for r in records} == sources  # the loader keeps the json's name
    # Perfect predictions but for the first image, whose digits are all dropped.
    predictions = {}
    for i, record in enumerate(records):
        truth = record_ground_truth(record)
        keep = slice(len(truth["boxes"])) if i else slice(0)
        predictions[record["file_name"]] = (truth["boxes"][keep], np.full(len(truth["boxes"]), 0.9)[keep],
                                            truth["classes"][keep])  # fmt: skip
    out = tmp_path / "report"
    report = write_report(records, predictions, NumberReader((0.5,), 0.3, 6), str(out), title="synthetic")
    by_source = report["accuracy_by_glyph_source"]
    assert sum(v["images"] for v in by_source.values()) == len(records) == 12
    assert set(by_source) == set(sources.values())
    failed = records[0]["glyph_source"]
    for name, v in by_source.items():
        expected = 1 - 1 / v["images"] if name == failed else 1.0
        assert v["accuracy"] == pytest.approx(expected)
    assert (out / "accuracy_by_glyph_source.png").stat().st_size > 1000
    assert json.loads((out / "accuracy_by_glyph_source.json").read_text())["accuracy_by_glyph_source"] == by_source
    # The same per band of the faintest digit's ink contrast, which the loader keeps from the json.
    with open(os.path.join(root, "valid.json")) as f:
        contrasts = {img["id"]: img["ink_contrast"] for img in json.load(f)["images"]}
    assert {r["image_id"]: r["ink_contrast"] for r in records} == contrasts
    by_contrast = report["accuracy_by_ink_contrast"]
    assert sum(v["images"] for v in by_contrast.values()) == 12
    band = next(f"{lo:g}-{hi:g}" if hi != float("inf") else f">={lo:g}" for lo, hi in INK_CONTRAST_BANDS
                if lo <= records[0]["ink_contrast"] < hi)  # fmt: skip
    for name, v in by_contrast.items():
        expected = 1 - 1 / v["images"] if name == band else 1.0
        assert v["accuracy"] == pytest.approx(expected)
    beside = json.loads((out / "accuracy_by_ink_contrast.json").read_text())
    assert beside["accuracy_by_ink_contrast"] == by_contrast
    # Data without the generator's names (HW2, SVHN) gets no such table.
    plain = write_digit_dataset(tmp_path / "plain", counts=(1, 3, 0))
    register_digits(plain, "nosource")
    plain_records = get_dataset_dicts("nosource_valid")
    plain_predictions = {r["file_name"]: (np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)) for r in plain_records}
    plain_report = write_report(plain_records, plain_predictions, NumberReader((0.5,), 0.3, 6), str(tmp_path / "p"))
    assert "accuracy_by_glyph_source" not in plain_report
    assert "accuracy_by_ink_contrast" not in plain_report
    assert not (tmp_path / "p" / "accuracy_by_glyph_source.png").exists()
