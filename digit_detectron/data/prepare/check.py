"""
Validate a digit dataset root (the HW2 layout of :mod:`.datasets`) before training.

Every problem becomes a :class:`Finding` with a kind, the file it is about and a message. Errors
are what would stop training or silently corrupt it (missing, unreadable or mis-sized images,
malformed json, bad ids, categories or boxes); warnings are what the loaders handle but a user
should know about (boxes clipped at the edge, images converted or rotated at load, unused files).
"""

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass

from tqdm import tqdm

from ..datasets import (
    DIGIT_CLASSES,
    EDGE_TOLERANCE,
    IMAGE_EXTENSIONS,
    DatasetError,
    annotation_entry_problem,
    coco_top_problem,
    image_entry_problem,
    split_paths,
)
from ..image_io import TRANSPOSING_ORIENTATIONS, ImageReadError, exif_orientation, open_image

ERROR, WARNING = "error", "warning"
MODE_NOTES = {
    "L": "grayscale",
    "LA": "grayscale with alpha",
    "1": "1-bit",
    "P": "palette",
    "PA": "palette with alpha",
    "RGBA": "RGBA",
    "CMYK": "CMYK",
    "I;16": "16-bit grayscale",
    "I;16B": "16-bit grayscale",
    "I;16L": "16-bit grayscale",
    "I": "32-bit integer",
    "F": "32-bit float",
}


@dataclass(frozen=True)
class Finding:
    severity: str
    kind: str
    path: str
    message: str

    def __str__(self):
        return f"{self.path}: {self.message}"


