"""
Measure the reader thresholds and the pred.json score threshold on a labelled split: the model runs
once with a low ROI score threshold, then every candidate is scored on the stored detections.

The best of hundreds of reader candidates on a few hundred images beats the config's reader partly by
chance: on 2,000 out-of-style images, thresholds chosen on 400 (or 1,000) others read 0.1-0.6 points
*fewer* numbers on the rest than the config's one threshold of 0.5 (recipe log, run 12). So the best
candidate is adopted only where it beats the config's reader beyond chance (``beats_beyond_chance``:
the images it reads right and the config's reader wrong outnumber the reverse by at least
ADOPT_SIGMAS standard deviations of a sign test); otherwise the config's reader stays.
"""

import contextlib
import io
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import yaml
from detectron2.data import DatasetCatalog
from detectron2.data.datasets.coco import convert_to_coco_dict
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..evaluation.number_accuracy import NumberAccuracyEvaluator
from ..modeling.number_reader import NumberReader, class_agnostic_nms, read_after_nms
from ..utils.io import atomic_open
from .predictor import DigitPredictor, PredictionRun
from .submission import pred_json_entries

DEFAULT_SCORE_GRID = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
DEFAULT_NMS_GRID = (0.2, 0.3, 0.4, 0.5, 0.6)
DEFAULT_PRED_JSON_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
# A measured reader replaces the config's when its net gain in images read right is at least this
# many standard deviations of a sign test over the images where the two readers disagree. Simulated
# on 2,000 out-of-style images (tune on 400, score on 1,000 others, 6 draws x 3 models): with the
# config's (0.5,) it never adopted (gain +0.00, where adopting the best always lost 0.2-0.6 points);
# with the old ladder (0.7, 0.5, 0.3) it adopted 13 of 18 times for +1.1..+1.6 points.
ADOPT_SIGMAS = 2.0


def beats_beyond_chance(right_new, right_current, sigmas=ADOPT_SIGMAS):
    """
    (wins, losses, adopt) for per-image correctness arrays of a new and the current reader: wins are
    images only the new one reads right, losses the reverse; adopt when wins - losses >= 1 and
    >= ``sigmas`` * sqrt(wins + losses).
    """
    right_new, right_current = np.asarray(right_new, bool), np.asarray(right_current, bool)
    wins, losses = int((right_new & ~right_current).sum()), int((~right_new & right_current).sum())
    return wins, losses, wins - losses >= max(1.0, sigmas * math.sqrt(wins + losses))


def ladders(score_grid, max_rungs):
    """Every decreasing ladder of 1..max_rungs thresholds from ``score_grid``."""
    grid = sorted(set(score_grid), reverse=True)
    return [c for n in range(1, max_rungs + 1) for c in itertools.combinations(grid, n)]


def search_reader_thresholds(
    detections, ground_truth, score_grid, nms_grid, max_digits, max_rungs=3, line_filter=False, min_top_score=0.0
):
    """
    Number accuracy (percent) of every (ladder, NMS threshold) on ``detections`` (dicts of numpy
    ``boxes`` XYXY, ``scores``, ``classes`` per ``image_id``) against ``ground_truth`` ({image_id: number}).
    Returns ``[(accuracy, ladder, nms_thresh)]``, best first; ties go to fewer rungs, then higher thresholds.
    """
    grid = sorted(set(score_grid), reverse=True)
    column = {t: j for j, t in enumerate(grid)}
    truth = np.array([ground_truth[d["image_id"]] for d in detections])
    rows = []
    for nms_thresh in nms_grid:
        # Reading of each image at each single threshold; a ladder takes its first rung's non-empty one.
        single = np.full((len(detections), len(grid)), -1, dtype=np.int64)
        for i, d in enumerate(detections):
            boxes, scores, classes = (torch.as_tensor(d[k]) for k in ("boxes", "scores", "classes"))
            keep = class_agnostic_nms(boxes, scores, nms_thresh, classes)
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
            by_count = {}  # the reading depends only on how many digits pass the threshold
            for j, t in enumerate(grid):
                n = int((scores >= t).sum())
                if n not in by_count:
                    by_count[n] = read_after_nms(boxes, scores, classes, (t,), max_digits, line_filter, min_top_score)
                single[i, j] = by_count[n]
        for ladder in ladders(grid, max_rungs):
            answer = np.full(len(detections), -1, dtype=np.int64)
            for t in reversed(ladder):
                reading = single[:, column[t]]
                answer = np.where(reading != -1, reading, answer)
            rows.append((100.0 * float(np.mean(answer == truth)), ladder, nms_thresh))
    rows.sort(key=lambda r: (-r[0], len(r[1]), [-t for t in r[1]], r[2]))
    return rows


