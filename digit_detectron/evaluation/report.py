"""
The evaluation report: where a model fails and why a number was read wrong.

``write_report(records, predictions, reader, output_dir)`` writes, each PNG with a JSON of its numbers
beside it, and everything in ``report.json``:

* ``pr_curves.png``: per-digit precision / recall at IoU 0.5 (COCO's 101-point interpolation, equal to
  pycocotools' ``precision[0, :, k, 0, -1]``), with AP50 per digit; AP@[.5:.95] per digit from COCOeval;
* ``confusion_matrix.png``: 11 x 11 (digits 0..9 + background) of the digits the reader read, matched
  to the ground truth at IoU 0.5 (a read digit without a match is "background" in the true axis; a
  ground-truth digit left unmatched is "background" in the read axis);
* ``error_kinds.png``: every image's whole number as one kind (``number_error_kind``) with counts
  and shares; ``gallery_<kind>.png``: the least confident images of each error kind, prediction
  beside ground truth;
* ``ap_by_height.png``: COCO AP and AP50 by ground-truth box height band in the image's pixels;
* ``accuracy_by_glyph_source.png``: whole-number accuracy per font (glyph source), for data whose json
  names each image's ``glyph_source`` (the synthetic generator's), so one sees which unseen faces fail.
* ``accuracy_by_ink_contrast.json``: whole-number accuracy per band of the faintest digit's ink
  contrast (``INK_CONTRAST_BANDS``), for data whose json gives each image's ``ink_contrast`` (the
  synthetic generator's ``render.ink_contrast``), so one sees how much of the error is on digits that
  barely stand out from their wall.

``ReportEvaluator`` writes it from an evaluation's own inference pass (``train_net.py --eval-only`` and
the end of training); ``tools/compare_runs.py A B`` prints two reports side by side.
"""

import json
import logging
import os

import numpy as np
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.datasets import get_dataset_dicts
from ..data.image_io import read_image
from ..modeling.number_reader import digits_to_number
from ..utils.boxes import box_iou
from ..utils.io import atomic_open, atomic_write_json
from .drawing import draw_sample, make_grid, save_png
from .number_accuracy import record_ground_truth

__all__ = [
    "BACKGROUND",
    "ERROR_KINDS",
    "HEIGHT_BANDS",
    "INK_CONTRAST_BANDS",
    "accuracy_by_ink_contrast",
    "confusion_matrix",
    "match_read_digits",
    "number_error_kind",
    "pr_curves",
    "ReportEvaluator",
    "write_report",
]

BACKGROUND = 10
ERROR_KINDS = (
    "correct",
    "leading zero",  # the digits are right but for leading zeros: the number (an int) is right too
    "nothing detected",
    "missed digit",
    "extra digit",
    "wrong digit",
    "wrong order",
)
RIGHT_KINDS = ("correct", "leading zero")  # the number (an int) is right
HEIGHT_BANDS = ((0, 16), (16, 32), (32, 64), (64, 1e5))  # ground-truth box height in the image's pixels
# the faintest digit's ink contrast (render.ink_contrast): under 1 the ink differs from its wall by less
# than the wall varies; from 3 up a digit stands out plainly
INK_CONTRAST_BANDS = ((0, 1), (1, 2), (2, 3), (3, 5), (5, float("inf")))
REC_THRESHOLDS = np.linspace(0.0, 1.0, 101)
_logger = logging.getLogger("digit_detectron")


def number_error_kind(read, truth):
    """
    The kind of a reading (strings of digits in reading order, e.g. "123" against "1234"): "correct"
    (equal), "leading zero" (equal once leading zeros are dropped), "nothing detected" (nothing read),
    "wrong order" (the same digits in another order), "missed digit" (fewer digits), "extra digit"
    (more digits), else "wrong digit" (as many digits, some wrong).
    """
    if read == truth:
        return "correct"
    if read and truth and read.lstrip("0") == truth.lstrip("0"):
        return "leading zero"  # the same int (a wall without digits, truth "", read "0": an extra digit)
    if not read:
        return "nothing detected"
    if sorted(read) == sorted(truth):
        return "wrong order"
    if len(read) < len(truth):
        return "missed digit"
    if len(read) > len(truth):
        return "extra digit"
    return "wrong digit"


