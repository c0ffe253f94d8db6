"""
The HW2 submission files, written and read in one place:

* ``pred.json``: COCO results, ``{"image_id", "bbox": [x, y, w, h], "score", "category_id": 1..10}``
  per digit box with score >= DIGITS.PRED_JSON_SCORE_THRESH (original pixels, 2 decimals, scores
  5 decimals);
* ``pred.csv``: ``image_id,pred_label`` per image, sorted by id: the number the reader reads, or -1.

Image ids are the integer file stems unless an id map names them (``load_id_map``).

The pair is written as one: both files go to temporary files first, then ``pred_manifest.json``
(run id, SHA-256 of both new files), then both are renamed into place. A process killed before or
between the renames leaves files the manifest does not vouch for, which ``check_pair`` reports
(tools/visualize.py checks it); temporary files left by a killed run are removed by the next one
(those of a live run are its own, and kept). ``tools/predict.py`` holds ``OUTPUT/.predict.lock`` while it
runs, so a second run into the same folder stops with one line instead of mixing the pair.
"""

import csv
import json
import math
import os
import time
import uuid

import numpy as np

from ..data.datasets import (
    CONTIGUOUS_TO_DATASET_ID,
    DATASET_ID_TO_CONTIGUOUS,
    DatasetError,
    image_id_from_filename,
    read_json,
)
from ..utils.io import atomic_write_json, remove_stale_temporaries, sha256_of, temporary_beside

PRED_JSON = "pred.json"
PRED_CSV = "pred.csv"
MANIFEST = "pred_manifest.json"
CSV_HEADER = ["image_id", "pred_label"]


def pred_json_entries(boxes, scores, classes, image_id, score_thresh):
    """
    pred.json entries of one image's detections scoring >= ``score_thresh``: ``boxes`` XYXY in
    original pixels, ``classes`` contiguous 0..9 (numpy, torch or lists). XYWH with 2 decimals,
    scores with 5, category ids 1..10.
    """
    results = []
    for box, score, cls in zip(np.asarray(boxes, dtype=float).reshape(-1, 4), np.asarray(scores), np.asarray(classes)):
        if score < score_thresh:
            continue
        x0, y0, x1, y1 = (round(float(v), 2) for v in box)
        results.append(
            {
                "image_id": image_id,
                "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                "score": round(float(score), 5),
                "category_id": CONTIGUOUS_TO_DATASET_ID[int(cls)],
            }
        )
    return results


def instances_to_pred_json(instances, image_id, score_thresh):
    """pred.json entries of a detectron2 ``Instances`` (pred_boxes, scores, pred_classes); see ``pred_json_entries``."""
    return pred_json_entries(
        instances.pred_boxes.tensor.numpy(),
        instances.scores.numpy(),
        instances.pred_classes.numpy(),
        image_id,
        score_thresh,
    )


def write_predictions(output_dir, run, image_ids, reader, pred_json_score_thresh):
    """
    Write ``output_dir/pred.json`` and ``output_dir/pred.csv`` (atomically) for every file of
    ``image_ids`` (``{file: id}``); files missing from ``run.instances`` get no boxes and -1.
    Returns the two paths.
    """
    by_id = sorted((image_id, path) for path, image_id in image_ids.items())
    boxes, rows = [], []
    for image_id, path in by_id:
        instances = run.instances.get(path)
        if instances is None:
            rows.append((image_id, -1))
            continue
        boxes.extend(instances_to_pred_json(instances, image_id, pred_json_score_thresh))
        rows.append((image_id, reader.read_instances(instances)))
    json_path = os.path.join(output_dir, PRED_JSON)
    csv_path = os.path.join(output_dir, PRED_CSV)
    manifest_path = os.path.join(output_dir, MANIFEST)
    for path in (json_path, csv_path, manifest_path):
        remove_stale_temporaries(path)
    staged = []
    try:
        for path, write in ((json_path, lambda f: json.dump(boxes, f)), (csv_path, lambda f: _write_csv(f, rows))):
            fd, tmp = temporary_beside(path)
            staged.append((tmp, path))
            try:
                with os.fdopen(fd, "w", newline="") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:  # e.g. disk full: name the file; the old pair stays as it was
                raise OSError(e.errno, f"{tmp}: {e.strerror} (writing {os.path.basename(path)})") from e
            os.chmod(tmp, 0o644)
        manifest = {
            "run_id": uuid.uuid4().hex,
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
            "images": len(rows),
            "boxes": len(boxes),
            PRED_JSON: sha256_of(staged[0][0]),
            PRED_CSV: sha256_of(staged[1][0]),
        }
        atomic_write_json(manifest_path, manifest, indent=2)  # before the renames: it names the new pair
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.remove(tmp)
    return json_path, csv_path


