"""
Export a trained digit model to TorchScript or ONNX: the whole detectron2 Faster R-CNN of one resized
image (normalisation through per-class NMS), traced with detectron2's ``TracingAdapter``.

Why this route: tracing records the inference of one image as a graph; detectron2's RPN and ROI
heads switch to trace-friendly code under ``torch.jit.is_tracing()`` (top-k counts from shapes,
``batched_nms`` through torchvision's ``nms``, which ONNX has as NonMaxSuppression, ROIAlign as
RoiAlign), so one graph serves every input size (``dynamic_axes`` height / width) and its outputs
equal the PyTorch model's (tests/test_export.py: boxes within 1e-3 px, same classes). Scripting
detectron2's models is not supported for Faster R-CNN-FPN outputs as Instances, and splitting the
network from post-processing would move anchors, top-k and NMS into every runtime. What stays outside
the graph is cheap and identical in every runtime: the resize, the box scaling to the input's pixels
and the number reader (``runtime.py``, written beside the model as ``digit_runtime.py``).
"""

import json
import logging
import os

import numpy as np
import torch

from ..utils.boxes import box_iou
from ..utils.errors import DigitError
from ..utils.io import atomic_open, atomic_write_json

__all__ = ["EXPORT_FORMATS", "ExportError", "export_model", "model_metadata"]

EXPORT_FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx"}
ONNX_OPSET = 17  # RoiAlign with half_pixel (ROIAlignV2) needs >= 16
_logger = logging.getLogger("digit_detectron")


class ExportError(DigitError, RuntimeError):
    """The model could not be exported, or the export's outputs differ from the PyTorch model's."""


def model_metadata(cfg, fmt, weights):
    """What ``runtime.py`` needs beside the graph (model.json)."""
    reader = cfg.DIGITS.READER
    return {
        "format_version": 1,
        "format": fmt,
        "source_weights": os.path.abspath(weights) if weights else "",
        "input_format": cfg.INPUT.FORMAT,
        "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
        "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        "score_thresh_test": float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST),
        "pred_json_score_thresh": float(cfg.DIGITS.PRED_JSON_SCORE_THRESH),
        "reader": {
            "score_threshs": [float(t) for t in reader.SCORE_THRESHS],
            "nms_thresh": float(reader.NMS_THRESH),
            "max_digits": int(reader.MAX_DIGITS),
            "line_filter": bool(reader.LINE_FILTER),
            "min_top_score": float(reader.MIN_TOP_SCORE),
        },
        "classes": [str(d) for d in range(10)],
        **_second_look(cfg),
    }


def _second_look(cfg):
    """model.json's ``second_look`` (DIGITS.SECOND_LOOK, read by the runtime), absent when it is off."""
    look = cfg.DIGITS.SECOND_LOOK
    if not look.ENABLED:
        return {}
    return {
        "second_look": {
            "min_size": int(look.MIN_SIZE),
            "max_digit_height": float(look.MAX_DIGIT_HEIGHT),
            "empty": bool(look.EMPTY),
            "mode": str(look.MODE),
            "target_height": float(look.TARGET_HEIGHT),
        }
    }


def _traceable(predictor, sample_tensor):
    from detectron2.export import TracingAdapter

    model = predictor.network.eval()  # the detector, without DIGITS.SECOND_LOOK's wrapper (the runtime does it)

    def inference(model, inputs):
        instances = model.inference(inputs, do_postprocess=False)[0]
        return [{"instances": instances}]

    return TracingAdapter(model, [{"image": sample_tensor}], inference)


RUNTIME_PIXELS_IMPORT = "from ..utils.pixels import pil_to_rgb  # export writes utils/pixels.py here"


def export_model(predictor, sample_image, fmt, output_dir):
    """
    Export ``predictor``'s model (a DigitPredictor, float32 backbone) as ``fmt`` ("torchscript" or
    "onnx") into ``output_dir``: the graph, model.json and digit_runtime.py. ``sample_image``: an
    H x W x 3 uint8 image in the model's INPUT.FORMAT to trace with. Returns the graph's path.
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if predictor.cfg.DIGITS.TTA.ENABLED:
        raise ExportError("export one model at one scale: set DIGITS.TTA.ENABLED False")
    if predictor.cfg.MODEL.ROI_HEADS.SOFT_NMS.ENABLED:
        raise ExportError("soft-NMS is a Python loop the graph cannot hold: set MODEL.ROI_HEADS.SOFT_NMS.ENABLED False")
    if getattr(predictor.network.backbone, "runs_bf16", False):
        raise ExportError("export the float32 model: set DIGITS.INFERENCE.BACKBONE_BF16 off")
    os.makedirs(output_dir, exist_ok=True)
    sample = predictor.preprocess(sample_image)
    adapter = _traceable(predictor, sample)
    path = os.path.join(output_dir, EXPORT_FORMATS[fmt])
    with torch.no_grad():
        if fmt == "torchscript":
            traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
            with atomic_open(path, "wb") as f:
                torch.jit.save(traced, f)
        else:
            _export_onnx(adapter, sample, path)
    predictor.network.eval()  # torch.onnx.export leaves the model in training mode
    atomic_write_json(
        os.path.splitext(path)[0] + ".json", model_metadata(predictor.cfg, fmt, predictor.cfg.MODEL.WEIGHTS), indent=2
    )
    with atomic_open(os.path.join(output_dir, "digit_runtime.py"), "w") as dst:
        dst.write(standalone_runtime())
    return path


def standalone_runtime():
    """``runtime.py`` as one file that needs only numpy, Pillow and onnxruntime or torch: the package
    import of ``utils/pixels.py`` replaced by that module's code."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "runtime.py")) as f:
        runtime = f.read()
    with open(os.path.join(here, "..", "utils", "pixels.py")) as f:
        pixels = f.read()
    if RUNTIME_PIXELS_IMPORT not in runtime:  # pragma: no cover - a guard for edits of runtime.py
        raise ExportError("export/runtime.py no longer imports utils/pixels.py as export expects")
    body = pixels[pixels.index('"""', 3) + 3 :].lstrip("\n")  # without its module docstring
    return runtime.replace(RUNTIME_PIXELS_IMPORT, "# utils/pixels.py of digit-detectron:\n" + body.rstrip("\n"))