def match_read_digits(read_boxes, read_classes, read_scores, gt_boxes, gt_classes, iou_thresh=0.5):
    """
    (true class, read class) pairs of one image, BACKGROUND for "none": read digits in decreasing
    score each take the unmatched ground-truth box of highest IoU >= ``iou_thresh`` (any class).
    """
    order = np.argsort(-np.asarray(read_scores, float), kind="stable")
    ious = (
        box_iou(np.asarray(read_boxes)[order], gt_boxes) if len(order) and len(gt_boxes) else np.zeros((len(order), 0))
    )
    taken = np.zeros(len(gt_boxes), bool)
    pairs = []
    for row, i in enumerate(order):
        candidates = np.where(~taken & (ious[row] >= iou_thresh))[0] if ious.shape[1] else []
        if len(candidates):
            j = candidates[np.argmax(ious[row, candidates])]
            taken[j] = True
            pairs.append((int(gt_classes[j]), int(read_classes[i])))
        else:
            pairs.append((BACKGROUND, int(read_classes[i])))
    pairs += [(int(c), BACKGROUND) for c in np.asarray(gt_classes)[~taken]]
    return pairs


def confusion_matrix(pairs):
    """11 x 11 counts, rows the true class, columns the read class (index 10: background)."""
    matrix = np.zeros((11, 11), dtype=np.int64)
    for true, read in pairs:
        matrix[true, read] += 1
    return matrix


def pr_curves(images, iou_thresh=0.5, max_dets=100):
    """
    COCO's precision at 101 recall points per class 0..9, at one IoU threshold, and AP (their mean;
    -1 without ground truth). ``images``: (image id, gt boxes, gt classes, det boxes, det scores, det
    classes) per image, in any order (sorted by id as COCOeval does). Boxes XYXY.
    """
    curves = {}
    for k in range(10):
        scores, matched, num_gt = [], [], 0
        for _, gt_boxes, gt_classes, boxes, det_scores, classes in sorted(images, key=lambda x: x[0]):
            g = np.asarray(gt_boxes, float).reshape(-1, 4)[np.asarray(gt_classes) == k]
            keep = np.asarray(classes) == k
            d, s = np.asarray(boxes, float).reshape(-1, 4)[keep], np.asarray(det_scores, float)[keep]
            order = np.argsort(-s, kind="mergesort")[:max_dets]
            d, s = d[order], s[order]
            num_gt += len(g)
            taken = np.zeros(len(g), bool)
            ious = box_iou(d, g) if len(d) and len(g) else np.zeros((len(d), len(g)))
            for row in range(len(d)):
                best, best_iou = -1, min(iou_thresh, 1 - 1e-10)
                for j in range(len(g)):
                    if not taken[j] and ious[row, j] >= best_iou:
                        best, best_iou = j, ious[row, j]
                if best >= 0:
                    taken[best] = True
                matched.append(best >= 0)
            scores += list(s)
        precision = np.zeros(len(REC_THRESHOLDS))
        if num_gt == 0:
            curves[k] = {"recall": REC_THRESHOLDS.tolist(), "precision": precision.tolist(), "ap": -1.0}
            continue
        order = np.argsort(-np.asarray(scores), kind="mergesort")
        tp = np.cumsum(np.asarray(matched, float)[order]) if order.size else np.zeros(0)
        fp = np.cumsum(1.0 - np.asarray(matched, float)[order]) if order.size else np.zeros(0)
        recall = tp / num_gt
        prec = tp / np.maximum(tp + fp, np.spacing(1))
        prec = np.maximum.accumulate(prec[::-1])[::-1] if prec.size else prec
        for i, idx in enumerate(np.searchsorted(recall, REC_THRESHOLDS, side="left")):
            if idx < len(prec):
                precision[i] = prec[idx]
        curves[k] = {"recall": REC_THRESHOLDS.tolist(), "precision": precision.tolist(), "ap": float(precision.mean())}
    return curves


