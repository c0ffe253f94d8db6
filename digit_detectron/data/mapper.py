"""DatasetMapper for digit datasets: digit augmentations and robust image reading."""

import copy

import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .image_io import read_image
from .transforms import build_digit_augmentation


class DigitDatasetMapper(DatasetMapper):
    """
    detectron2's DatasetMapper with ``build_digit_augmentation`` and
    ``digit_detectron.data.image_io.read_image`` (EXIF, 16-bit, RGBA; errors name the file).
    """

    def __init__(self, cfg, is_train=True):
        super().__init__(cfg, is_train, augmentations=build_digit_augmentation(cfg, is_train))

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image(dataset_dict["file_name"], format=self.image_format)
        _check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict


def _check_image_size(dataset_dict, image):
    """detectron2's ``check_image_size``, with an error that names the file and both sizes as WxH."""
    try:
        utils.check_image_size(dataset_dict, image)
    except utils.SizeMismatchError:
        h, w = image.shape[:2]
        raise utils.SizeMismatchError(
            f"{dataset_dict['file_name']}: image is {w}x{h} (width x height, after EXIF rotation) but its "
            f"annotation says {dataset_dict['width']}x{dataset_dict['height']}; fix the json's width/height "
            "(tools/check_dataset.py lists every such image)"
        ) from None
