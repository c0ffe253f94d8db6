"""
Digit datasets in the NYCU HW2 layout, registered in detectron2's catalogs::

    ROOT/train/*.png  ROOT/train.json
    ROOT/valid/*.png  ROOT/valid.json     (or ROOT/val/ + ROOT/val.json)
    ROOT/test/*.png                       (no json; image_id = integer file stem)

The json is COCO: category ids 1..10 name the digits "0".."9". Dataset dicts carry contiguous
class ids 0..9 (= the digit); ``thing_dataset_id_to_contiguous_id`` maps them back to 1..10.
"""

import json
import logging
import math
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..utils.errors import DigitError

logger = logging.getLogger(__name__)

DIGIT_CLASSES = [str(d) for d in range(10)]
DATASET_ID_TO_CONTIGUOUS = {d + 1: d for d in range(10)}
CONTIGUOUS_TO_DATASET_ID = {v: k for k, v in DATASET_ID_TO_CONTIGUOUS.items()}
# Folder / json stems accepted for each split, in order of preference.
SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "val"), "test": ("test",)}
# Labelled splits the synthetic generator can add (in-style validation, out-of-style test); registered
# only where their json exists.
EXTRA_SPLITS = ("valid_instyle", "test_ood", "test_wide", "free", "valid_free")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
# Boxes reaching at most this many pixels past the image edge are clipped (real SVHN has such
# boxes); boxes further outside are an error.
EDGE_TOLERANCE = 10


class DatasetError(DigitError, ValueError):
    """A dataset file is missing or malformed; the message names the file and the problem."""


def default_dataset_root():
    """``$DIGITS_DATASET_ROOT``, else ``datasets/digits`` under the current directory."""
    return os.environ.get("DIGITS_DATASET_ROOT", os.path.join("datasets", "digits"))


def split_paths(root, split):
    """Return ``(image_dir, json_file or None)`` of a split, accepting ``valid``/``val`` namings."""
    for stem in SPLIT_NAMES.get(split, (split,)):
        image_dir = os.path.join(root, stem)
        json_file = os.path.join(root, stem + ".json")
        if os.path.isdir(image_dir) or os.path.isfile(json_file):
            return image_dir, (json_file if split != "test" else None)
    names = " or ".join(f"{s}/" for s in SPLIT_NAMES.get(split, (split,)))
    raise DatasetError(
        f"digit dataset split '{split}' not found under {os.path.abspath(root)}: expected {names}"
        " (set DIGITS_DATASET_ROOT or see datasets/README.md)"
    )


def image_id_from_filename(path):
    """The integer stem of an image file (``123.png`` -> 123); a clear error otherwise."""
    stem = os.path.splitext(os.path.basename(path))[0]
    try:
        return int(stem)
    except ValueError:
        raise DatasetError(f"{path}: file stem '{stem}' is not an integer image id") from None


def _bad(json_file, what):
    return DatasetError(f"{json_file}: {what}")