def coco_ap_tables(images, bands=HEIGHT_BANDS):
    """
    pycocotools on the same detections: AP@[.5:.95] and AP50 per class, and AP / AP50 of all digits
    by ground-truth height band (COCO's area ranges with area := height^2). In percent; -1 = no data.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {"images": [], "annotations": [], "categories": [{"id": k + 1, "name": str(k)} for k in range(10)]}
    dets = []
    for image_id, gt_boxes, gt_classes, boxes, scores, classes in images:
        gt["images"].append({"id": int(image_id)})
        for box, cls in zip(np.asarray(gt_boxes).reshape(-1, 4), gt_classes):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            gt["annotations"].append(
                {"id": len(gt["annotations"]) + 1, "image_id": int(image_id), "category_id": int(cls) + 1,
                 "bbox": [float(box[0]), float(box[1]), w, h], "area": h * h, "iscrowd": 0}
            )  # fmt: skip
        for box, score, cls in zip(np.asarray(boxes).reshape(-1, 4), scores, classes):
            dets.append(
                {"image_id": int(image_id), "category_id": int(cls) + 1, "score": float(score),
                 "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]}
            )  # fmt: skip
    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    if not dets or not gt["annotations"]:
        return {"per_class": {}, "by_height": {}}
    coco_dt = coco_gt.loadRes(dets)
    for ann in coco_dt.anns.values():
        ann["area"] = ann["bbox"][3] ** 2
    ev = COCOeval(coco_gt, coco_dt, "bbox")
    ev.params.areaRng = [[0, 1e10]] + [[lo * lo, hi * hi] for lo, hi in bands]
    ev.params.areaRngLbl = ["all"] + [_band_name(b) for b in bands]
    ev.evaluate()
    ev.accumulate()
    precision = ev.eval["precision"]  # [T, R, K, A, M]

    def mean(p):
        p = p[p > -1]
        return float(p.mean() * 100) if p.size else -1.0

    per_class = {
        str(k): {"AP": mean(precision[:, :, k, 0, -1]), "AP50": mean(precision[0, :, k, 0, -1])} for k in range(10)
    }
    by_height = {}
    for a, band in enumerate(bands, start=1):
        count = sum(1 for ann in gt["annotations"] if band[0] <= ann["bbox"][3] < band[1])
        by_height[_band_name(band)] = {
            "AP": mean(precision[:, :, :, a, -1]),
            "AP50": mean(precision[0, :, :, a, -1]),
            "boxes": count,
        }
    return {
        "per_class": per_class,
        "by_height": by_height,
        "coco_precision_iou50": precision[0, :, :, 0, -1].T.tolist(),
    }


def _band_name(band, unit=" px"):
    lo, hi = band
    return f">={lo:g}{unit}" if hi >= 1e5 else f"{lo:g}-{hi:g}{unit}"


def evaluate_readings(records, predictions, reader):
    """
    Per image: the ground truth, the detections, the digits read and the error kind. ``predictions``:
    {file_name: (boxes XYXY, scores, classes 0..9)}. Unlabelled records are skipped.
    """
    rows = []
    for index, record in enumerate(records):
        truth = record_ground_truth(record)
        if truth is None or record["file_name"] not in predictions:
            continue
        boxes, scores, classes = (np.asarray(x) for x in predictions[record["file_name"]])
        chosen = reader.select(boxes, scores, classes).numpy() if len(boxes) else np.zeros(0, int)
        read_digits = "".join(str(int(c)) for c in classes[chosen])
        true_digits = "".join(str(int(c)) for c in truth["digits"])
        rows.append(
            {
                "image_id": record.get("image_id", index),
                "file_name": record["file_name"],
                "truth": truth,
                "boxes": boxes,
                "scores": scores,
                "classes": classes,
                "chosen": chosen,
                "read": read_digits,
                "true": true_digits,
                "number": digits_to_number([int(c) for c in read_digits]),
                "kind": number_error_kind(read_digits, true_digits),
                "glyph_source": record.get("glyph_source"),
                "ink_contrast": record.get("ink_contrast"),
            }
        )
    return rows


def accuracy_by_glyph_source(rows):
    """{glyph source: {"images", "accuracy"}} over the rows (``evaluate_readings``) that name one, by name."""
    groups = {}
    for r in rows:
        if r["glyph_source"] is not None:
            groups.setdefault(r["glyph_source"], []).append(r["kind"] in RIGHT_KINDS)
    return {name: {"images": len(right), "accuracy": sum(right) / len(right)} for name, right in sorted(groups.items())}


def accuracy_by_ink_contrast(rows):
    """
    {band label: {"images", "accuracy"}} of the rows (``evaluate_readings``) that give an ink contrast,
    by the band (``INK_CONTRAST_BANDS``) of their faintest digit's; bands without an image are left out.
    """
    groups = {}
    for r in rows:
        if r["ink_contrast"] is not None:
            band = next(b for b in INK_CONTRAST_BANDS if b[0] <= r["ink_contrast"] < b[1])
            groups.setdefault(band, []).append(r["kind"] in RIGHT_KINDS)
    return {
        _band_name(band, unit=""): {"images": len(right), "accuracy": sum(right) / len(right)}
        for band, right in sorted(groups.items())
    }


def write_report(records, predictions, reader, output_dir, gallery_size=8, title=""):
    """Write the report (module docstring) into ``output_dir``; returns the report dict (report.json)."""
    os.makedirs(output_dir, exist_ok=True)
    rows = evaluate_readings(records, predictions, reader)
    if not rows:
        raise ValueError(f"{title or output_dir}: no labelled image to report on")
    images = [
        (i, r["truth"]["boxes"], r["truth"]["classes"], r["boxes"], r["scores"], r["classes"])
        for i, r in enumerate(rows)
    ]
    curves = pr_curves(images)
    tables = coco_ap_tables(images)
    pairs = []
    for r in rows:
        c = r["chosen"]
        pairs += match_read_digits(
            r["boxes"][c], r["classes"][c], r["scores"][c], r["truth"]["boxes"], r["truth"]["classes"]
        )
    matrix = confusion_matrix(pairs)
    counts = {kind: sum(r["kind"] == kind for r in rows) for kind in ERROR_KINDS}
    n = len(rows)
    kinds = {kind: {"count": c, "share": c / n} for kind, c in counts.items()}
    report = {
        "title": title,
        "images": n,
        "accuracy": sum(counts[k] for k in RIGHT_KINDS) / n,
        "error_kinds": kinds,
        "ap_per_class": tables["per_class"],
        "ap_by_height": tables["by_height"],
        "pr_iou50": {
            str(k): {"ap50": v["ap"] * 100 if v["ap"] >= 0 else -1.0, "precision": v["precision"]}
            for k, v in curves.items()
        },
        "confusion_matrix": {"rows_true_cols_read": matrix.tolist(), "labels": [str(d) for d in range(10)] + ["bg"]},
        "galleries": {},
    }
    by_source = accuracy_by_glyph_source(rows)
    if by_source:
        report["accuracy_by_glyph_source"] = by_source
    by_contrast = accuracy_by_ink_contrast(rows)
    if by_contrast:
        report["accuracy_by_ink_contrast"] = by_contrast
    _plot_pr(curves, tables["per_class"], os.path.join(output_dir, "pr_curves.png"), title)
    _plot_confusion(matrix, os.path.join(output_dir, "confusion_matrix.png"), title)
    _plot_kinds(kinds, os.path.join(output_dir, "error_kinds.png"), title)
    _plot_heights(tables["by_height"], os.path.join(output_dir, "ap_by_height.png"), title)
    beside = {"pr_curves": "pr_iou50", "confusion_matrix": "confusion_matrix", "error_kinds": "error_kinds"}
    beside["ap_by_height"] = "ap_by_height"
    if by_source:
        _plot_sources(by_source, report["accuracy"], os.path.join(output_dir, "accuracy_by_glyph_source.png"), title)
        beside["accuracy_by_glyph_source"] = "accuracy_by_glyph_source"
    if by_contrast:
        beside["accuracy_by_ink_contrast"] = "accuracy_by_ink_contrast"
    for name, key in beside.items():
        atomic_write_json(os.path.join(output_dir, f"{name}.json"), {key: report[key], "title": title}, indent=1)
    for kind in ERROR_KINDS[2:]:
        chosen = sorted((r for r in rows if r["kind"] == kind), key=_confidence)[:gallery_size]
        if chosen:
            path = os.path.join(output_dir, f"gallery_{kind.replace(' ', '_')}.png")
            _gallery(chosen, path)
            listing = [{"file_name": r["file_name"], "read": r["read"], "true": r["true"]} for r in chosen]
            atomic_write_json(path[:-4] + ".json", {"kind": kind, "images": listing}, indent=1)
            report["galleries"][kind] = path
    atomic_write_json(os.path.join(output_dir, "report.json"), report, indent=1)
    return report


def headline(report):
    """One line: accuracy and the error kinds with counts, e.g. for make demo's summary."""
    errors = [(k, v["count"]) for k, v in report["error_kinds"].items() if k not in RIGHT_KINDS and v["count"]]
    text = ", ".join(f"{k} {c}" for k, c in sorted(errors, key=lambda x: -x[1])) or "none"
    return f"{report['images']} images, {report['accuracy']:.2%} read right; errors: {text}"