def pred_json_aps(detections, dataset_name, score_grid):
    """
    COCO box AP (percent, pycocotools as in COCOEvaluator) of the detections scoring >= each threshold,
    encoded as pred.json encodes them (``submission.pred_json_entries``).
    Returns ``[(thresh, AP)]`` by increasing threshold; AP is nan when no box is kept.
    """
    coco_gt = COCO()
    coco_gt.dataset = convert_to_coco_dict(dataset_name)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    results = []
    for thresh in sorted(set(score_grid)):
        coco_results = [
            entry
            for d in detections
            for entry in pred_json_entries(d["boxes"], d["scores"], d["classes"], d["image_id"], thresh)
        ]
        if not coco_results:
            results.append((thresh, math.nan))
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval = COCOeval(coco_gt, coco_gt.loadRes(coco_results), "bbox")
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        results.append((thresh, 100.0 * float(coco_eval.stats[0])))
    return results


def best_pred_json_thresh(aps):
    """The threshold of the highest AP in ``pred_json_aps``' result; ties go to the higher threshold."""
    finite = [(ap, t) for t, ap in aps if math.isfinite(ap)]
    if not finite:
        raise ValueError("no pred.json threshold keeps any box: the model predicts nothing")
    return max(finite)[1]


@dataclass
class TuningResult:
    dataset_name: str
    num_images: int
    current_accuracy: float  # with the config's reader
    current_reader: NumberReader
    rows: list  # search_reader_thresholds' result
    aps: list  # pred_json_aps' result
    measured_reader: NumberReader  # the best row's
    wins: int  # images the measured reader reads right and the config's wrong
    losses: int  # the reverse
    best_reader: NumberReader  # the measured reader where it beats the config's beyond chance, else the config's
    best_pred_json_thresh: float
    run: PredictionRun  # the model's run; its unreadable files are scored as images without detections
    # With a digit-free dataset: its name, images, the gate (MIN_TOP_SCORE) chosen on it and the share of
    # its images read as a number without / with the gate (percent).
    digit_free: str = ""
    digit_free_images: int = 0
    min_top_score: float = 0.0
    free_read_before: float = 0.0
    free_read_after: float = 0.0


def top_scores(run, records):
    """The highest detection score of each record's image in ``run`` (0 for none)."""
    tops = []
    for record in records:
        instances = run.instances.get(record["file_name"])
        tops.append(float(instances.scores.max()) if instances is not None and len(instances) else 0.0)
    return tops


def gate_for(tops, max_read_percent):
    """
    The least MIN_TOP_SCORE under which at most ``max_read_percent`` of images with these top scores are
    read as a number (images whose top score is at least the gate are read).
    """
    ranked = sorted(tops, reverse=True)
    allowed = int(len(ranked) * max_read_percent / 100.0)
    if allowed >= len(ranked):
        return 0.0
    return min(float(np.nextafter(np.float32(ranked[allowed]), np.float32(2.0))), 1.0)


