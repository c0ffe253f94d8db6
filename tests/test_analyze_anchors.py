"""tools/analyze_anchors.py and digit_detectron.analysis.anchors on hand-made boxes with known answers."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.modeling import build_backbone
from detectron2.structures import ImageList

from digit_detectron import get_digit_cfg
from digit_detectron.analysis.anchors import (
    AnchorLayout,
    analyze_anchors,
    best_anchor_match,
    centred_best_iou,
    resize_boxes,
)
from digit_detectron.data import load_digits_json
from digit_detectron.utils.cli import run_tool

from conftest import REPO_ROOT, SVHN_GEOMETRY

CPU_CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")
# One anchor size per level p2..p6 (strides 4..64), square plus two elongated ratios, offset 0.
KNOWN_ANCHORS = [
    "MODEL.ANCHOR_GENERATOR.SIZES",
    "[[16], [32], [64], [128], [256]]",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
    "[[0.5, 1.0, 2.0]]",
    "MODEL.ANCHOR_GENERATOR.OFFSET",
    "0.0",
    "MODEL.FPN.OUT_CHANNELS",
    "16",
]


def cfg_with(*opts):
    return get_digit_cfg(CPU_CONFIG, KNOWN_ANCHORS + list(opts))


def records_of(*images):
    """Dataset dicts from (height, width, [xywh boxes]) tuples."""
    json_like = []
    for i, (h, w, boxes) in enumerate(images):
        anns = [{"bbox": list(map(float, b)), "bbox_mode": 1, "category_id": 0} for b in boxes]
        json_like.append({"image_id": i, "height": h, "width": w, "annotations": anns})
    return json_like


def test_box_equal_to_an_anchor_has_iou_one():
    layout = AnchorLayout(cfg_with())
    # p2 anchors (size 16, stride 4, offset 0) are centred on multiples of 4: (16, 16) is one.
    best, level, cell = best_anchor_match(layout, np.array([[8.0, 8.0, 24.0, 24.0]]), np.array([[64, 64]]))
    assert best[0] == pytest.approx(1.0)
    assert layout.level_names[level[0]] == "p2" and layout.cell_shapes[level[0]][cell[0]] == (16.0, 1.0)


def test_known_partial_overlap_and_best_ratio():
    layout = AnchorLayout(cfg_with())
    # 16x16 box centred at x = 18: the nearest p2 centres are 16 and 20, 2 px away.
    # IoU = (14 * 16) / (2 * 256 - 14 * 16) = 224 / 288.
    boxes = np.array(
        [[10.0, 8.0, 26.0, 24.0], [10.34315, 8.68629, 21.65685, 31.31371]]
    )  # 2nd: h/w 2, area 256, at (16, 20)
    best, level, cell = best_anchor_match(layout, boxes, np.array([[64, 64], [64, 64]]))
    assert best[0] == pytest.approx(224 / 288, abs=1e-5)
    assert best[1] > 0.99 and layout.cell_shapes[level[1]][cell[1]][1] == 2.0
    # Centred on the box, both shapes exist among the cell anchors.
    best, shapes = centred_best_iou(layout, boxes)
    np.testing.assert_allclose(best, [1.0, 1.0], atol=1e-5)
    assert shapes == [(16.0, 1.0), (16.0, 2.0)]


def test_grid_matches_a_real_backbone_forward():
    cfg = cfg_with()
    layout = AnchorLayout(cfg)
    backbone = build_backbone(cfg).eval()
    image = torch.zeros(3, 70, 130)
    batch = ImageList.from_tensors([image], backbone.size_divisibility)
    assert layout.padded_shape(70, 130) == tuple(batch.tensor.shape[-2:]) == (96, 160)
    with torch.no_grad():
        features = backbone(batch.tensor)
    expected = layout.generator([features[f] for f in cfg.MODEL.RPN.IN_FEATURES])
    anchors, levels, _ = layout.grid_anchors((96, 160))
    assert torch.equal(anchors, torch.cat([b.tensor for b in expected]))
    assert levels.bincount().tolist() == [len(b) for b in expected]


def test_resize_follows_resize_shortest_edge():
    # 32 x 64 image at short side 64: scale 2. 20 x 200 image: the long side caps at 512, scale 2.56.
    records = records_of((32, 64, [[4, 4, 8, 8]]), (20, 200, [[10, 5, 10, 10]]))
    boxes, shapes = resize_boxes(records, 64, 512)
    assert shapes.tolist() == [[64, 128], [51, 512]]
    np.testing.assert_allclose(boxes[0], [8, 8, 24, 24])
    np.testing.assert_allclose(boxes[1], [25.6, 12.75, 51.2, 38.25])
    native, _ = resize_boxes(records, 0, 512)  # MIN_SIZE 0: no resize
    np.testing.assert_allclose(native[0], [4, 4, 12, 12])


def test_report_at_test_and_train_scales():
    cfg = cfg_with("INPUT.MIN_SIZE_TEST", "64", "INPUT.MIN_SIZE_TRAIN", "(32, 64)", "INPUT.MAX_SIZE_TRAIN", "512")
    # At short side 64 both boxes become exactly a p2 anchor (16x16 at (16, 16) and (32, 32)).
    records = records_of((32, 64, [[4, 4, 8, 8]]), (64, 64, [[24, 24, 16, 16]]))
    report = analyze_anchors(cfg, records)
    test = report["test"]
    assert (report["images"], report["boxes"], report["rpn_fg_iou"]) == (2, 2, 0.7)
    assert test["box"]["height"]["p50"] == 16 and test["box"]["aspect_h_over_w"]["p50"] == 1
    assert test["share_iou_ge_0.7"] == 1 and test["best_iou"]["p50"] == pytest.approx(1)
    assert test["best_aspect_ratio"] == {"1": 1.0} and test["best_level"] == {"p2": 1.0}
    assert test["centred"]["best_aspect_ratio"] == {"1": 1.0} and test["centred"]["share_iou_ge_0.7"] == 1
    assert [t["min_size"] for t in report["train"]] == [32, 64]
    half = report["train"][0]
    assert half["box"]["height"]["p50"] == 8  # short side 32: 8x8 boxes, IoU 64/256 with size-16 anchors
    assert half["best_iou"]["p50"] == pytest.approx(0.25) and half["share_iou_ge_0.5"] == 0
    assert report["train"][1]["share_iou_ge_0.7"] == 1
    assert report["anchors"]["sizes"] == [[16.0], [32.0], [64.0], [128.0], [256.0]]
    assert report["anchors"]["aspect_ratios"][0] == [0.5, 1.0, 2.0] and report["anchors"]["strides"] == [
        4,
        8,
        16,
        32,
        64,
    ]


def test_suggestion_fits_uniform_boxes():
    # Every box is 10 wide and 40 tall (sqrt area 20, h/w 4): no configured anchor fits it well.
    boxes = [[4 + 12 * k, 2, 10, 40] for k in range(4)]
    report = analyze_anchors(cfg_with("INPUT.MIN_SIZE_TEST", "0"), records_of((48, 56, boxes)), train=False)
    s = report["suggested"]
    assert s["sizes"] == [[20.0]] * 5 and s["aspect_ratios"] == [[4.0, 4.0, 4.0]]
    assert report["test"]["best_iou"]["p50"] < 0.6 < s["test"]["best_iou"]["p50"]


def test_range_sampling_reports_both_ends():
    cfg = cfg_with("INPUT.MIN_SIZE_TRAIN", "(40, 80)", "INPUT.MIN_SIZE_TRAIN_SAMPLING", "range")
    report = analyze_anchors(cfg, records_of((32, 64, [[4, 4, 8, 8]])), suggest=False)
    assert [t["min_size"] for t in report["train"]] == [40, 80] and "suggested" not in report


def test_no_boxes_is_an_error():
    with pytest.raises(ValueError, match="no annotated boxes"):
        analyze_anchors(cfg_with(), records_of((32, 32, [])))


def _write_json(path):
    data = {
        "images": [
            {"id": 1, "file_name": "1.png", "height": 32, "width": 64},
            {"id": 2, "file_name": "2.png", "height": 64, "width": 64},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [4, 4, 8, 8], "category_id": 3},
            {"id": 2, "image_id": 2, "bbox": [24, 24, 16, 16], "category_id": 1},
        ],
        "categories": [{"id": d + 1, "name": str(d)} for d in range(10)],
    }
    path.write_text(json.dumps(data))
    return path


@pytest.mark.slow
def test_cli_writes_json_report(tmp_path):
    json_file = _write_json(tmp_path / "boxes.json")
    out = tmp_path / "report" / "anchor_analysis.json"
    cmd = [sys.executable, os.path.join(REPO_ROOT, "tools", "analyze_anchors.py"), "--config-file", CPU_CONFIG]
    res = subprocess.run(
        cmd
        + ["--json", str(json_file), "--output", str(out.parent), "--no-train"]
        + KNOWN_ANCHORS
        + ["INPUT.MIN_SIZE_TEST", "64"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["source"] == str(json_file) and report["boxes"] == 2 and "train" not in report
    assert report["test"]["share_iou_ge_0.7"] == 1.0
    assert "| test " in res.stdout and str(out) in res.stdout


def test_cli_errors_name_the_problem(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "analyze_anchors", os.path.join(REPO_ROOT, "tools", "analyze_anchors.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as exit_info:
        run_tool(tool.main, ["--config-file", CPU_CONFIG, "--json", str(tmp_path / "missing.json")])
    assert "missing.json: file not found" in str(exit_info.value) and exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        run_tool(tool.main, ["--config-file", CPU_CONFIG, "INPUT.NO_SUCH_KEY", "1"])
    assert "Non-existent key: INPUT.NO_SUCH_KEY" in str(exit_info.value)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(SVHN_GEOMETRY), reason="needs ../shared/svhn_geometry/train.json")
def test_real_svhn_boxes_need_a_small_input_scale():
    """
    Real SVHN geometry, 80 images: at detectron2's short side 800 the base config's anchors miss
    every box; at native scale their shapes fit (centred), but the coarse p4-p6 grids misplace them.
    """
    records = load_digits_json(SVHN_GEOMETRY, "")
    records = [records[i] for i in np.random.default_rng(0).choice(len(records), 80, replace=False)]
    base = os.path.join(REPO_ROOT, "configs", "Base-Digits-RCNN-FPN.yaml")
    big = analyze_anchors(
        get_digit_cfg(base, ["INPUT.MIN_SIZE_TEST", "800", "INPUT.MAX_SIZE_TEST", "1333"]),
        records,
        train=False,
        suggest=False,
    )
    native = analyze_anchors(get_digit_cfg(base, ["INPUT.MIN_SIZE_TEST", "0"]), records, train=False, suggest=False)
    assert big["test"]["share_iou_ge_0.5"] < 0.02 and big["test"]["box"]["height"]["p50"] > 200
    assert big["test"]["centred"]["best_iou"]["p50"] < 0.05
    assert native["test"]["centred"]["share_iou_ge_0.5"] > 0.9 > 0.5 > native["test"]["share_iou_ge_0.5"]
