"""
A second look at small numbers (``DIGITS.SECOND_LOOK``), off by default.

The model reads each image at ``INPUT.MIN_SIZE_TEST``; where the digits it reads there are small
(``number_reader.needs_second_look``: median height under ``MAX_DIGIT_HEIGHT`` px at that size) or,
with ``EMPTY``, where the gate lets nothing be read, the image is read once more, and that second
reading's detections replace the first's:

* ``MODE`` "resize": the whole image, resized again *from its own pixels* to a short side of
  ``MIN_SIZE`` (with ``EMPTY``: whenever nothing is read);
* ``MODE`` "crop": only the region around the digits read (with ``EMPTY``, those the reader would read
  without its gate), resized so that they are ``TARGET_HEIGHT`` px tall
  (``number_reader.second_look_crop``). A detection outside the region is gone from the second reading.

Small digits are where the model loses most numbers (benchmarks/recall_by_size.py); a larger size for
every image would cost 1.56x the work and lose the large digits, the second look costs it only on the
images it re-reads, and a crop only on the number's neighbourhood.

``SecondLookModel`` has GeneralizedRCNN's inference interface (``model(batched_inputs)``), so
``DigitPredictor`` and ``train_net.py --eval-only`` use it unchanged. Each input needs its own pixels:
``"original"`` (H x W x 3 uint8 in ``INPUT.FORMAT``, what ``DigitPredictor`` passes) or ``"file_name"``
(a dataset dict's image, read again). The exported runtime (``export/runtime.py``) does the same from
model.json's ``second_look``.
"""

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances
from PIL import Image
from torch import nn

from ..data.image_io import read_image
from ..modeling.number_reader import NumberReader, needs_second_look, second_look_crop

__all__ = ["SecondLookModel", "wrap_for_second_look"]


class SecondLookModel(nn.Module):
    """``model`` with a second reading of the images whose numbers look small (module docstring)."""

    def __init__(
        self,
        model,
        reader,
        min_size,
        max_size,
        max_digit_height,
        empty=False,
        input_format="BGR",
        mode="resize",
        target_height=32.0,
    ):
        super().__init__()
        if mode not in ("resize", "crop"):
            raise ValueError(f"second look mode must be 'resize' or 'crop', got {mode!r}")
        self.model = model
        self.reader = reader
        # the digits a crop is placed around when the gate reads nothing (EMPTY): the reading without it
        self.ungated = NumberReader(reader.score_threshs, reader.nms_thresh, reader.max_digits, reader.line_filter)
        self.resize = T.ResizeShortestEdge(int(min_size), int(max_size), sample_style="choice")
        self.max_size = int(max_size)
        self.max_digit_height, self.empty = float(max_digit_height), bool(empty)
        self.mode, self.target_height = mode, float(target_height)
        self.input_format = input_format
        self.second_looks = 0  # images read twice so far (for reports and benchmarks)

    @property
    def backbone(self):  # what inference options and the checkpointer look at
        return self.model.backbone

    @property
    def roi_heads(self):
        return self.model.roi_heads

    def _original(self, x):
        if "original" in x:
            return np.asarray(x["original"])
        if "file_name" in x:
            return read_image(x["file_name"], self.input_format)
        raise ValueError("DIGITS.SECOND_LOOK needs each input's own pixels ('original' or 'file_name')")

    def _look_at(self, x, instances):
        """The digits (indices) a second look is about, or None for no second look."""
        boxes, scores, classes = instances.pred_boxes.tensor, instances.scores, instances.pred_classes
        chosen = self.reader.select(boxes, scores, classes)
        if self.mode == "crop" and not len(chosen) and self.empty:
            chosen = self.ungated.select(boxes, scores, classes)
            if not len(chosen):
                return None
        scale = x["image"].shape[-2] / float(x.get("height", x["image"].shape[-2]))
        empty = self.empty and self.mode == "resize"
        if needs_second_look(boxes.numpy(), chosen.numpy(), scale, self.max_digit_height, empty):
            return chosen.numpy()
        return None

    def _second_input(self, x, instances, chosen):
        """(the model's input of the second look, None or the crop's (x1, y1) and the original's scale over
        the output's (sx, sy), the output's (h, w))."""
        original = self._original(x)
        out_hw = (x.get("height", original.shape[0]), x.get("width", original.shape[1]))
        if self.mode == "resize":
            image = self.resize.get_transform(original).apply_image(original)
            return {"image": _chw(image), "height": out_hw[0], "width": out_hw[1]}, None, out_hw
        # the first look's boxes are in the output's pixels: to the original's for the crop
        sy, sx = original.shape[0] / float(out_hw[0]), original.shape[1] / float(out_hw[1])
        boxes = instances.pred_boxes.tensor.numpy() * np.array([sx, sy, sx, sy])
        (x1, y1, x2, y2), (newh, neww) = second_look_crop(
            boxes, chosen, original.shape[0], original.shape[1], self.target_height, self.max_size
        )
        crop = original[y1:y2, x1:x2]
        image = T.ResizeTransform(y2 - y1, x2 - x1, newh, neww, Image.BILINEAR).apply_image(crop)
        return {"image": _chw(image), "height": y2 - y1, "width": x2 - x1}, (x1, y1, sx, sy), out_hw

    def forward(self, batched_inputs):
        outputs = self.model(batched_inputs)
        again = []
        for i, (x, o) in enumerate(zip(batched_inputs, outputs)):
            instances = o["instances"].to("cpu")
            chosen = self._look_at(x, instances)
            if chosen is not None:
                again.append((i, self._second_input(x, instances, chosen)))
        if again:
            for (i, (_, crop, out_hw)), output in zip(again, self.model([inp for _, (inp, _, _) in again])):
                if crop is not None:
                    output = {"instances": _uncrop(output["instances"], crop, out_hw)}
                outputs[i] = output
            self.second_looks += len(again)
        return outputs


def _chw(image):
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _uncrop(instances, crop, out_hw):
    """A crop's detections in the output's pixels: shifted by the crop's corner, scaled as the first look's."""
    x1, y1, sx, sy = crop
    boxes = instances.pred_boxes.tensor.clone()
    boxes[:, 0::2] = (boxes[:, 0::2] + x1) / sx
    boxes[:, 1::2] = (boxes[:, 1::2] + y1) / sy
    result = Instances(tuple(int(v) for v in out_hw))
    result.pred_boxes = Boxes(boxes)
    result.scores = instances.scores
    result.pred_classes = instances.pred_classes
    return result


def wrap_for_second_look(model, cfg):
    """``model`` itself, or with DIGITS.SECOND_LOOK.ENABLED a SecondLookModel of it (cfg's reader)."""
    look = cfg.DIGITS.SECOND_LOOK
    if not look.ENABLED:
        return model
    return SecondLookModel(
        model,
        NumberReader.from_config(cfg),
        look.MIN_SIZE,
        cfg.INPUT.MAX_SIZE_TEST,
        look.MAX_DIGIT_HEIGHT,
        look.EMPTY,
        cfg.INPUT.FORMAT,
        look.MODE,
        look.TARGET_HEIGHT,
    ).eval()
