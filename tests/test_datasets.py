"""Dataset registration in detectron2's catalogs, on datasets the tests write."""

import json
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_dict

from digit_detectron.data import DatasetError, register_digits
from digit_detectron.data.datasets import image_id_from_filename

from conftest import write_digit_dataset


@pytest.mark.parametrize("valid_name", ["valid", "val"])
def test_registration_round_trip(tmp_path, valid_name):
    root = write_digit_dataset(tmp_path / "d", counts=(5, 3, 2), valid_name=valid_name)
    names = register_digits(root, "rt")
    assert names == ["rt_train", "rt_valid", "rt_test"]
    meta = MetadataCatalog.get("rt_train")
    assert meta.thing_classes == [str(d) for d in range(10)]
    assert meta.thing_dataset_id_to_contiguous_id == {d + 1: d for d in range(10)}

    with open(os.path.join(root, valid_name + ".json")) as f:
        raw = json.load(f)
    dicts = DatasetCatalog.get("rt_valid")
    assert len(dicts) == 3
    # Contiguous ids are the digits: category_id - 1.
    raw_cats = sorted((a["image_id"], a["bbox"][0], a["category_id"]) for a in raw["annotations"])
    loaded = sorted((d["image_id"], a["bbox"][0], a["category_id"]) for d in dicts for a in d["annotations"])
    assert [c for *_, c in loaded] == [c - 1 for *_, c in raw_cats]
    # ... and detectron2 maps them back to the dataset ids 1..10 for COCO results.
    coco = convert_to_coco_dict("rt_valid")
    assert sorted((a["image_id"], a["bbox"][0], a["category_id"]) for a in coco["annotations"]) == [
        (i, float(x), c) for i, x, c in raw_cats
    ]
    test = DatasetCatalog.get("rt_test")
    assert [d["image_id"] for d in test] == sorted(image_id_from_filename(d["file_name"]) for d in test)
    assert all("annotations" not in d for d in test)


def test_register_missing_root_is_lazy_and_clear(tmp_path):
    register_digits(tmp_path / "absent", "missing")  # must not fail
    with pytest.raises(DatasetError, match="split 'train' not found under .*absent"):
        DatasetCatalog.get("missing_train")


def test_edge_boxes_clipped_far_boxes_rejected(tmp_path):
    root = write_digit_dataset(tmp_path / "d", counts=(2, 1, 1))
    path = os.path.join(root, "train.json")
    with open(path) as f:
        data = json.load(f)
    img = data["images"][0]
    ann = next(a for a in data["annotations"] if a["image_id"] == img["id"])
    ann["bbox"] = [img["width"] - 5, 1, 7, 10]  # 2 px past the right edge
    with open(path, "w") as f:
        json.dump(data, f)
    register_digits(root, "edge")
    rec = next(d for d in DatasetCatalog.get("edge_train") if d["image_id"] == img["id"])
    x, y, w, h = rec["annotations"][0]["bbox"]
    assert x + w == img["width"] and w == 5

    ann["bbox"] = [img["width"] + 20, 1, 7, 10]
    with open(path, "w") as f:
        json.dump(data, f)
    with pytest.raises(DatasetError, match="train.json: annotation .* outside image"):
        DatasetCatalog.get("edge_train")


def test_non_integer_test_stem_is_a_clear_error(tmp_path):
    root = write_digit_dataset(tmp_path / "d", counts=(1, 1, 1))
    os.rename(os.path.join(root, "test", "3.png"), os.path.join(root, "test", "house.png"))
    register_digits(root, "stem")
    with pytest.raises(DatasetError, match="house.png: file stem 'house' is not an integer"):
        DatasetCatalog.get("stem_test")


def test_loader_keeps_a_valid_ink_contrast_and_drops_others(tmp_path):
    """The generator's ink_contrast reaches the records when it is a non-negative number, else not at all."""
    import cv2
    import numpy as np

    from digit_detectron.data.datasets import load_digits_json

    (tmp_path / "img").mkdir()
    values = [2.5, 0, -1.0, float("nan"), float("inf"), "3", True, None]
    images = []
    for i, value in enumerate(values, 1):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), np.zeros((20, 30, 3), np.uint8))
        image = {"id": i, "file_name": f"{i}.png", "height": 20, "width": 30}
        if value is not None:
            image["ink_contrast"] = value
        images.append(image)
    categories = [{"id": d + 1, "name": str(d)} for d in range(10)]
    (tmp_path / "a.json").write_text(json.dumps({"images": images, "annotations": [], "categories": categories}))
    records = load_digits_json(str(tmp_path / "a.json"), str(tmp_path / "img"))
    assert [r.get("ink_contrast") for r in records] == [2.5, 0.0, None, None, None, None, None, None]
