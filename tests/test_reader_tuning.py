"""Threshold search of tools/tune_reader.py: reader ladders, NMS and the pred.json score threshold."""

import importlib.util
import json
import math
import os
import shlex

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from digit_detectron import get_digit_cfg
from digit_detectron.data import register_digits
from digit_detectron.inference.reader_tuning import (
    beats_beyond_chance,
    best_pred_json_thresh,
    ladders,
    pred_json_aps,
    search_reader_thresholds,
)
from digit_detectron.modeling.number_reader import NumberReader

from conftest import REPO_ROOT, tiny_model_opts, write_digit_dataset

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")


def detection(image_id, digits):
    """Detections dict from [(digit, score, XYXY box)]."""
    return {
        "image_id": image_id,
        "boxes": np.array([b for _, _, b in digits], np.float32).reshape(-1, 4),
        "scores": np.array([s for _, s, _ in digits], np.float32),
        "classes": np.array([d for d, _, _ in digits], np.int64),
    }


# Image 1 needs a first rung <= 0.6 and > 0.35; image 2 a rung <= 0.25; image 3 an NMS threshold < 0.4
# (the "8" overlaps the "3" with IoU 0.4).
DETECTIONS = [
    detection(1, [(1, 0.9, [10, 10, 24, 38]), (2, 0.6, [30, 10, 44, 38]), (7, 0.35, [60, 10, 74, 38])]),
    detection(2, [(5, 0.25, [10, 10, 24, 38])]),
    detection(3, [(3, 0.9, [10, 10, 24, 38]), (8, 0.8, [16, 10, 30, 38])]),
]
TRUTH = {1: 12, 2: 5, 3: 3}


def test_ladders_are_decreasing_subsets():
    found = ladders((0.3, 0.7, 0.5), max_rungs=2)
    assert found == [(0.7,), (0.5,), (0.3,), (0.7, 0.5), (0.7, 0.3), (0.5, 0.3)]


def test_search_finds_the_only_perfect_ladder():
    rows = search_reader_thresholds(DETECTIONS, TRUTH, (0.7, 0.5, 0.3, 0.2), (0.3, 0.5), max_digits=6, max_rungs=2)
    assert len(rows) == 10 * 2
    assert rows[0] == (100.0, (0.5, 0.2), 0.3)
    assert rows[1][0] < 100.0
    # Every row agrees with NumberReader reading the detections one by one.
    for accuracy, ladder, nms_thresh in rows:
        reader = NumberReader(ladder, nms_thresh, 6)
        correct = [reader(d["boxes"], d["scores"], d["classes"]) == TRUTH[d["image_id"]] for d in DETECTIONS]
        assert accuracy == pytest.approx(100.0 * np.mean(correct)), (ladder, nms_thresh)


def test_a_measured_reader_replaces_the_configs_only_beyond_chance():
    both = [True] * 300
    # 400 images, 12 read right only by the new reader, 4 only by the config's: +8 >= 2 * sqrt(16): adopt
    new = both + [True] * 12 + [False] * 4 + [False] * 84
    current = both + [False] * 12 + [True] * 4 + [False] * 84
    assert beats_beyond_chance(new, current) == (12, 4, True)
    # +3 on 400 images (5 against 2): the best of hundreds of candidates does this by chance
    new = both + [True] * 5 + [False] * 2 + [False] * 93
    current = both + [False] * 5 + [True] * 2 + [False] * 93
    assert beats_beyond_chance(new, current) == (5, 2, False)
    assert beats_beyond_chance(new, current, sigmas=1.0) == (5, 2, True)
    assert beats_beyond_chance(both, both) == (0, 0, False)  # the same readings: keep the config's
    assert beats_beyond_chance([True, False], [False, False], sigmas=0.0) == (1, 0, True)