def _gate_on_digit_free(cfg, reader, free_records, max_free_read, batch_size=8, progress=True):
    """
    (gate, percent read before, percent read after): the MIN_TOP_SCORE under which at most
    ``max_free_read`` percent of ``free_records`` (images without digits) are read by ``reader``'s
    thresholds, and the shares read by ``reader`` as it is and with that gate.

    The walls are read as the model will read them: ``reader``'s score thresholds, with the config's
    second look. Those thresholds pick the digits a cropped second look is about (``DIGITS.SECOND_LOOK``),
    so an image's last detections, and its top score, depend on them; with a crop they do not depend
    on the gate (the gate passes all of a reading's digits or none, and the crop is around the same
    digits either way), so one run without a gate gives each wall's top score under any gate. (Read
    with the tuning's low threshold instead, the walls' top scores were others than the reader's: on a
    ``make demo`` model the gate read 1.2% of valid_free instead of the 1.5% asked for.)
    """
    free_cfg = cfg.clone()
    free_cfg.defrost()
    free_cfg.DIGITS.READER.SCORE_THRESHS = tuple(reader.score_threshs)
    free_cfg.DIGITS.READER.NMS_THRESH = reader.nms_thresh
    free_cfg.DIGITS.READER.MIN_TOP_SCORE = 0.0
    free_run = DigitPredictor(free_cfg).predict_files([r["file_name"] for r in free_records], batch_size, progress)
    instances = [free_run.instances.get(r["file_name"]) for r in free_records]
    gate = gate_for(top_scores(free_run, free_records), max_free_read)

    def read_share(r):
        readings = [r(i.pred_boxes.tensor, i.scores, i.pred_classes) if i is not None else -1 for i in instances]
        return 100.0 * sum(n != -1 for n in readings) / max(len(readings), 1)

    gated = NumberReader(reader.score_threshs, reader.nms_thresh, reader.max_digits, reader.line_filter, gate)
    return gate, read_share(reader), read_share(gated)


def _empty_instances():
    return Instances(
        (0, 0),
        pred_boxes=Boxes(torch.zeros(0, 4)),
        scores=torch.zeros(0),
        pred_classes=torch.zeros(0, dtype=torch.long),
    )


def tune(
    cfg,
    dataset_name,
    score_grid=DEFAULT_SCORE_GRID,
    nms_grid=DEFAULT_NMS_GRID,
    pred_json_grid=DEFAULT_PRED_JSON_GRID,
    max_rungs=3,
    batch_size=8,
    progress=True,
    digit_free=None,
    max_free_read=2.0,
):
    """
    Run the model of ``cfg`` once on ``dataset_name`` and measure every candidate threshold. With
    ``digit_free`` (a registered dataset of images without digits), first choose the reader's
    MIN_TOP_SCORE so that at most ``max_free_read`` percent of them are read as a number when read as the
    model reads them (``_gate_on_digit_free``); the thresholds are then measured, and compared with the
    config's, under that gate (and the gate chosen again if other thresholds are adopted).
    """
    current = NumberReader.from_config(cfg)
    low = min(min(score_grid), min(pred_json_grid), min(current.score_threshs))
    run_cfg = cfg.clone()
    run_cfg.defrost()
    run_cfg.DIGITS.PRED_JSON_SCORE_THRESH = low
    run_cfg.DIGITS.READER.SCORE_THRESHS = (low,)
    records = DatasetCatalog.get(dataset_name)
    predictor = DigitPredictor(run_cfg)
    run = predictor.predict_files([r["file_name"] for r in records], batch_size, progress)
    free = {}
    if digit_free:
        free_records = DatasetCatalog.get(digit_free)
        if any(r.get("annotations") for r in free_records):
            raise ValueError(f"--digit-free {digit_free}: holds digit boxes; it must be images without digits")
        gate, before, after = _gate_on_digit_free(cfg, current, free_records, max_free_read, batch_size, progress)
        current = NumberReader(current.score_threshs, current.nms_thresh, current.max_digits, current.line_filter, gate)
        free = {
            "digit_free": digit_free,
            "digit_free_images": len(free_records),
            "min_top_score": gate,
            "free_read_before": before,
            "free_read_after": after,
        }

    evaluator = NumberAccuracyEvaluator(dataset_name, current, distributed=False)
    evaluator.reset()
    for record in records:
        instances = run.instances.get(record["file_name"])
        evaluator.process([record], [{"instances": instances if instances is not None else _empty_instances()}])
    current_accuracy = evaluator.evaluate()["number"]["accuracy"]

    rows = search_reader_thresholds(
        evaluator.detections,
        evaluator.ground_truth,
        score_grid,
        nms_grid,
        current.max_digits,
        max_rungs,
        current.line_filter,
        current.min_top_score,
    )
    aps = pred_json_aps(evaluator.detections, dataset_name, pred_json_grid)
    _, ladder, nms_thresh = rows[0]
    measured = NumberReader(ladder, nms_thresh, current.max_digits, current.line_filter, current.min_top_score)
    truth = evaluator.ground_truth

    def right(reader):
        return [n == truth[i] for i, n in evaluator.readings(reader).items()]

    wins, losses, adopt = beats_beyond_chance(right(measured), right(current))
    if adopt and free and tuple(measured.score_threshs) != tuple(current.score_threshs):
        # The thresholds decide which digits a second look crops around, and so the walls' last readings:
        # the gate is chosen again under the thresholds that will be used.
        gate, _, after = _gate_on_digit_free(cfg, measured, free_records, max_free_read, batch_size, progress)
        measured = NumberReader(ladder, nms_thresh, measured.max_digits, measured.line_filter, gate)
        free.update(min_top_score=gate, free_read_after=after)
    return TuningResult(
        dataset_name=dataset_name,
        num_images=len(records),
        current_accuracy=current_accuracy,
        current_reader=current,
        rows=rows,
        aps=aps,
        measured_reader=measured,
        wins=wins,
        losses=losses,
        best_reader=measured if adopt else current,
        best_pred_json_thresh=best_pred_json_thresh(aps),
        run=run,
        **free,
    )


