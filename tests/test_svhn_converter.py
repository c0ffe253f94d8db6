"""datasets/prepare_svhn.py on a small SVHN format-1 folder written like the real digitStruct.mat."""

import importlib.util
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from digit_detectron.data import load_digits_json
from digit_detectron.data.datasets import DatasetError
from digit_detectron.data.prepare.check import check_dataset
from digit_detectron.data.prepare.svhn import EXTRA_ID_OFFSET, convert_svhn, read_digit_struct, svhn_label_to_category
from digit_detectron.utils.cli import run_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (width, height, [(left, top, width, height, svhn label)])
TRAIN = {
    "1.png": (40, 20, [(5, 2, 8, 15, 1), (14, 3, 9, 15, 10)]),  # "10": label 10 is the digit 0
    "2.png": (30, 16, [(10, 1, 9, 14, 7)]),  # one digit: fields stored inline, not as references
    "3.png": (50, 24, [(1, 2, 7, 18, 3), (9, 2, 7, 18, 4), (17, 2, 7, 18, 5)]),
    "4.png": (24, 24, [(-2, 1, 10, 20, 10)]),  # reaches 2 px past the left edge: kept as given
    "5.png": (32, 20, [(3, 2, 8, 16, 9), (12, 2, 8, 16, 2)]),
    "6.png": (28, 18, [(4, 1, 9, 15, 6)]),
    "7.png": (36, 22, [(2, 2, 9, 17, 8), (12, 2, 9, 17, 8)]),
    "8.png": (26, 18, [(8, 2, 9, 14, 10)]),
    "9.png": (34, 20, [(5, 3, 8, 14, 1), (14, 3, 8, 14, 1)]),
    "10.png": (30, 20, [(6, 2, 10, 15, 5)]),
}
TEST = {
    "1.png": (22, 14, [(3, 1, 7, 12, 2)]),
    "2.png": (30, 18, [(2, 2, 8, 14, 10), (12, 2, 8, 14, 4)]),
}


