"""Train/test augmentations of the digit datasets."""

import cv2
import numpy as np
from detectron2.data import transforms as T
from detectron2.data.detection_utils import build_augmentation


class _RandomPhotometric(T.Augmentation):
    """With probability ``prob``, the ColorTransform of ``pixels(img)`` (boxes unchanged); else nothing."""

    def get_transform(self, image):
        if self._rand_range() >= self.prob:
            return T.NoOpTransform()
        return T.ColorTransform(self.pixels())

    def pixels(self):
        """The function of the image that this draw applies (random parameters drawn here)."""
        raise NotImplementedError


class RandomColorJitter(_RandomPhotometric):
    """With probability ``prob``, scale brightness, contrast and saturation by random factors."""

    def __init__(self, prob, brightness, contrast, saturation):
        super().__init__()
        self._init(locals())

    def pixels(self):
        factors = [float(np.random.uniform(1 - m, 1 + m)) for m in (self.brightness, self.contrast, self.saturation)]
        return lambda img: _jitter(img, *factors)


def _jitter(img, brightness, contrast, saturation):
    out = img.astype(np.float32) * brightness
    mean = out.mean()
    out = (out - mean) * contrast + mean
    gray = out.mean(axis=2, keepdims=True)
    out = (out - gray) * saturation + gray
    return np.clip(out, 0, 255).astype(img.dtype)


class RandomGaussianBlur(_RandomPhotometric):
    """With probability ``prob``, blur with a ``kernel_size`` Gaussian of sigma drawn from ``sigma``."""

    def __init__(self, prob, kernel_size, sigma):
        super().__init__()
        self._init(locals())

    def pixels(self):
        sigma = float(np.random.uniform(*self.sigma))
        k = int(self.kernel_size)
        return lambda img: cv2.GaussianBlur(img, (k, k), sigma)


class RandomGrayscale(_RandomPhotometric):
    """With probability ``prob``, replace every channel by the pixel's mean."""

    def __init__(self, prob):
        super().__init__()
        self._init(locals())

    def pixels(self):
        return lambda img: np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2).astype(img.dtype)


class RandomInvert(_RandomPhotometric):
    """With probability ``prob``, invert the image (255 - value)."""

    def __init__(self, prob):
        super().__init__()
        self._init(locals())

    def pixels(self):
        return lambda img: (255 - img.astype(np.int16)).astype(img.dtype)


class RandomNoise(_RandomPhotometric):
    """With probability ``prob``, add Gaussian noise of a sigma drawn from ``sigma`` (0..255 scale)."""

    def __init__(self, prob, sigma):
        super().__init__()
        self._init(locals())

    def pixels(self):
        sigma = float(np.random.uniform(*self.sigma))
        seed = int(np.random.randint(2**31))

        def noisy(img):
            noise = np.random.default_rng(seed).normal(0, sigma, img.shape)
            return np.clip(img.astype(np.float32) + noise, 0, 255).astype(img.dtype)

        return noisy


class RandomWidthScale(T.Augmentation):
    """
    With probability ``prob``, resize the image's width by a factor drawn log-uniformly from
    ``scale_range`` (height kept): condensed and expanded versions of every face (boxes follow).
    """

    def __init__(self, prob, scale_range):
        super().__init__()
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"INPUT.WIDTH_SCALE.RANGE must be (lo, hi) with 0 < lo <= hi, got {scale_range}")
        self._init(locals())  # prob, scale_range, lo, hi

    def get_transform(self, image):
        if self._rand_range() >= self.prob:
            return T.NoOpTransform()
        h, w = image.shape[:2]
        factor = float(np.exp(np.random.uniform(np.log(self.lo), np.log(self.hi))))
        return T.ResizeTransform(h, w, h, max(1, int(round(w * factor))))


def build_digit_augmentation(cfg, is_train):
    """
    detectron2's resize (and flip only if INPUT.RANDOM_FLIP asks), then for training: a width scale, a
    small rotation and the photometric ones (colour jitter, grayscale, inversion, blur, noise), each off at 0.
    """
    augs = build_augmentation(cfg, is_train)
    if is_train:
        inp = cfg.INPUT
        cj, blur, noise = inp.COLOR_JITTER, inp.GAUSSIAN_BLUR, inp.NOISE
        if inp.WIDTH_SCALE.PROB > 0:
            augs.append(RandomWidthScale(inp.WIDTH_SCALE.PROB, tuple(inp.WIDTH_SCALE.RANGE)))
        if inp.ROTATION.PROB > 0:
            angle = float(inp.ROTATION.ANGLE)
            rotation = T.RandomRotation([-angle, angle], expand=False, sample_style="range")
            augs.append(T.RandomApply(rotation, prob=inp.ROTATION.PROB))
        if cj.PROB > 0:
            augs.append(RandomColorJitter(cj.PROB, cj.BRIGHTNESS, cj.CONTRAST, cj.SATURATION))
        if inp.GRAYSCALE_PROB > 0:
            augs.append(RandomGrayscale(inp.GRAYSCALE_PROB))
        if inp.INVERT_PROB > 0:
            augs.append(RandomInvert(inp.INVERT_PROB))
        if blur.PROB > 0:
            augs.append(RandomGaussianBlur(blur.PROB, blur.KERNEL_SIZE, tuple(blur.SIGMA)))
        if noise.PROB > 0:
            augs.append(RandomNoise(noise.PROB, tuple(noise.SIGMA)))
    return augs
