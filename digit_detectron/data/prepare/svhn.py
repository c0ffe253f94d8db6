"""
Convert the official SVHN format-1 download (http://ufldl.stanford.edu/housenumbers/) into the
NYCU HW2 layout read by :mod:`digit_detectron.data.datasets`.

Each SVHN folder (``train/``, ``test/``, ``extra/``) holds ``1.png``, ``2.png``, ... and a
``digitStruct.mat`` (MATLAB v7.3, i.e. HDF5): ``/digitStruct/name`` and ``/digitStruct/bbox`` hold
one object reference per image; a bbox group has the fields height/left/top/width/label, each a
(1, 1) number for a single digit or a (k, 1) array of references for k digits. SVHN labels the
digit 0 as 10; the HW2 json uses category id = digit + 1, so label 10 becomes category 1.
"""

import math
import os
import random
import shutil
import tempfile

from tqdm import tqdm

from ...utils.io import atomic_write_json
from ..datasets import DIGIT_CLASSES, EDGE_TOLERANCE, DatasetError, image_id_from_filename
from ..image_io import ImageReadError, open_image

BBOX_FIELDS = ("height", "left", "top", "width", "label")
# Image ids of extra/ images are offset by this so that they never collide with train/ ids.
EXTRA_ID_OFFSET = 1_000_000


def svhn_label_to_category(label, where=""):
    """SVHN label 1..10 (10 = the digit 0) -> HW2 category id 1..10 (digit + 1)."""
    if label != int(label) or not 1 <= label <= 10:
        raise DatasetError(f"{where}label {label} is not an SVHN digit label 1..10")
    return int(label) % 10 + 1


def read_digit_struct(mat_file):
    """
    Read a format-1 ``digitStruct.mat`` into a list of ``(png name, boxes)``, where ``boxes`` is a
    list of dicts with the float fields ``left``, ``top``, ``width``, ``height``, ``label``.
    """
    import h5py

    try:
        f = h5py.File(mat_file, "r")
    except FileNotFoundError:
        raise DatasetError(f"{mat_file}: file not found") from None
    except OSError as e:
        raise DatasetError(
            f"{mat_file}: not an HDF5 file ({e}); SVHN format 1 ships digitStruct.mat as MATLAB v7.3 (HDF5)"
        ) from None
    with f:
        try:
            names, bboxes = f["digitStruct/name"], f["digitStruct/bbox"]
        except KeyError:
            raise DatasetError(f"{mat_file}: no /digitStruct/name and /digitStruct/bbox datasets") from None
        name_refs, bbox_refs = names[()].ravel(), bboxes[()].ravel()
        if len(name_refs) != len(bbox_refs):
            raise DatasetError(f"{mat_file}: {len(name_refs)} names but {len(bbox_refs)} bbox entries")
        entries = []
        for i in tqdm(range(len(name_refs)), desc=f"read {mat_file}", unit="img", leave=False):
            try:
                name = "".join(chr(int(c)) for c in f[name_refs[i]][()].ravel())
                group = f[bbox_refs[i]]
                fields = {k: _numbers(f, group[k]) for k in BBOX_FIELDS}
            except (KeyError, ValueError, TypeError) as e:
                raise DatasetError(f"{mat_file}: entry {i} is malformed ({e})") from None
            lengths = {len(v) for v in fields.values()}
            if len(lengths) != 1:
                raise DatasetError(f"{mat_file}: entry {i} ({name}) has bbox fields of different lengths")
            boxes = [{k: fields[k][j] for k in BBOX_FIELDS} for j in range(lengths.pop())]
            entries.append((name, boxes))
    return entries


def _numbers(f, dataset):
    """The numbers of a bbox field: stored inline for one digit, as object references for several."""
    import h5py

    values = dataset[()].ravel()
    if h5py.check_dtype(ref=dataset.dtype) is not None:
        return [float(f[r][()].ravel()[0]) for r in values]
    return [float(v) for v in values]


def svhn_folder_to_coco(folder, id_offset=0):
    """
    COCO ``images`` and ``annotations`` (without annotation ids) of one SVHN folder. The image id
    is ``id_offset`` + the integer PNG stem. Boxes are kept as given unless they reach more than
    EDGE_TOLERANCE px past the image edge; those are clipped (or dropped if nothing is left).

    Returns:
        images, annotations, sources (image id -> source PNG path), stats ("clipped", "dropped")
    """
    mat_file = os.path.join(folder, "digitStruct.mat")
    images, annotations, sources = [], [], {}
    stats = {"clipped": 0, "dropped": 0, "non_finite": 0, "non_finite_images": []}
    for name, boxes in read_digit_struct(mat_file):
        path = os.path.join(folder, name)
        where = f"{mat_file}: {name}: "
        try:
            with open_image(path, decode=False) as img:
                width, height = img.size
        except ImageReadError as e:
            raise DatasetError(f"{where}{e}") from None
        image_id = id_offset + image_id_from_filename(path)
        if image_id in sources:
            raise DatasetError(f"{where}image id {image_id} repeats {sources[image_id]}")
        sources[image_id] = path
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": width, "height": height})
        for box in boxes:
            if not all(math.isfinite(box[k]) for k in ("left", "top", "width", "height")):
                stats["non_finite_images"].append(path)
            bbox = _fit_box(box, width, height, stats)
            if bbox is not None:
                category_id = svhn_label_to_category(box["label"], where)
                annotations.append(
                    {
                        "image_id": image_id,
                        "bbox": bbox,
                        "category_id": category_id,
                        "area": bbox[2] * bbox[3],
                        "iscrowd": 0,
                    }
                )
    return images, annotations, sources, stats