def _confidence(row):
    return float(row["scores"][row["chosen"]].min()) if len(row["chosen"]) else 0.0


def _gallery(rows, path):
    panels = []
    for r in rows:
        c = r["chosen"]
        prediction = {
            "boxes": r["boxes"][c],
            "scores": r["scores"][c],
            "classes": r["classes"][c],
            "number": r["number"],
        }
        panels.append(draw_sample(read_image(r["file_name"], "RGB"), prediction, r["truth"]))
    save_png(make_grid(panels, columns=2), path)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    """Write ``fig`` as a PNG (atomically) and close it."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    _figure().close(fig)


def _plot_pr(curves, per_class, path, title):
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for k, curve in curves.items():
        if curve["ap"] < 0:
            continue
        ap = per_class.get(str(k), {}).get("AP", -1)
        ax.plot(curve["recall"], curve["precision"], label=f'"{k}" AP50 {curve["ap"] * 100:.1f}, AP {ap:.1f}')
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"{title} PR at IoU 0.5".strip())
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    _save(fig, path)


def _plot_confusion(matrix, path, title):
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    shown = matrix.astype(float)
    ax.imshow(np.log1p(shown), cmap="Blues")
    labels = [str(d) for d in range(10)] + ["bg"]
    ax.set_xticks(range(11), labels)
    ax.set_yticks(range(11), labels)
    ax.set(xlabel="read (digits the reader kept)", ylabel="true (ground truth)")
    ax.set_title(f"{title} confusion at IoU 0.5".strip())
    for i in range(11):
        for j in range(11):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if i == j else "black")  # fmt: skip
    _save(fig, path)


def _plot_kinds(kinds, path, title):
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    names = list(kinds)
    counts = [kinds[k]["count"] for k in names]
    bars = ax.barh(
        names[::-1],
        counts[::-1],
        color=["#4c9f50" if k in RIGHT_KINDS else "#c44e52" for k in names[::-1]],
    )
    for bar, k in zip(bars, names[::-1]):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {kinds[k]['count']} ({kinds[k]['share']:.1%})",
                va="center", fontsize=8)  # fmt: skip
    ax.set(xlabel="images", title=f"{title} whole-number outcome".strip())
    _save(fig, path)


def _plot_heights(by_height, path, title):
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    names = list(by_height)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [by_height[n]["AP"] for n in names], 0.4, label="AP@[.5:.95]")
    ax.bar(x + 0.2, [by_height[n]["AP50"] for n in names], 0.4, label="AP50")
    ax.set_xticks(x, [f"{n}\n({by_height[n]['boxes']} boxes)" for n in names])
    ax.set(ylabel="AP (%)", ylim=(0, 100), title=f"{title} AP by digit height".strip())
    ax.legend(fontsize=8)
    _save(fig, path)


def _plot_sources(by_source, accuracy, path, title):
    plt = _figure()
    names = sorted(by_source, key=lambda n: by_source[n]["accuracy"])
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.28 * len(names)))
    shares = [by_source[n]["accuracy"] * 100 for n in names]
    ax.barh(names, shares, color=["#c44e52" if s < accuracy * 100 else "#4c9f50" for s in shares])
    for i, n in enumerate(names):
        ax.text(shares[i], i, f" {shares[i]:.0f}% of {by_source[n]['images']}", va="center", fontsize=7)
    ax.axvline(accuracy * 100, color="black", lw=1, ls="--", label=f"all images {accuracy:.1%}")
    ax.set(xlabel="whole numbers read right (%)", xlim=(0, 112), title=f"{title} accuracy by glyph source".strip())
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def load_report(path):
    """report.json of a report folder (or the file itself)."""
    path = os.path.join(path, "report.json") if os.path.isdir(path) else path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no report (train_net.py --eval-only writes OUTPUT_DIR/report/<dataset>/)")
    with open(path) as f:
        return json.load(f)


class ReportEvaluator(DatasetEvaluator):
    """
    Writes the report of a labelled dataset into ``output_dir`` from the predictions of the evaluation's
    own inference pass (the same ``instances`` the COCO and number-accuracy evaluators score, so the
    report's accuracy is theirs). ``DigitTrainer.build_evaluator(..., report_dir=...)`` adds it.
    Returns no metrics; the report dict is kept as ``self.report`` (None for an unlabelled dataset).
    """

    def __init__(self, dataset_name, reader, output_dir, distributed=True):
        self.dataset_name = dataset_name
        self.reader = reader
        self.output_dir = output_dir
        self.distributed = distributed
        self.report = None
        self.reset()

    def reset(self):
        self._predictions = {}

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            self._predictions[inp["file_name"]] = (
                inst.pred_boxes.tensor.numpy(),
                inst.scores.numpy(),
                inst.pred_classes.numpy(),
            )

    def evaluate(self):
        predictions = self._predictions
        if self.distributed:
            comm.synchronize()
            parts = comm.gather(predictions, dst=0)
            if not comm.is_main_process():
                return {}
            predictions = {k: v for part in parts for k, v in part.items()}
        records = [r for r in get_dataset_dicts(self.dataset_name) if "annotations" in r]
        if not records:
            _logger.info(f"report: {self.dataset_name} has no annotations, skipped")
            return {}
        self.report = write_report(records, predictions, self.reader, self.output_dir, title=self.dataset_name)
        _logger.info(f"report: {self.output_dir} ({headline(self.report)})")
        return {}