def _export_onnx(adapter, sample, path):
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install onnx onnxruntime") from None
    with atomic_open(path, "wb") as f:
        torch.onnx.export(
            adapter,
            (sample,),
            f,
            opset_version=ONNX_OPSET,
            dynamo=False,  # the TorchScript-based exporter: detectron2's tracing paths target it
            input_names=["image"],
            output_names=["boxes", "classes", "scores", "image_size"],
            dynamic_axes={
                "image": {1: "height", 2: "width"},
                "boxes": {0: "detections"},
                "classes": {0: "detections"},
                "scores": {0: "detections"},
            },
        )


def compare_with_pytorch(
    predictor, exported, images_rgb, box_tolerance=1e-3, score_tolerance=1e-4, max_nms_tie_fraction=0.1
):
    """
    Run the PyTorch predictor and an ``ExportedModel`` on the same RGB images; the largest box and
    score differences over detections matched one-to-one (same class, nearest box), and the images
    whose detection count or classes differ. Detections within ``score_tolerance`` of a cut (the
    score threshold; the lowest kept score where both sides hold TEST.DETECTIONS_PER_IMAGE and
    agree on it) are left out on both sides and counted: a near-tie there may go either way.
    A matched pair whose boxes differ beyond ``box_tolerance`` but whose scores agree and whose boxes
    overlap by at least the test NMS threshold is an NMS near-tie (two candidates of one cluster
    with the same float32 score: either may survive) and is counted, not measured; the check fails
    when more than ``max_nms_tie_fraction`` of the pairs are such ties (a decoding error moves
    every box).
    """
    worst_box = worst_score = 0.0
    mismatched = []
    borderline = ties = pairs = 0
    cap, threshold = predictor.cfg.TEST.DETECTIONS_PER_IMAGE, predictor.cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
    nms_thresh = predictor.cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST
    for i, image in enumerate(images_rgb):
        model_input = image if predictor.input_format == "RGB" else image[:, :, ::-1]
        ref = predictor([np.ascontiguousarray(model_input)])[0]
        boxes, scores, classes = exported.detect(image)
        ref_boxes, ref_scores, ref_classes = ref.pred_boxes.tensor.numpy(), ref.scores.numpy(), ref.pred_classes.numpy()
        cut = threshold  # or the lowest kept score, where both sides are at the cap and agree on it
        if cap > 0 and min(len(scores), len(ref_scores)) >= cap:
            lowest = float(scores.min()), float(ref_scores.min())
            if abs(lowest[0] - lowest[1]) <= score_tolerance:
                cut = max(cut, *lowest)
        above, ref_above = scores > cut + score_tolerance, ref_scores > cut + score_tolerance
        borderline += int((~above).sum() + (~ref_above).sum())
        boxes, scores, classes = boxes[above], scores[above], classes[above]
        ref_boxes, ref_scores, ref_classes = ref_boxes[ref_above], ref_scores[ref_above], ref_classes[ref_above]
        if len(boxes) != len(ref_boxes) or sorted(classes.tolist()) != sorted(ref_classes.tolist()):
            mismatched.append(i)
            continue
        # one-to-one by class and nearest box: detections of (almost) equal score may come in either order
        free = np.ones(len(boxes), bool)
        for box, score, cls in zip(ref_boxes, ref_scores, ref_classes):
            candidates = np.where(free & (classes == cls))[0]
            j = candidates[np.argmin(np.abs(boxes[candidates] - box).max(axis=1))]
            free[j] = False
            pairs += 1
            box_diff, score_diff = float(np.abs(boxes[j] - box).max()), float(abs(scores[j] - score))
            if (
                box_diff > box_tolerance
                and score_diff <= score_tolerance
                and box_iou(boxes[j], box)[0, 0] >= nms_thresh
            ):
                ties += 1
                continue
            worst_box, worst_score = max(worst_box, box_diff), max(worst_score, score_diff)
    ok = not mismatched and worst_box <= box_tolerance and worst_score <= score_tolerance
    ok = ok and ties <= max_nms_tie_fraction * pairs
    return {
        "max_box_diff_px": worst_box,
        "max_score_diff": worst_score,
        "mismatched_images": mismatched,
        "borderline_detections_skipped": borderline,
        "nms_near_ties": ties,
        "matched_detections": pairs,
        "ok": ok,
    }


def write_check(path, result):
    atomic_write_json(path, result, indent=2)
    return json.dumps(result)
