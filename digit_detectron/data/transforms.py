"""Train/test augmentations of the digit datasets."""

import cv2
import numpy as np
from detectron2.data import transforms as T
from detectron2.data.detection_utils import build_augmentation


class RandomColorJitter(T.Augmentation):
    """With probability ``prob``, scale brightness, contrast and saturation by random factors."""

    def __init__(self, prob, brightness, contrast, saturation):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        if self._rand_range() >= self.prob:
            return T.NoOpTransform()
        factors = [float(np.random.uniform(1 - m, 1 + m)) for m in (self.brightness, self.contrast, self.saturation)]
        return T.ColorTransform(lambda img: _jitter(img, *factors))


def _jitter(img, brightness, contrast, saturation):
    out = img.astype(np.float32) * brightness
    mean = out.mean()
    out = (out - mean) * contrast + mean
    gray = out.mean(axis=2, keepdims=True)
    out = (out - gray) * saturation + gray
    return np.clip(out, 0, 255).astype(img.dtype)


class RandomGaussianBlur(T.Augmentation):
    """With probability ``prob``, blur with a ``kernel_size`` Gaussian of sigma drawn from ``sigma``."""

    def __init__(self, prob, kernel_size, sigma):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        if self._rand_range() >= self.prob:
            return T.NoOpTransform()
        sigma = float(np.random.uniform(*self.sigma))
        k = int(self.kernel_size)
        return T.ColorTransform(lambda img: cv2.GaussianBlur(img, (k, k), sigma))


def build_digit_augmentation(cfg, is_train):
    """detectron2's resize (and flip only if INPUT.RANDOM_FLIP asks) plus the photometric ones."""
    augs = build_augmentation(cfg, is_train)
    if is_train:
        cj, blur = cfg.INPUT.COLOR_JITTER, cfg.INPUT.GAUSSIAN_BLUR
        if cj.PROB > 0:
            augs.append(RandomColorJitter(cj.PROB, cj.BRIGHTNESS, cj.CONTRAST, cj.SATURATION))
        if blur.PROB > 0:
            augs.append(RandomGaussianBlur(blur.PROB, blur.KERNEL_SIZE, tuple(blur.SIGMA)))
    return augs