def read_json(path, what="file"):
    """Parse a json file; a missing or malformed file is a DatasetError naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: malformed json ({e})") from None


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def coco_top_problem(data):
    """``(code, message)`` when a parsed COCO json is not an object with lists 'images' and 'annotations'."""
    if not isinstance(data, dict):
        return "json-malformed", f"top level is a {type(data).__name__}, not an object"
    missing = [k for k in ("images", "annotations") if not isinstance(data.get(k), list)]
    if missing:
        return "json-missing-key", f"no list {' / '.join(repr(k) for k in missing)}"
    return None


def image_entry_problem(i, img):
    """``(code, message)`` of the COCO ``images[i]`` entry ``img``, or None: an object with an id, a
    file_name and positive integer height and width."""
    if not isinstance(img, dict):
        return "json-malformed", f"images[{i}] is {img!r}, not an object"
    missing = [k for k in ("id", "file_name", "height", "width") if k not in img]
    if missing:
        return "json-missing-key", f"images[{i}] (id {img.get('id')}) lacks {missing}"
    if not isinstance(img["file_name"], str) or not img["file_name"]:
        return "json-bad-value", f"images[{i}] (id {img['id']}): file_name {img['file_name']!r} is not a file name"
    if not (_positive_int(img["height"]) and _positive_int(img["width"])):
        return (
            "json-bad-value",
            f"image id {img['id']}: height/width {img['height']}/{img['width']} are not positive integers",
        )
    return None


def annotation_entry_problem(i, ann):
    """``(code, message)`` of the COCO ``annotations[i]`` entry ``ann``, or None: an object with an image_id,
    a category_id in 1..10 and a bbox of 4 finite numbers with a positive size."""
    if not isinstance(ann, dict):
        return "json-malformed", f"annotations[{i}] is {ann!r}, not an object"
    name = f"annotation {ann.get('id', f'[{i}]')}"
    missing = [k for k in ("image_id", "bbox", "category_id") if k not in ann]
    if missing:
        return "json-missing-key", f"{name} lacks {missing}"
    bbox = ann["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return "bbox-invalid", f"{name}: bbox {bbox} is not 4 finite numbers"
    if bbox[2] <= 0 or bbox[3] <= 0:
        return "bbox-non-positive", f"{name}: bbox {bbox} has non-positive size"
    if isinstance(ann["category_id"], bool) or ann["category_id"] not in DATASET_ID_TO_CONTIGUOUS:
        return "category-out-of-range", f"{name}: category_id {ann['category_id']!r} not in 1..10"
    return None


def load_digits_json(json_file, image_dir):
    """
    Load a COCO digit json into detectron2 dataset dicts (``bbox_mode`` XYWH_ABS, contiguous
    ``category_id`` 0..9). Boxes up to EDGE_TOLERANCE px past the edge are clipped and counted.
    A json of another shape is a DatasetError naming the file and the entry (the checks that
    tools/check_dataset.py reports: ``coco_top_problem`` and the entry problems).
    """
    data = read_json(json_file)
    problem = coco_top_problem(data)
    if problem:
        raise _bad(json_file, problem[1])

    records = {}
    for i, img in enumerate(data["images"]):
        problem = image_entry_problem(i, img)
        if problem:
            raise _bad(json_file, problem[1])
        if img["id"] in records:
            raise _bad(json_file, f"duplicate image id {img['id']}")
        records[img["id"]] = {
            "file_name": os.path.join(image_dir, img["file_name"]),
            "image_id": img["id"],
            "height": img["height"],
            "width": img["width"],
            "annotations": [],
        }
        if isinstance(img.get("glyph_source"), str):  # the synthetic generator's record of the font
            records[img["id"]]["glyph_source"] = img["glyph_source"]
        contrast = img.get("ink_contrast")  # and of its faintest digit's ink contrast
        if isinstance(contrast, (int, float)) and not isinstance(contrast, bool) and 0 <= contrast < math.inf:
            records[img["id"]]["ink_contrast"] = float(contrast)

    clipped = 0
    for i, ann in enumerate(data["annotations"]):
        problem = annotation_entry_problem(i, ann)
        if problem:
            raise _bad(json_file, problem[1])
        rec = records.get(ann["image_id"]) if isinstance(ann["image_id"], (int, str)) else None
        if rec is None:
            raise _bad(json_file, f"annotation {ann.get('id')} points at missing image id {ann['image_id']!r}")
        x, y, w, h = (float(v) for v in ann["bbox"])
        x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, rec["width"]), min(y + h, rec["height"])
        tol = EDGE_TOLERANCE
        if x < -tol or y < -tol or x + w > rec["width"] + tol or y + h > rec["height"] + tol or x1 <= x0 or y1 <= y0:
            raise _bad(
                json_file,
                f"annotation {ann.get('id')}: bbox {ann['bbox']} lies outside image "
                f"{rec['file_name']} ({rec['width']}x{rec['height']})",
            )
        if (x0, y0, x1, y1) != (x, y, x + w, y + h):
            clipped += 1
        rec["annotations"].append(
            {
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": DATASET_ID_TO_CONTIGUOUS[ann["category_id"]],
                "iscrowd": int(ann.get("iscrowd", 0)),
            }
        )
    if clipped:
        logger.warning(f"{json_file}: clipped {clipped} boxes reaching past the image edge")
    return list(records.values())


def load_digits_test(image_dir):
    """Dataset dicts (no annotations, no sizes) of an unlabelled folder; image_id = file stem."""
    if not os.path.isdir(image_dir):
        raise DatasetError(f"{image_dir}: image folder not found")
    files = sorted(f for f in os.listdir(image_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    records = [{"file_name": os.path.join(image_dir, f), "image_id": image_id_from_filename(f)} for f in files]
    return sorted(records, key=lambda r: r["image_id"])


def _split_loader(root, split):
    def load():
        image_dir, json_file = split_paths(root, split)
        if json_file is None:
            return load_digits_test(image_dir)
        if not os.path.isfile(json_file):
            raise DatasetError(f"{json_file}: annotation file not found for split '{split}'")
        return load_digits_json(json_file, image_dir)

    return load


def register_digits(root, prefix="digits"):
    """
    Register ``{prefix}_train``, ``{prefix}_valid`` and ``{prefix}_test`` under ``root``, and
    ``{prefix}_valid_instyle`` / ``{prefix}_test_ood`` where ``ROOT/<split>.json`` exists. Nothing is
    read until a dataset is used, so registering a root that does not exist yet is fine.
    Re-registering a name replaces it.
    """
    names = []
    extra = [s for s in EXTRA_SPLITS if os.path.isfile(os.path.join(root, s + ".json"))]
    for split in [*SPLIT_NAMES, *extra]:
        name = f"{prefix}_{split}"
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, _split_loader(root, split))
        MetadataCatalog.get(name).set(
            thing_classes=DIGIT_CLASSES,
            thing_dataset_id_to_contiguous_id=dict(DATASET_ID_TO_CONTIGUOUS),
            dataset_root=os.path.abspath(root),
            split=split,
            evaluator_type="coco",
        )
        names.append(name)
    return names


def get_dataset_dicts(name):
    """The dataset dicts of a registered dataset; an unknown name is a DatasetError listing the digit datasets."""
    if name not in DatasetCatalog.list():
        digit_names = ", ".join(n for n in DatasetCatalog.list() if n.startswith("digits"))
        raise DatasetError(f"dataset '{name}' is not registered (digit datasets: {digit_names})")
    return DatasetCatalog.get(name)


def dataset_style(name):
    """
    The style name ("in-style" / "out-of-style") that the synthetic generator recorded in a registered
    split's json ``info``, or None (another dataset, no json, no style recorded).
    """
    if name not in MetadataCatalog.list():
        return None
    meta = MetadataCatalog.get(name)
    root, split = meta.get("dataset_root"), meta.get("split")
    if root is None or split is None:
        return None
    try:  # a split not on disk (yet), or an unreadable json: no style to name
        _, json_file = split_paths(root, split)
        style = read_json(json_file).get("info", {}).get("style") if json_file else None
    except (DatasetError, AttributeError):
        return None
    return style.get("name") if isinstance(style, dict) else None