def write_digit_struct(path, entries):
    """Write ``entries`` (name -> boxes) as MATLAB v7.3 does: object references under #refs#."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        ds = f.create_group("digitStruct")
        name_refs, bbox_refs = [], []
        for i, (name, (_, _, boxes)) in enumerate(entries.items()):
            chars = refs.create_dataset(f"name{i}", data=np.array([[ord(c)] for c in name], dtype=np.uint16))
            name_refs.append(chars.ref)
            group = refs.create_group(f"bbox{i}")
            for k, field in enumerate(("left", "top", "width", "height", "label")):
                values = [float(b[k]) for b in boxes]
                if len(values) == 1:
                    group.create_dataset(field, data=np.array([[values[0]]]))
                else:
                    cells = [
                        refs.create_dataset(f"v{i}_{field}_{j}", data=np.array([[v]])).ref for j, v in enumerate(values)
                    ]
                    group.create_dataset(field, data=np.array([[r] for r in cells], dtype=h5py.ref_dtype))
            bbox_refs.append(group.ref)
        ds.create_dataset("name", data=np.array([[r] for r in name_refs], dtype=h5py.ref_dtype))
        ds.create_dataset("bbox", data=np.array([[r] for r in bbox_refs], dtype=h5py.ref_dtype))


def write_svhn_folder(folder, entries):
    os.makedirs(folder, exist_ok=True)
    for name, (w, h, _) in entries.items():
        Image.new("RGB", (w, h), (len(name) * 40, 90, 30)).save(os.path.join(folder, name))
    write_digit_struct(os.path.join(folder, "digitStruct.mat"), entries)


@pytest.fixture
def svhn_dir(tmp_path):
    root = tmp_path / "svhn"
    write_svhn_folder(root / "train", TRAIN)
    write_svhn_folder(root / "test", TEST)
    return root


def test_label_mapping():
    assert [svhn_label_to_category(label) for label in range(1, 11)] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 1]
    with pytest.raises(DatasetError, match="label 11"):
        svhn_label_to_category(11)


def test_read_digit_struct_scalar_and_array_layouts(svhn_dir):
    with h5py.File(svhn_dir / "train" / "digitStruct.mat", "r") as f:
        assert f["digitStruct/bbox"].shape == (10, 1)
    entries = dict(read_digit_struct(str(svhn_dir / "train" / "digitStruct.mat")))
    assert list(entries) == list(TRAIN)
    for name, (_, _, boxes) in TRAIN.items():
        got = [(b["left"], b["top"], b["width"], b["height"], b["label"]) for b in entries[name]]
        assert got == [tuple(float(v) for v in box) for box in boxes]


def _expected_boxes(entries):
    return {
        int(name[:-4]): sorted(([float(v) for v in b[:4]], b[4] % 10 + 1) for b in boxes)
        for name, (_, _, boxes) in entries.items()
    }


def test_round_trip(svhn_dir, tmp_path):
    out = tmp_path / "digits"
    summary = convert_svhn(str(svhn_dir), str(out), valid_fraction=0.3, seed=1, test_json=True)
    assert summary["train"]["images"] == 7 and summary["valid"]["images"] == 3
    assert summary["test"]["images"] == 2
    assert summary["clipped_boxes"] == 0 and summary["dropped_boxes"] == 0

    expected = _expected_boxes(TRAIN)
    seen = set()
    for split in ("train", "valid"):
        data = json.loads((out / f"{split}.json").read_text())
        assert {c["id"]: c["name"] for c in data["categories"]} == {d + 1: str(d) for d in range(10)}
        ids = [img["id"] for img in data["images"]]
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(f"{i}.png" for i in ids)
        for img in data["images"]:
            w, h, _ = TRAIN[f"{img['id']}.png"]
            assert (img["file_name"], img["width"], img["height"]) == (f"{img['id']}.png", w, h)
            with Image.open(out / split / img["file_name"]) as im:
                assert im.size == (w, h)
        got = {i: [] for i in ids}
        for ann in data["annotations"]:
            got[ann["image_id"]].append((ann["bbox"], ann["category_id"]))
        assert {i: sorted(v) for i, v in got.items()} == {i: expected[i] for i in ids}
        assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
        seen |= set(ids)
        # The output loads with the package's own loader.
        assert len(load_digits_json(str(out / f"{split}.json"), str(out / split))) == len(ids)
    assert seen == set(expected)
    # Image 1 reads "10": label 10 (the digit 0) is category 1, i.e. contiguous class 0.
    split = "train" if (out / "train" / "1.png").exists() else "valid"
    record = next(r for r in load_digits_json(str(out / f"{split}.json"), str(out / split)) if r["image_id"] == 1)
    assert [a["category_id"] for a in sorted(record["annotations"], key=lambda a: a["bbox"][0])] == [1, 0]

    # The converted root passes the dataset check; image 4's box 2 px past the edge is the one warning.
    report = check_dataset(str(out), progress=False)
    assert report.errors == [] and report.kinds() == {"bbox-past-edge": 1}

    test = json.loads((out / "test.json").read_text())
    assert sorted(img["id"] for img in test["images"]) == [1, 2]
    assert sorted(a["category_id"] for a in test["annotations"]) == [1, 3, 5]
    assert sorted(p.name for p in (out / "test").iterdir()) == ["1.png", "2.png"]


def test_split_is_seeded(svhn_dir, tmp_path):
    def valid_ids(seed, name):
        convert_svhn(str(svhn_dir), str(tmp_path / name), valid_fraction=0.5, seed=seed)
        return sorted(img["id"] for img in json.loads((tmp_path / name / "valid.json").read_text())["images"])

    first = valid_ids(3, "a")
    assert len(first) == 5
    assert valid_ids(3, "b") == first
    assert any(valid_ids(seed, f"c{seed}") != first for seed in (4, 5, 6))


def test_extra_joins_train_with_offset_ids(svhn_dir, tmp_path):
    write_svhn_folder(svhn_dir / "extra", {"1.png": (20, 12, [(2, 1, 6, 10, 10)])})
    out = tmp_path / "digits"
    summary = convert_svhn(str(svhn_dir), str(out), valid_fraction=0.0, extra=True, link=True)
    assert summary["train"]["images"] == 11 and summary["valid"]["images"] == 0
    data = json.loads((out / "train.json").read_text())
    extra_id = EXTRA_ID_OFFSET + 1
    assert extra_id in {img["id"] for img in data["images"]}
    assert [a["category_id"] for a in data["annotations"] if a["image_id"] == extra_id] == [1]
    assert os.path.samefile(out / "train" / f"{extra_id}.png", svhn_dir / "extra" / "1.png")
    assert not (out / "test.json").exists()


def test_far_outside_box_is_clipped(tmp_path):
    entries = {"1.png": (20, 20, [(5, 2, 30, 10, 3), (40, 2, 5, 10, 4)])}
    write_svhn_folder(tmp_path / "svhn" / "train", entries)
    summary = convert_svhn(str(tmp_path / "svhn"), str(tmp_path / "out"), valid_fraction=0.0)
    assert summary["clipped_boxes"] == 1 and summary["dropped_boxes"] == 1
    ann = json.loads((tmp_path / "out" / "train.json").read_text())["annotations"]
    assert [a["bbox"] for a in ann] == [[5.0, 2.0, 15.0, 10.0]]


def test_refuses_to_mix_with_existing_output(svhn_dir, tmp_path):
    out = tmp_path / "digits"
    convert_svhn(str(svhn_dir), str(out), valid_fraction=0.3)
    with pytest.raises(DatasetError, match="already hold files"):
        convert_svhn(str(svhn_dir), str(out), valid_fraction=0.5)
    convert_svhn(str(svhn_dir), str(out), valid_fraction=0.5, overwrite=True)
    assert len(os.listdir(out / "valid")) == 5 and len(os.listdir(out / "train")) == 5


def test_missing_image_is_named(svhn_dir, tmp_path):
    os.remove(svhn_dir / "train" / "3.png")
    with pytest.raises(DatasetError, match=r"3\.png.*not found"):
        convert_svhn(str(svhn_dir), str(tmp_path / "out"))


def test_bad_label_is_named(tmp_path):
    write_svhn_folder(tmp_path / "svhn" / "train", {"1.png": (20, 20, [(2, 2, 6, 10, 0)])})
    with pytest.raises(DatasetError, match=r"digitStruct\.mat: 1\.png: label 0\.0"):
        convert_svhn(str(tmp_path / "svhn"), str(tmp_path / "out"))


def test_non_hdf5_mat_file(tmp_path):
    folder = tmp_path / "svhn" / "train"
    folder.mkdir(parents=True)
    (folder / "digitStruct.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(DatasetError, match="not an HDF5 file"):
        convert_svhn(str(tmp_path / "svhn"), str(tmp_path / "out"))


@pytest.mark.slow
def test_cli(svhn_dir, tmp_path):
    out = tmp_path / "digits"
    cmd = [sys.executable, os.path.join(REPO, "datasets", "prepare_svhn.py"), str(svhn_dir), str(out)]
    res = subprocess.run(cmd + ["--valid-fraction", "0.2"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "train: 8 images" in res.stdout and "valid: 2 images" in res.stdout and str(out / "train.json") in res.stdout


def test_cli_reports_errors_without_traceback(svhn_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("prepare_svhn", os.path.join(REPO, "datasets", "prepare_svhn.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([str(svhn_dir), str(tmp_path / "digits")])
    with pytest.raises(SystemExit) as exit_info:
        run_tool(tool.main, [str(svhn_dir), str(tmp_path / "digits")])
    assert "already hold files" in str(exit_info.value)
    with pytest.raises(SystemExit) as exit_info:
        run_tool(tool.main, [str(tmp_path / "nowhere"), str(tmp_path / "other")])
    assert "nowhere/train: SVHN folder not found" in str(exit_info.value)