class DatasetReport:
    """Findings and per-split counts of a dataset check."""

    def __init__(self, root):
        self.root = root
        self.findings = []
        self.splits = {}

    def add(self, severity, kind, path, message):
        self.findings.append(Finding(severity, kind, path, message))

    def of(self, severity):
        return [f for f in self.findings if f.severity == severity]

    @property
    def errors(self):
        return self.of(ERROR)

    @property
    def warnings(self):
        return self.of(WARNING)

    def kinds(self, severity=None):
        """Counter of finding kinds (of one severity, or all)."""
        return Counter(f.kind for f in self.findings if severity in (None, f.severity))

    def format(self, max_examples=5):
        lines = [f"dataset root: {os.path.abspath(self.root)}"]
        for split, counts in self.splits.items():
            lines.append(f"  {split}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        for severity in (ERROR, WARNING):
            found = self.of(severity)
            lines.append(f"{severity}s: {len(found)}")
            by_kind = defaultdict(list)
            for f in found:
                by_kind[f.kind].append(f)
            for kind, items in by_kind.items():
                lines.append(f"  {kind} ({len(items)}):")
                lines += [f"    {f}" for f in items[:max_examples]]
                if len(items) > max_examples:
                    lines.append(f"    ... {len(items) - max_examples} more")
        verdict = "FAILED" if self.errors else "OK"
        lines.append(f"{verdict}: {len(self.errors)} errors, {len(self.warnings)} warnings")
        return "\n".join(lines)


def check_dataset(root, progress=True):
    """Check ``root``'s train, valid (or val) and test splits; returns a :class:`DatasetReport`."""
    report = DatasetReport(root)
    if not os.path.isdir(root):
        report.add(ERROR, "root-missing", root, "dataset root is not a folder")
        return report
    for split in ("train", "valid", "test"):
        try:
            image_dir, json_file = split_paths(root, split)
        except DatasetError as e:
            severity = WARNING if split == "test" else ERROR
            report.add(severity, "split-missing", os.path.join(root, split), str(e).split(": ", 1)[-1])
            continue
        if json_file is None:
            _check_test_split(report, split, image_dir, progress)
        else:
            _check_labelled_split(report, split, image_dir, json_file, progress)
    return report


def _folder_files(report, image_dir):
    """Image files of a folder (sorted); files with other extensions become warnings."""
    if not os.path.isdir(image_dir):
        report.add(ERROR, "image-dir-missing", image_dir, "image folder not found")
        return []
    images = []
    for name in sorted(os.listdir(image_dir)):
        path = os.path.join(image_dir, name)
        if not os.path.isfile(path):
            continue
        if name.lower().endswith(IMAGE_EXTENSIONS):
            images.append(name)
        else:
            report.add(
                WARNING, "non-image-file", path, f"not a {'/'.join(IMAGE_EXTENSIONS)} file: ignored by the loaders"
            )
    return images


def _check_test_split(report, split, image_dir, progress):
    names = _folder_files(report, image_dir)
    seen = {}
    for name in names:
        path = os.path.join(image_dir, name)
        stem = os.path.splitext(name)[0]
        try:
            image_id = int(stem)
        except ValueError:
            report.add(ERROR, "test-bad-stem", path, f"file stem '{stem}' is not an integer image id")
            continue
        if image_id in seen:
            report.add(ERROR, "duplicate-image-id", path, f"image id {image_id} also belongs to {seen[image_id]}")
        seen[image_id] = name
    for name in tqdm(names, desc=f"check {split} images", unit="img", disable=not progress):
        check_image(report, os.path.join(image_dir, name))
    report.splits[split] = {"images": len(names)}


def _check_labelled_split(report, split, image_dir, json_file, progress):
    data = _load_json(report, json_file)
    files = set(_folder_files(report, image_dir))
    if data is None:
        report.splits[split] = {"image files": len(files)}
        return
    images = _check_image_entries(report, json_file, data["images"])
    boxes = _check_annotations(report, json_file, data["annotations"], images)
    _check_categories(report, json_file, data.get("categories"))
    listed = set()
    for img in tqdm(images.values(), desc=f"check {split} images", unit="img", disable=not progress):
        path = os.path.join(image_dir, img["file_name"])
        if path in listed:
            report.add(WARNING, "duplicate-file-name", path, f"listed by more than one image entry in {json_file}")
        listed.add(path)
        check_image(report, path, (img["height"], img["width"]), json_file)
        if not boxes[img["id"]]:
            report.add(WARNING, "image-without-boxes", path, f"no annotations in {json_file} (skipped in training)")
    for name in sorted(files):
        path = os.path.join(image_dir, name)
        if path not in listed:
            report.add(WARNING, "image-unlisted", path, f"not listed in {json_file}: unused")
    if images and not sum(boxes.values()):
        what = "cannot train" if split == "train" else "cannot be evaluated"
        report.add(ERROR, "no-annotations", json_file, f"no image has an annotation: the {split} split {what}")
    report.splits[split] = {"images": len(images), "boxes": sum(boxes.values()), "image files": len(files)}


def _load_json(report, json_file):
    if not os.path.isfile(json_file):
        report.add(ERROR, "json-missing", json_file, "annotation file not found")
        return None
    try:
        with open(json_file, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        report.add(ERROR, "json-malformed", json_file, f"malformed json ({e})")
        return None
    problem = coco_top_problem(data)
    if problem:
        report.add(ERROR, problem[0], json_file, problem[1])
        return None
    return data


def _check_image_entries(report, json_file, entries):
    """Valid image entries by id; problems with the others are reported."""
    images = {}
    for i, img in enumerate(entries):
        problem = image_entry_problem(i, img)
        if problem:
            report.add(ERROR, problem[0], json_file, problem[1])
            continue
        if img["id"] in images:
            report.add(ERROR, "duplicate-image-id", json_file, f"image id {img['id']} appears more than once")
            continue
        images[img["id"]] = img
    return images


def _check_annotations(report, json_file, annotations, images):
    """Check boxes, categories and ids; returns the number of valid boxes per image id."""
    boxes = {image_id: 0 for image_id in images}
    ann_ids = set()
    for i, ann in enumerate(annotations):
        problem = annotation_entry_problem(i, ann)
        if problem:
            report.add(ERROR, problem[0], json_file, problem[1])
            continue
        name = f"annotation {ann.get('id', f'[{i}]')}"
        if "id" in ann:
            if ann["id"] in ann_ids:
                report.add(ERROR, "duplicate-annotation-id", json_file, f"{name}: id appears more than once")
            ann_ids.add(ann["id"])
        img = images.get(ann["image_id"]) if isinstance(ann["image_id"], (int, str)) else None
        if img is None:
            report.add(
                ERROR, "annotation-missing-image", json_file, f"{name} points at missing image id {ann['image_id']!r}"
            )
            continue
        if _check_box(report, json_file, name, ann["bbox"], img):
            boxes[img["id"]] += 1
    return boxes


def _check_box(report, json_file, name, bbox, img):
    """The edge checks of a bbox that ``annotation_entry_problem`` passed (4 finite numbers, positive size)."""
    x, y, w, h = bbox
    W, H = img["width"], img["height"]
    past = max(-x, -y, x + w - W, y + h - H)
    if past > EDGE_TOLERANCE or min(x + w, W) <= max(x, 0) or min(y + h, H) <= max(y, 0):
        report.add(ERROR, "bbox-outside", json_file, f"{name}: bbox {bbox} lies outside image id {img['id']} ({W}x{H})")
        return False
    if past > 0:
        report.add(
            WARNING,
            "bbox-past-edge",
            json_file,
            f"{name}: bbox {bbox} reaches {past:g} px past the edge of image id {img['id']} ({W}x{H}): clipped at load",
        )
    return True


def _check_categories(report, json_file, categories):
    expected = {d + 1: name for d, name in enumerate(DIGIT_CLASSES)}
    if categories is None:
        return
    try:
        given = {c["id"]: str(c["name"]) for c in categories}
    except (TypeError, KeyError):
        report.add(WARNING, "categories", json_file, "'categories' is not a list of {id, name}: ignored")
        return
    if given != expected:
        report.add(
            WARNING,
            "categories",
            json_file,
            f"'categories' {given} differ from {expected}: the loader uses id = digit + 1",
        )


# ImageReadError.kind -> the report's kind of finding
IMAGE_ERROR_KINDS = {
    "empty": "image-empty",
    "missing": "image-missing",
    "not-image": "image-not-image",
    "too-large": "image-too-large",
    "corrupt": "image-corrupt",
}


def check_image(report, path, expected_hw=None, json_file=None):
    """Decode one image fully; report missing / empty / corrupt files, size mismatches, modes and EXIF."""
    try:
        with open_image(path) as img:
            mode, (w, h), orientation = img.mode, img.size, exif_orientation(img)
    except ImageReadError as e:
        message = str(e).removeprefix(f"{path}: ")
        if e.kind == "missing" and json_file:
            message += f" (listed in {json_file})"
        report.add(ERROR, IMAGE_ERROR_KINDS[e.kind], path, message)
        return
    if mode != "RGB":
        report.add(
            WARNING, "image-mode", path, f"{MODE_NOTES.get(mode, mode)} image (mode {mode}): converted to RGB at load"
        )
    if orientation not in (1, None):
        report.add(
            WARNING,
            "image-exif-rotated",
            path,
            f"EXIF orientation {orientation}: rotated at load, the json must hold the rotated size",
        )
    real_hw = (w, h) if orientation in TRANSPOSING_ORIENTATIONS else (h, w)
    if expected_hw is not None and tuple(expected_hw) != real_hw:
        hint = " (the size before the EXIF rotation)" if expected_hw == (h, w) else ""
        report.add(
            ERROR,
            "image-size-mismatch",
            path,
            f"{json_file} says {expected_hw[1]}x{expected_hw[0]}{hint}, the image is {real_hw[1]}x{real_hw[0]} (WxH)",
        )
