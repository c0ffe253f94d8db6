"""tools/check_dataset.py: one broken file per test, written into a small valid HW2 dataset."""

import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

from digit_detectron.data.prepare.check import ERROR, WARNING, check_dataset

from conftest import REPO_ROOT, write_digit_dataset


@pytest.fixture
def root(tmp_path):
    return write_digit_dataset(tmp_path / "digits", counts=(3, 2, 2))


def edit_json(root, split, change):
    path = os.path.join(root, f"{split}.json")
    with open(path) as f:
        data = json.load(f)
    change(data)
    with open(path, "w") as f:
        json.dump(data, f)


def first_image(root, split="train"):
    with open(os.path.join(root, f"{split}.json")) as f:
        img = json.load(f)["images"][0]
    return img, os.path.join(root, split, img["file_name"])


def only_finding(report, severity, kind):
    """The single finding of ``kind``; nothing else of any kind may be reported at ``severity``."""
    found = report.of(severity)
    assert [f.kind for f in found] == [kind], [str(f) for f in report.findings]
    return found[0]


def test_clean_dataset_passes(root):
    report = check_dataset(root, progress=False)
    assert report.findings == []
    assert report.splits["train"]["images"] == 3 and report.splits["valid"]["images"] == 2
    assert report.splits["test"] == {"images": 2}
    assert report.splits["train"]["boxes"] > 0
    assert report.format().endswith("OK: 0 errors, 0 warnings")


def test_missing_image(root):
    _, path = first_image(root)
    os.remove(path)
    report = check_dataset(root, progress=False)
    f = only_finding(report, ERROR, "image-missing")
    assert f.path == path and "train.json" in f.message and report.warnings == []


def test_zero_byte_image(root):
    _, path = first_image(root)
    open(path, "w").close()
    assert only_finding(check_dataset(root, progress=False), ERROR, "image-empty").path == path


def test_non_image_with_image_extension(root):
    _, path = first_image(root, "valid")
    with open(path, "w") as f:
        f.write("this is not a picture\n")
    assert only_finding(check_dataset(root, progress=False), ERROR, "image-not-image").path == path


def test_truncated_image(root):
    _, path = first_image(root)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    f = only_finding(check_dataset(root, progress=False), ERROR, "image-corrupt")
    assert f.path == path and "truncated" in f.message


def test_corrupt_test_image(root):
    path = os.path.join(root, "test", sorted(os.listdir(os.path.join(root, "test")))[0])
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xff" * 32)  # garbage inside the compressed pixel data: the header still reads
    assert only_finding(check_dataset(root, progress=False), ERROR, "image-corrupt").path == path


def test_size_differs_from_json(root):
    img, path = first_image(root)
    edit_json(root, "train", lambda d: d["images"][0].update(height=img["height"] + 3))
    f = only_finding(check_dataset(root, progress=False), ERROR, "image-size-mismatch")
    assert f.path == path and f"{img['width']}x{img['height'] + 3}" in f.message


@pytest.mark.parametrize(
    "mode, note",
    [("L", "grayscale"), ("RGBA", "RGBA"), ("P", "palette"), ("I;16", "16-bit grayscale")],
)
def test_converted_modes_are_warnings(root, mode, note):
    _, path = first_image(root)
    rgb = Image.open(path).convert("RGB")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    else:
        image = rgb.convert(mode)
    image.save(path)
    assert Image.open(path).mode == mode
    report = check_dataset(root, progress=False)
    assert report.errors == []
    f = only_finding(report, WARNING, "image-mode")
    assert f.path == path and note in f.message


def _save_rotated_jpeg(root):
    """Replace the first train image by a JPEG stored sideways with EXIF orientation 6 (rotate 90)."""
    img, png = first_image(root)
    upright = Image.open(png).convert("RGB")
    os.remove(png)
    jpg = png[:-4] + ".jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(jpg, exif=exif.tobytes())
    edit_json(root, "train", lambda d: d["images"][0].update(file_name=os.path.basename(jpg)))
    return img, jpg


def test_exif_rotation_is_a_warning(root):
    _, jpg = _save_rotated_jpeg(root)
    report = check_dataset(root, progress=False)
    assert report.errors == []
    assert only_finding(report, WARNING, "image-exif-rotated").path == jpg


def test_exif_json_with_size_before_rotation(root):
    img, jpg = _save_rotated_jpeg(root)
    edit_json(root, "train", lambda d: d["images"][0].update(height=img["width"], width=img["height"]))
    report = check_dataset(root, progress=False)
    # Its boxes, in the upright frame, now also fall outside the swapped size.
    assert set(report.kinds(ERROR)) <= {"image-size-mismatch", "bbox-outside"}
    (f,) = [f for f in report.errors if f.kind == "image-size-mismatch"]
    assert f.path == jpg and "before the EXIF rotation" in f.message


def test_malformed_json(root):
    with open(os.path.join(root, "valid.json"), "a") as f:
        f.write("{")
    f = only_finding(check_dataset(root, progress=False), ERROR, "json-malformed")
    assert f.path == os.path.join(root, "valid.json")


def test_json_without_annotations_list(root):
    edit_json(root, "train", lambda d: d.pop("annotations"))
    f = only_finding(check_dataset(root, progress=False), ERROR, "json-missing-key")
    assert "'annotations'" in f.message


def test_image_entry_missing_key(root):
    edit_json(root, "train", lambda d: d["images"][1].pop("height"))
    report = check_dataset(root, progress=False)
    assert report.kinds(ERROR)["json-missing-key"] == 1 and "['height']" in report.errors[0].message
    # Its boxes now point at an image the checker could not accept.
    assert set(report.kinds(ERROR)) == {"json-missing-key", "annotation-missing-image"}