@pytest.fixture
def box_dataset(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "width": 80, "height": 40} for i in (1, 2)]
    annotations = [
        {"id": 1, "image_id": 1, "bbox": [10, 10, 14, 28], "category_id": 2, "iscrowd": 0, "area": 392},  # a "1"
        {"id": 2, "image_id": 2, "bbox": [20, 5, 14, 28], "category_id": 5, "iscrowd": 0, "area": 392},  # a "4"
    ]
    (tmp_path / "valid.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    register_digits(str(tmp_path), "aps")
    return "aps_valid"


def test_pred_json_threshold_by_measured_ap(box_dataset):
    detections = [
        detection(1, [(1, 0.9, [10, 10, 24, 38]), (7, 0.15, [40, 10, 54, 38])]),  # the "7" is a false positive
        detection(2, [(4, 0.2, [20, 5, 34, 33])]),
    ]
    aps = pred_json_aps(detections, box_dataset, (0.3, 0.1, 0.2, 0.95))
    assert [t for t, _ in aps] == [0.1, 0.2, 0.3, 0.95]
    ap = dict(aps)
    # The false positive scores below every true box: AP stays perfect until the "4" is cut at 0.3.
    assert ap[0.1] == ap[0.2] == pytest.approx(100.0)
    assert ap[0.3] == pytest.approx(50.0)
    assert math.isnan(ap[0.95])
    assert best_pred_json_thresh(aps) == 0.2  # a tie goes to the higher threshold
    with pytest.raises(ValueError, match="predicts nothing"):
        best_pred_json_thresh([(0.5, math.nan)])


@pytest.mark.slow
def test_tune_reader_tool_writes_a_mergeable_snippet(tmp_path, capsys):
    root = write_digit_dataset(tmp_path / "digits", counts=(1, 3, 1))
    register_digits(root, "tune")
    torch.manual_seed(0)
    model = build_model(get_digit_cfg(CONFIG, tiny_model_opts(tmp_path)))
    DetectionCheckpointer(model, str(tmp_path)).save("random_init")

    spec = importlib.util.spec_from_file_location("tune_tool", os.path.join(REPO_ROOT, "tools", "tune_reader.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    argv = (
        [
            "--config-file",
            CONFIG,
            "--dataset",
            "tune_valid",
            "--output",
            str(tmp_path / "tuned"),
            "--score-threshs",
            "0.9,0.5",
            "--nms-threshs",
            "0.3,0.5",
            "--pred-json-threshs",
            "0.0,0.5",
        ]
        + tiny_model_opts(tmp_path)
        + ["MODEL.WEIGHTS", str(tmp_path / "random_init.pth")]
    )
    result = tool.main(argv)
    printed = capsys.readouterr().out
    assert "accuracy %" in printed and "(config)" in printed and "COCO box AP" in printed and "images/s" in printed
    assert len(result.rows) == 3 * 2 and result.num_images == 3
    assert all(math.isfinite(ap) for _, ap in result.aps)

    snippet = tmp_path / "tuned" / "reader_thresholds.yaml"
    assert f"Wrote {snippet}" in printed
    cfg = get_digit_cfg(CONFIG)
    cfg.merge_from_file(str(snippet))
    best = result.best_reader
    # 3 images cannot show a gain beyond chance: the config's reader stays, and the tool says so.
    assert best is result.current_reader and result.measured_reader is not best
    assert "images against the config's reader: not beyond chance" in printed
    assert "the config's reader kept" in snippet.read_text()
    kept = set(get_digit_cfg(CONFIG).DIGITS.READER.SCORE_THRESHS)  # the config's reader, kept
    assert cfg.DIGITS.READER.SCORE_THRESHS == best.score_threshs and set(best.score_threshs) <= {0.9, 0.5} | kept
    assert cfg.DIGITS.READER.NMS_THRESH == best.nms_thresh in (0.3, 0.5)
    assert cfg.DIGITS.PRED_JSON_SCORE_THRESH == result.best_pred_json_thresh in (0.0, 0.5)
    # The printed opts say the same.
    opts = shlex.split(printed.split("as opts: ")[1].splitlines()[0])
    cfg2 = get_digit_cfg(CONFIG, opts)
    assert cfg2.DIGITS == cfg.DIGITS


def test_tune_reader_chooses_the_gate_on_digit_free_images(tmp_path, capsys):
    """--digit-free: MIN_TOP_SCORE is set so that at most --max-free-read percent of those walls are read
    as a number; it goes into the snippet and the opts with the thresholds measured under it."""
    from digit_detectron.data.synthetic.generate import generate_dataset

    root = str(tmp_path / "synthetic")
    generate_dataset(root, 1, 3, 1, seed=2, geometry="parametric", num_valid_free=6)
    register_digits(root, "gate")
    torch.manual_seed(0)
    opts = tiny_model_opts(tmp_path) + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    model = build_model(get_digit_cfg(CONFIG, opts))
    DetectionCheckpointer(model, str(tmp_path)).save("random_init")
    spec = importlib.util.spec_from_file_location("tune_tool", os.path.join(REPO_ROOT, "tools", "tune_reader.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    argv = ["--config-file", CONFIG, "--dataset", "gate_valid", "--output", str(tmp_path / "tuned")]
    argv += ["--digit-free", "gate_valid_free", "--max-free-read", "0", "--score-threshs", "0.5"]
    argv += ["--nms-threshs", "0.3", "--pred-json-threshs", "0.0"]
    result = tool.main(argv + opts + ["MODEL.WEIGHTS", str(tmp_path / "random_init.pth")])
    printed = capsys.readouterr().out
    assert result.digit_free == "gate_valid_free" and result.digit_free_images == 6
    assert result.free_read_after == 0.0 and 0.0 < result.min_top_score <= 1.0
    assert result.best_reader.min_top_score == result.min_top_score
    assert "gate_valid_free (6 images without digits): a number read on" in printed
    cfg = get_digit_cfg(CONFIG)
    cfg.merge_from_file(str(tmp_path / "tuned" / "reader_thresholds.yaml"))
    assert cfg.DIGITS.READER.MIN_TOP_SCORE == pytest.approx(result.min_top_score)
    with pytest.raises(ValueError, match="holds digit boxes"):
        weights = ["MODEL.WEIGHTS", str(tmp_path / "random_init.pth")]
        tool.main(argv[:6] + ["--digit-free", "gate_valid"] + argv[10:] + opts + weights)


def test_gate_for_reads_at_most_the_share_asked():
    from digit_detectron.inference.reader_tuning import gate_for

    tops = [0.99, 0.95, 0.9, 0.8, 0.5, 0.3, 0.2, 0.1, 0.0, 0.0]
    for percent, read in ((0, 0), (10, 1), (25, 2), (100, 10)):
        gate = gate_for(tops, percent)
        assert sum(t >= gate for t in tops) == read if percent < 100 else gate == 0.0


def test_the_gate_reads_the_share_asked_as_the_model_reads_the_walls(tmp_path):
    """The gate is chosen on the walls as the model will read them: with the reader's thresholds and the
    config's second look (which crops around the digits those thresholds pick), not with the tuning's low
    threshold. Read again through DigitPredictor with the tuned config, the walls read as a number are the
    share the tuning reports, within the one asked for."""
    from digit_detectron.data.synthetic.generate import generate_dataset
    from digit_detectron.inference.predictor import DigitPredictor
    from digit_detectron.inference.reader_tuning import gate_for, top_scores, tune

    root = str(tmp_path / "synthetic")
    generate_dataset(root, 1, 3, 1, seed=4, geometry="parametric", num_valid_free=12)
    register_digits(root, "walls")
    torch.manual_seed(1)
    # A random model whose class weights are scaled down tops every wall at 0.91-0.99: the reader's 0.95
    # picks few of its boxes, the tuning's low threshold (0.0) all of them, and a reading whose digits are
    # under 16 px is read again on a crop around them, so the two thresholds crop around other digits.
    opts = tiny_model_opts(tmp_path) + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    opts += ["DIGITS.READER.SCORE_THRESHS", "(0.95,)", "DIGITS.SECOND_LOOK.ENABLED", "True"]
    opts += ["DIGITS.SECOND_LOOK.MODE", "crop", "DIGITS.SECOND_LOOK.EMPTY", "True"]
    opts += ["DIGITS.SECOND_LOOK.MAX_DIGIT_HEIGHT", "16.0"]
    model = build_model(get_digit_cfg(CONFIG, opts))
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(0.1)
    DetectionCheckpointer(model, str(tmp_path)).save("random_init")
    cfg = get_digit_cfg(CONFIG, opts + ["MODEL.WEIGHTS", str(tmp_path / "random_init.pth")])
    result = tune(
        cfg, "walls_valid", (0.95,), (0.3,), (0.0,), progress=False, digit_free="walls_valid_free", max_free_read=50.0
    )
    walls = [r["file_name"] for r in DatasetCatalog.get("walls_valid_free")]
    records = [{"file_name": f} for f in walls]

    def walls_read(gate, score_threshs=(0.95,)):
        """(the share of walls read as a number with this gate, the walls' top scores)."""
        run_cfg = cfg.clone()
        run_cfg.defrost()
        run_cfg.DIGITS.READER.MIN_TOP_SCORE = gate
        run_cfg.DIGITS.READER.SCORE_THRESHS = score_threshs
        run = DigitPredictor(run_cfg).predict_files(walls, 8, False)
        reader = NumberReader.from_config(run_cfg)
        read = [reader(i.pred_boxes.tensor, i.scores, i.pred_classes) != -1 for i in (run.instances[f] for f in walls)]
        return 100.0 * sum(read) / len(walls), top_scores(run, records)

    share, _ = walls_read(result.min_top_score)
    assert 0 < share <= 50.0 and share == pytest.approx(result.free_read_after)
    # The gate is the one of the walls' top scores under the reader's own thresholds ...
    _, own = walls_read(0.0)
    assert result.min_top_score == gate_for(own, 50.0)
    # ... which are not those under the tuning's low threshold (0.0), where the crops are around other
    # digits; a gate chosen on those reads fewer walls than the share allowed.
    _, low = walls_read(0.0, (0.0,))
    assert not np.allclose(low, own)
    assert walls_read(gate_for(low, 50.0))[0] < share
