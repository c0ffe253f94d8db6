"""
A second look at small numbers (``DIGITS.SECOND_LOOK``), off by default.

The model reads each image at ``INPUT.MIN_SIZE_TEST``; where the digits it reads there are small
(``number_reader.needs_second_look``: median height under ``MAX_DIGIT_HEIGHT`` px at that size) or,
with ``EMPTY``, where it reads nothing, the image is resized again *from its own pixels* to a short side
of ``MIN_SIZE`` and read once more, and that second reading's detections replace the first's. Small
digits are where the model loses most numbers (benchmarks/recall_by_size.py); a larger size for every
image would cost 1.56x the work, the second look costs it only on the images it re-reads.

``SecondLookModel`` has GeneralizedRCNN's inference interface (``model(batched_inputs)``), so
``DigitPredictor`` and ``train_net.py --eval-only`` use it unchanged. Each input needs its own pixels:
``"original"`` (H x W x 3 uint8 in ``INPUT.FORMAT``, what ``DigitPredictor`` passes) or ``"file_name"``
(a dataset dict's image, read again). The exported runtime (``export/runtime.py``) does the same from
model.json's ``second_look``.
"""

import numpy as np
import torch
from detectron2.data import transforms as T
from torch import nn

from ..data.image_io import read_image
from ..modeling.number_reader import NumberReader, needs_second_look

__all__ = ["SecondLookModel", "wrap_for_second_look"]


class SecondLookModel(nn.Module):
    """``model`` with a second reading of the images whose numbers look small (module docstring)."""

    def __init__(self, model, reader, min_size, max_size, max_digit_height, empty=False, input_format="BGR"):
        super().__init__()
        self.model = model
        self.reader = reader
        self.resize = T.ResizeShortestEdge(int(min_size), int(max_size), sample_style="choice")
        self.max_digit_height, self.empty = float(max_digit_height), bool(empty)
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

    def _wants_second_look(self, x, instances):
        boxes = instances.pred_boxes.tensor
        chosen = self.reader.select(boxes, instances.scores, instances.pred_classes)
        scale = x["image"].shape[-2] / float(x.get("height", x["image"].shape[-2]))
        return needs_second_look(boxes.numpy(), chosen.numpy(), scale, self.max_digit_height, self.empty)

    def forward(self, batched_inputs):
        outputs = self.model(batched_inputs)
        again = [
            i
            for i, (x, o) in enumerate(zip(batched_inputs, outputs))
            if self._wants_second_look(x, o["instances"].to("cpu"))
        ]
        if again:
            inputs = []
            for i in again:
                x = batched_inputs[i]
                original = self._original(x)
                image = self.resize.get_transform(original).apply_image(original)
                inputs.append({
                    "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
                    "height": x.get("height", original.shape[0]),
                    "width": x.get("width", original.shape[1]),
                })  # fmt: skip
            for i, output in zip(again, self.model(inputs)):
                outputs[i] = output
            self.second_looks += len(again)
        return outputs


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
    ).eval()