def test_annotation_missing_bbox(root):
    edit_json(root, "train", lambda d: d["annotations"][0].pop("bbox"))
    f = only_finding(check_dataset(root, progress=False), ERROR, "json-missing-key")
    assert "annotation 1 lacks ['bbox']" in f.message


def test_duplicate_image_id(root):
    edit_json(root, "train", lambda d: d["images"][1].update(id=d["images"][0]["id"]))
    report = check_dataset(root, progress=False)
    assert report.kinds(ERROR)["duplicate-image-id"] == 1


def test_duplicate_annotation_id(root):
    edit_json(root, "valid", lambda d: d["annotations"][-1].update(id=d["annotations"][0]["id"]))
    f = only_finding(check_dataset(root, progress=False), ERROR, "duplicate-annotation-id")
    assert f.path == os.path.join(root, "valid.json")


def test_annotation_points_at_missing_image(root):
    edit_json(root, "train", lambda d: d["annotations"][0].update(image_id=999))
    f = only_finding(check_dataset(root, progress=False), ERROR, "annotation-missing-image")
    assert "missing image id 999" in f.message


@pytest.mark.parametrize("category", [0, 11, "3"])
def test_category_outside_1_to_10(root, category):
    edit_json(root, "train", lambda d: d["annotations"][0].update(category_id=category))
    f = only_finding(check_dataset(root, progress=False), ERROR, "category-out-of-range")
    assert "not in 1..10" in f.message


@pytest.mark.parametrize(
    "bbox, kind",
    [
        ([2, 2, 0, 10], "bbox-non-positive"),
        ([2, 2, 5, -1], "bbox-non-positive"),
        ([2, float("nan"), 5, 10], "bbox-invalid"),
        ([2, 2, 5], "bbox-invalid"),
        ([-30, 2, 5, 10], "bbox-outside"),
        ([2, 2, 5, 500], "bbox-outside"),
    ],
)
def test_bad_boxes(root, bbox, kind):
    edit_json(root, "train", lambda d: d["annotations"][0].update(bbox=bbox))
    f = only_finding(check_dataset(root, progress=False), ERROR, kind)
    assert f.path == os.path.join(root, "train.json") and "annotation 1" in f.message


def test_box_slightly_past_edge_is_a_counted_warning(root):
    img, _ = first_image(root)

    def push_two_boxes(d):
        first = [a for a in d["annotations"] if a["image_id"] == img["id"]]
        first[0]["bbox"] = [-3, 1, 8, 10]
        d["annotations"][-1]["bbox"][2] += 200  # far past: an error, not a warning
        d["annotations"].append({**first[0], "id": 999, "bbox": [img["width"] - 4, 1, 14, 10]})

    edit_json(root, "train", push_two_boxes)
    report = check_dataset(root, progress=False)
    assert report.kinds(WARNING) == {"bbox-past-edge": 2}
    assert report.kinds(ERROR) == {"bbox-outside": 1}
    assert "reaches 10 px past" in report.warnings[1].message


def test_missing_splits(root):
    os.remove(os.path.join(root, "valid.json"))
    for name in os.listdir(os.path.join(root, "valid")):
        os.remove(os.path.join(root, "valid", name))
    os.rmdir(os.path.join(root, "valid"))
    for name in os.listdir(os.path.join(root, "test")):
        os.remove(os.path.join(root, "test", name))
    os.rmdir(os.path.join(root, "test"))
    report = check_dataset(root, progress=False)
    assert only_finding(report, ERROR, "split-missing").path.endswith("valid")
    assert only_finding(report, WARNING, "split-missing").path.endswith("test")


def test_val_folder_name_is_accepted(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(2, 2, 1), valid_name="val")
    report = check_dataset(root, progress=False)
    assert report.findings == [] and report.splits["valid"]["images"] == 2


def test_test_split_stems(root):
    test_dir = os.path.join(root, "test")
    first = sorted(os.listdir(test_dir))[0]
    Image.open(os.path.join(test_dir, first)).save(os.path.join(test_dir, "0" + first))  # same integer id
    Image.open(os.path.join(test_dir, first)).save(os.path.join(test_dir, "house.png"))
    report = check_dataset(root, progress=False)
    assert report.kinds(ERROR) == {"duplicate-image-id": 1, "test-bad-stem": 1}
    assert any(f.path.endswith("house.png") for f in report.errors)


def test_stray_files_are_warnings(root):
    with open(os.path.join(root, "train", "notes.txt"), "w") as f:
        f.write("x")
    _, path = first_image(root)
    Image.open(path).save(os.path.join(root, "train", "12345.png"))
    report = check_dataset(root, progress=False)
    assert report.errors == []
    assert report.kinds(WARNING) == {"non-image-file": 1, "image-unlisted": 1}


def test_cli_exit_code_and_report(root, capsys):
    spec = importlib.util.spec_from_file_location("check_dataset", os.path.join(REPO_ROOT, "tools", "check_dataset.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([root]) == 0
    assert "OK: 0 errors, 0 warnings" in capsys.readouterr().out
    _, path = first_image(root)
    os.remove(path)
    edit_json(root, "valid", lambda d: d["annotations"][0].update(bbox=[-2, 1, 8, 10]))
    assert tool.main([root]) == 1
    out = capsys.readouterr().out
    assert "image-missing (1):" in out and path in out and "FAILED: 1 errors, 1 warnings" in out