def _fit_box(box, width, height, stats):
    x, y, w, h = box["left"], box["top"], box["width"], box["height"]
    if not all(math.isfinite(v) for v in (x, y, w, h)):  # NaN / inf in digitStruct.mat: a counted drop
        stats["dropped"] += 1
        stats["non_finite"] += 1
        return None
    if w <= 0 or h <= 0:
        stats["dropped"] += 1
        return None
    tol = EDGE_TOLERANCE
    if x >= -tol and y >= -tol and x + w <= width + tol and y + h <= height + tol:
        return [x, y, w, h]
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        stats["dropped"] += 1
        return None
    stats["clipped"] += 1
    return [x0, y0, x1 - x0, y1 - y0]


def _place(src, dst, link):
    """Hard-link (falling back to a copy across file systems) or copy ``src`` to ``dst`` atomically."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), prefix="." + os.path.basename(dst) + ".", suffix=".tmp")
    os.close(fd)
    try:
        if link:
            os.remove(tmp)
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_split(out_root, split, parts, link, write_json):
    """Place the images of ``parts`` (a list of (images, annotations, sources)) and write the json."""
    image_dir = os.path.join(out_root, split)
    os.makedirs(image_dir, exist_ok=True)
    images = [img for p in parts for img in p[0]]
    with tqdm(total=len(images), desc=f"{'link' if link else 'copy'} {split}", unit="img") as bar:
        for part_images, _, sources in parts:
            for img in part_images:
                _place(sources[img["id"]], os.path.join(image_dir, img["file_name"]), link)
                bar.update()
    annotations = [dict(id=i, **a) for i, a in enumerate((a for p in parts for a in p[1]), 1)]
    json_file = os.path.join(out_root, split + ".json") if write_json else None
    if json_file:
        categories = [{"id": d + 1, "name": name} for d, name in enumerate(DIGIT_CLASSES)]
        atomic_write_json(json_file, {"images": images, "annotations": annotations, "categories": categories})
    return {"images": len(images), "boxes": len(annotations), "image_dir": image_dir, "json": json_file}


def _subset(part, ids):
    images, annotations, sources = part
    return (
        [img for img in images if img["id"] in ids],
        [a for a in annotations if a["image_id"] in ids],
        sources,
    )


def convert_svhn(
    svhn_dir, out_root, valid_fraction=0.1, seed=0, extra=False, test_json=False, link=False, overwrite=False
):
    """
    Convert ``svhn_dir/{train,test[,extra]}`` to ``out_root/{train,valid,test}/*.png`` plus
    ``train.json``, ``valid.json`` (and ``test.json`` if ``test_json``).

    ``train/`` is split at random (``seed``) into ``round(valid_fraction * n)`` valid images and
    the rest; ``extra/`` (if ``extra``) joins the train split with ids offset by EXTRA_ID_OFFSET.
    ``test/`` is optional and keeps its PNG stems as image ids. Images are copied, or hard-linked
    if ``link``. Returns a summary: per split the image and box counts, image folder and json
    path; the numbers of clipped and dropped boxes; and the source images whose boxes held NaN or inf.
    """
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    folders = {key: os.path.join(svhn_dir, key) for key in ("train", "test", "extra")}
    needed = ["train"] + (["extra"] if extra else [])
    for key in needed:
        if not os.path.isdir(folders[key]):
            raise DatasetError(f"{folders[key]}: SVHN folder not found (expected {key}/*.png + {key}/digitStruct.mat)")
    present = needed + (["test"] if os.path.isdir(folders["test"]) else [])
    outputs = ["train", "valid"] + (["test"] if "test" in present else [])
    existing = [
        s for s in outputs if os.path.isdir(os.path.join(out_root, s)) and os.listdir(os.path.join(out_root, s))
    ]
    if existing and not overwrite:
        raise DatasetError(
            f"{out_root}: {', '.join(s + '/' for s in existing)} already hold files (--overwrite replaces them)"
        )

    parsed = {key: svhn_folder_to_coco(folders[key], EXTRA_ID_OFFSET if key == "extra" else 0) for key in present}
    for split in existing:
        shutil.rmtree(os.path.join(out_root, split))
    train = parsed["train"][:3]
    train_ids = sorted(img["id"] for img in train[0])
    valid_ids = set(random.Random(seed).sample(train_ids, round(valid_fraction * len(train_ids))))
    splits = {
        "train": [_subset(train, set(train_ids) - valid_ids)] + ([parsed["extra"][:3]] if extra else []),
        "valid": [_subset(train, valid_ids)],
    }
    if "test" in parsed:
        splits["test"] = [parsed["test"][:3]]
    summary = {
        split: _write_split(out_root, split, parts, link, write_json=split != "test" or test_json)
        for split, parts in splits.items()
    }
    summary["clipped_boxes"] = sum(p[3]["clipped"] for p in parsed.values())
    summary["dropped_boxes"] = sum(p[3]["dropped"] for p in parsed.values())
    summary["non_finite_boxes"] = sum(p[3]["non_finite"] for p in parsed.values())
    summary["non_finite_images"] = sorted({path for p in parsed.values() for path in p[3]["non_finite_images"]})
    return summary