def adoption(result):
    """One line: how the measured reader did against the config's, and which one is used."""
    verdict = "adopted" if result.best_reader is result.measured_reader else "not beyond chance"
    return f"+{result.wins} / -{result.losses} images against the config's reader: {verdict}"


def reader_config_values(reader, pred_json_thresh):
    """The tuned values by config key (what a bundle stores)."""
    return {
        "DIGITS.READER.SCORE_THRESHS": tuple(reader.score_threshs),
        "DIGITS.READER.NMS_THRESH": float(reader.nms_thresh),
        "DIGITS.READER.MAX_DIGITS": int(reader.max_digits),
        "DIGITS.READER.LINE_FILTER": bool(reader.line_filter),
        "DIGITS.READER.MIN_TOP_SCORE": float(reader.min_top_score),
        "DIGITS.PRED_JSON_SCORE_THRESH": float(pred_json_thresh),
    }


def reader_config_opts(reader, pred_json_thresh):
    """The tuned values as detectron2 command-line opts (``KEY VALUE ...``)."""
    return [str(x) for kv in reader_config_values(reader, pred_json_thresh).items() for x in kv]


def write_reader_yaml(path, result, weights):
    """Save the best thresholds as a config snippet (``cfg.merge_from_file`` merges it over a config)."""
    reader = result.best_reader
    snippet = {
        "DIGITS": {
            "PRED_JSON_SCORE_THRESH": result.best_pred_json_thresh,
            "READER": {
                "SCORE_THRESHS": list(reader.score_threshs),
                "NMS_THRESH": reader.nms_thresh,
                "MAX_DIGITS": reader.max_digits,
                "LINE_FILTER": reader.line_filter,
                "MIN_TOP_SCORE": reader.min_top_score,
            },
        }
    }
    ap = dict(result.aps)[result.best_pred_json_thresh]
    kept = "" if reader is result.measured_reader else f"; the config's reader kept ({adoption(result)})"
    header = (
        f"# Measured by tools/tune_reader.py on {result.dataset_name} ({result.num_images} images), "
        f"MODEL.WEIGHTS {weights}\n"
        f"# number accuracy {result.rows[0][0]:.2f}% (config's reader: {result.current_accuracy:.2f}%){kept}; "
        f"box AP {ap:.2f} at PRED_JSON_SCORE_THRESH {result.best_pred_json_thresh}\n"
        "# Merge after the model's config: tools/predict.py --config-file CONFIG --config-file THIS_FILE\n"
    )
    with atomic_open(path, "w") as f:
        f.write(header)
        yaml.safe_dump(snippet, f, default_flow_style=False)
    return path