def _write_csv(f, rows):
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)


def check_pair(pred_json, pred_csv):
    """
    A DatasetError unless ``pred_manifest.json`` beside ``pred_json`` vouches for both files (one run
    wrote them). Pairs without a manifest (written by other tools) pass; returns the manifest or None.
    """
    manifest_path = os.path.join(os.path.dirname(os.path.abspath(pred_json)), MANIFEST)
    if not os.path.isfile(manifest_path):
        return None
    manifest = read_json(manifest_path, "prediction manifest")
    for path, key in ((pred_json, PRED_JSON), (pred_csv, PRED_CSV)):
        if path is not None and os.path.isfile(path) and manifest.get(key) != sha256_of(path):
            raise DatasetError(
                f"{path}: not the file that run {manifest.get('run_id')} wrote ({manifest_path}): "
                "pred.json and pred.csv may come from different runs; run tools/predict.py again"
            )
    return manifest


def load_pred_json(path):
    """pred.json (COCO results, category_id 1..10) as ``{image_id: {"boxes" XYXY, "scores", "classes" 0..9}}``."""
    results = read_json(path)
    if not isinstance(results, list):
        raise DatasetError(f"{path}: expected a json list of detections, got {type(results).__name__}")
    per_image = {}
    for i, det in enumerate(results):
        try:
            image_id, category_id = int(det["image_id"]), int(det["category_id"])
            x, y, w, h = (float(v) for v in det["bbox"])
            score = float(det["score"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(
                f"{path}: detection {i} ({det!r}) needs image_id, category_id, bbox [x, y, w, h] and score"
            ) from None
        if category_id not in DATASET_ID_TO_CONTIGUOUS:
            raise DatasetError(f"{path}: detection {i} has category_id {category_id}, not in 1..10")
        if not all(math.isfinite(v) for v in (x, y, w, h, score)):
            raise DatasetError(f"{path}: detection {i} has a non-finite bbox or score")
        entry = per_image.setdefault(image_id, {"boxes": [], "scores": [], "classes": []})
        entry["boxes"].append([x, y, x + w, y + h])
        entry["scores"].append(score)
        entry["classes"].append(DATASET_ID_TO_CONTIGUOUS[category_id])
    return {
        k: {
            "boxes": np.asarray(v["boxes"]).reshape(-1, 4),
            "scores": np.asarray(v["scores"]),
            "classes": np.asarray(v["classes"], dtype=int),
        }
        for k, v in per_image.items()
    }


def load_pred_csv(path):
    """pred.csv (``image_id,pred_label``) as ``{image_id: number}``."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    if not rows or [c.strip() for c in rows[0]] != CSV_HEADER:
        raise DatasetError(f"{path}: the first line must be the header '{','.join(CSV_HEADER)}'")
    numbers = {}
    for lineno, row in enumerate(rows[1:], 2):
        if not row:
            continue
        try:
            image_id, label = (int(c) for c in row)
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: expected two integers 'image_id,pred_label', got {row}") from None
        numbers[image_id] = label
    return numbers


def load_id_map(path):
    """
    ``{file name: image id}`` from a json that is either such a dict or a COCO json whose
    ``images`` entries give ``file_name`` and ``id``.
    """
    data = read_json(path, "id map")
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        try:
            data = {os.path.basename(img["file_name"]): img["id"] for img in data["images"]}
        except (KeyError, TypeError):
            raise DatasetError(f"{path}: every 'images' entry needs 'file_name' and 'id'") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a json object {{file name: image id}} or a COCO json with 'images'")
    bad = {k: v for k, v in data.items() if not isinstance(v, int) or isinstance(v, bool)}
    if bad:
        raise DatasetError(f"{path}: image ids must be integers, got {dict(list(bad.items())[:5])}")
    return data


def resolve_image_ids(files, id_map=None):
    """
    ``{file: image id}``: the id map's entry for the file name if ``id_map`` is given, else the integer
    file stem. A file without an id, or two files with one id, is an error naming the files.
    """
    ids = {}
    for path in files:
        if id_map is None:
            ids[path] = image_id_from_filename(path)
        elif os.path.basename(path) in id_map:
            ids[path] = id_map[os.path.basename(path)]
        else:
            raise DatasetError(f"{path}: file name '{os.path.basename(path)}' is not in the id map")
    seen = {}
    for path, image_id in ids.items():
        if image_id in seen:
            raise DatasetError(f"{seen[image_id]} and {path} both have image id {image_id}")
        seen[image_id] = path
    return ids
