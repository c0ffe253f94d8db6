"""The ablation summary on metrics files the test writes."""
import json

import numpy as np
from PIL import Image

from digit_detectron.ablation import summarize_ablation


def _write_metrics(path, aps):
    with open(path, "w") as f:
        for i, ap in enumerate(aps):
            it = 10 * (i + 1) - 1
            f.write(json.dumps({"iteration": it, "total_loss": 1.0 / (i + 1), "loss_cls": 0.5}) + "\n")
            f.write(json.dumps({"iteration": it, "bbox/AP": ap, "bbox/AP50": ap + 20, "bbox/AR100": ap + 5,
                                "number/accuracy": ap / 100}) + "\n")


def test_summary_table_and_figure(tmp_path):
    _write_metrics(tmp_path / "a.json", [10.0, 30.0, 25.0])
    _write_metrics(tmp_path / "b.json", [12.0, 20.0])
    md, png = summarize_ablation({"none": tmp_path / "a.json", "diou": tmp_path / "b.json"}, tmp_path / "out")
    lines = open(md).read().splitlines()
    none_row = next(line for line in lines if line.startswith("| none |"))
    diou_row = next(line for line in lines if line.startswith("| diou |"))
    # Last evaluation: AP, AP50, ..., AR100, accuracy; then the best AP and its iteration.
    assert none_row.split("|")[2].strip() == "25.00" and none_row.split("|")[3].strip() == "45.00"
    assert none_row.rstrip("| ").endswith("30.00 (19)")
    assert diou_row.split("|")[2].strip() == "20.00" and "0.20" in diou_row
    img = Image.open(png)
    assert img.size == (1600, 800)
    assert np.asarray(img.convert("L")).std() > 5
