"""Whole-number accuracy: the HW2 pred.csv metric, computed on a labelled dataset."""

import itertools
import logging
from collections import OrderedDict

import detectron2.utils.comm as comm
import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode

from ..modeling.number_reader import NumberReader, digits_to_number, reading_order


def record_ground_truth(record):
    """
    ``{"boxes" (XYXY numpy), "classes" (0..9), "digits" (the classes in reading order), "number"}`` of a
    labelled dataset dict, else None.
    """
    if "annotations" not in record:
        return None
    annos = record["annotations"]
    boxes = np.asarray(
        [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos], dtype=float
    ).reshape(-1, 4)
    classes = np.asarray([a["category_id"] for a in annos], dtype=int)
    digits = classes[reading_order(boxes).numpy()]
    return {"boxes": boxes, "classes": classes, "digits": digits, "number": digits_to_number(digits)}


def ground_truth_numbers(dataset_name):
    """``{image_id: number}`` of a registered dataset: its annotated digits (contiguous ids 0..9) in reading order."""
    records = DatasetCatalog.get(dataset_name)
    if not any("annotations" in r for r in records):
        raise ValueError(f"dataset '{dataset_name}' has no annotations: number accuracy needs a labelled split")
    numbers = {}
    for record in records:
        truth = record_ground_truth(record)
        numbers[record["image_id"]] = truth["number"] if truth else -1
    return numbers


class NumberAccuracyEvaluator(DatasetEvaluator):
    """
    Reads each image's number from its predicted ``instances`` (original image pixels) with a
    ``NumberReader`` and compares it with the ground-truth number. Returns
    ``{"number": {"accuracy": percent, "num_images": n}}`` (detectron2 logs ``number/accuracy``).

    After ``evaluate`` (on the main process), ``detections`` holds every image's raw detections
    (numpy XYXY boxes, scores, classes) and ``ground_truth`` the true numbers, so other reader
    thresholds can be scored with ``accuracy(reader)`` without running the model again.
    """

    def __init__(self, dataset_name, reader, distributed=True):
        """
        Args:
            dataset_name (str): a registered dataset with annotations.
            reader (NumberReader or CfgNode): the reader, or a config to build it from
                (``NumberReader.from_config``).
            distributed (bool): gather the predictions of all ranks and evaluate on the main one.
        """
        self._dataset_name = dataset_name
        self._reader = reader if isinstance(reader, NumberReader) else NumberReader.from_config(reader)
        self._distributed = distributed
        self._logger = logging.getLogger(__name__)
        self.ground_truth = None
        self.detections = []
        self.reset()

    def reset(self):
        self._detections = []

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            instances = output["instances"].to("cpu")
            self._detections.append(
                {
                    "image_id": input["image_id"],
                    "boxes": instances.pred_boxes.tensor.numpy(),
                    "scores": instances.scores.numpy(),
                    "classes": instances.pred_classes.numpy(),
                }
            )

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            detections = list(itertools.chain(*comm.gather(self._detections, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            detections = self._detections
        if not detections:
            self._logger.warning("[NumberAccuracyEvaluator] Did not receive valid predictions.")
            return {}
        if self.ground_truth is None:
            self.ground_truth = ground_truth_numbers(self._dataset_name)
        self.detections = list({d["image_id"]: d for d in detections}.values())  # one per image
        missing = sorted({d["image_id"] for d in self.detections} - set(self.ground_truth))
        if missing:
            raise KeyError(
                f"NumberAccuracyEvaluator: image ids {missing[:10]} were predicted but are not in "
                f"dataset '{self._dataset_name}'"
            )
        accuracy = self.accuracy(self._reader)
        self._logger.info(
            f"Number accuracy on {self._dataset_name}: {accuracy:.2f}% of {len(self.detections)} images "
            f"({self._reader})"
        )
        return OrderedDict(number={"accuracy": accuracy, "num_images": len(self.detections)})

    def readings(self, reader):
        """``{image_id: number}`` that ``reader`` gives for the detections of the last ``evaluate``."""
        return {d["image_id"]: reader(d["boxes"], d["scores"], d["classes"]) for d in self.detections}

    def accuracy(self, reader):
        """Percent of the last ``evaluate``'s images whose number ``reader`` reads correctly."""
        readings = self.readings(reader)
        correct = sum(readings[i] == self.ground_truth[i] for i in readings)
        return 100.0 * correct / len(readings)
