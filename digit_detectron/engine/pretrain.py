"""
Warm start for training from scratch: pre-train the detector's bottom-up backbone as an 11-way
classifier (digits 0..9 + background) on small crops cut from the training images.

Classifying 32-px crops costs a fraction of a detector step, so on a CPU the backbone learns digit
features in minutes; the detector then starts from them (the recipe of configs/digits_cpu.yaml,
README "The CPU recipe").
"""

import hashlib
import json
import logging
import os
import time

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_backbone
from detectron2.utils import comm
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from ..checkpoint.bundle import BundleError, ready_model, safe_torch_load
from ..data.image_io import read_image
from ..utils.boxes import box_iou
from ..utils.errors import ConfigError
from ..utils.io import atomic_open

logger = logging.getLogger(__name__)

BACKGROUND = 10


def _warp_crop(image, cx, cy, side, size):
    """The square of ``side`` px centred at (cx, cy), resized to size x size (edges replicated)."""
    s = size / side
    m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], dtype=np.float32)
    return cv2.warpAffine(
        image, m, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def extract_crops(dataset_dicts, image_format="BGR", size=32, jitter=2, background_per_image=1, seed=0):
    """
    Cut ``jitter`` randomly shifted / scaled square crops around every digit box (label = digit) and
    ``background_per_image`` crops that overlap no digit by IoU >= 0.2 (label 10) from each image.
    Returns ``(crops uint8 N x size x size x 3, labels int64 N)``.
    """
    rng = np.random.default_rng(seed)
    crops, labels = [], []
    for record in dataset_dicts:
        anns = record.get("annotations", [])
        if not anns:
            continue
        image = read_image(record["file_name"], format=image_format)
        boxes = np.array(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
            dtype=np.float64,
        )
        for ann, (x0, y0, x1, y1) in zip(anns, boxes):
            h = y1 - y0
            for _ in range(jitter):
                side = h * rng.uniform(1.15, 1.45)
                cx = (x0 + x1) / 2 + rng.uniform(-0.08, 0.08) * h
                cy = (y0 + y1) / 2 + rng.uniform(-0.08, 0.08) * h
                crops.append(_warp_crop(image, cx, cy, side, size))
                labels.append(ann["category_id"])
        img_h, img_w = image.shape[:2]
        median_h = float(np.median(boxes[:, 3] - boxes[:, 1]))
        for _ in range(background_per_image):
            for _try in range(10):
                h = median_h * rng.uniform(0.7, 1.3)
                w = h / 2
                cx, cy = rng.uniform(0, img_w), rng.uniform(0, img_h)
                if box_iou([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], boxes).max() < 0.2:
                    crops.append(_warp_crop(image, cx, cy, h * 1.3, size))
                    labels.append(BACKGROUND)
                    break
    if not crops:
        raise ValueError("no annotated image to cut crops from")
    return np.stack(crops), np.asarray(labels, dtype=np.int64)


class BackboneClassifier(nn.Module):
    """The detector's bottom-up backbone, global average pooling and a linear layer."""

    def __init__(self, cfg, num_classes=11):
        super().__init__()
        backbone = build_backbone(cfg)
        self.bottom_up = getattr(backbone, "bottom_up", backbone)
        shapes = self.bottom_up.output_shape()
        self.feature = max(shapes, key=lambda k: shapes[k].stride)
        self.head = nn.Linear(shapes[self.feature].channels, num_classes)
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(1, -1, 1, 1), False)

    def forward(self, images):
        x = (images.float() - self.pixel_mean) / self.pixel_std
        x = self.bottom_up(x)[self.feature]
        return self.head(x.mean(dim=(2, 3)))


def _augment(batch, generator):
    """Per-crop random polarity inversion and contrast/brightness, on an N x 3 x H x W uint8 batch."""
    x = batch.float()
    n = x.shape[0]
    invert = torch.rand(n, 1, 1, 1, generator=generator) < 0.5
    x = torch.where(invert, 255 - x, x)
    contrast = torch.empty(n, 1, 1, 1).uniform_(0.6, 1.4, generator=generator)
    brightness = torch.empty(n, 1, 1, 1).uniform_(-30, 30, generator=generator)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp(0, 255)


# DIGITS.PRETRAIN.AUGMENT "shapes": the glyph-shape randomisation of ``_augment_shapes`` (probability
# of each part, and its range).
SHAPE_WIDTH = (0.7, 1.3)  # horizontal scale: condensed .. expanded faces
SHAPE_SHEAR = (-0.15, 0.35)  # x shift per unit of y: back slant .. italic
SHAPE_ROTATION = 0.1  # radians either way
STROKE_PROB = 0.3  # thinner or thicker strokes (a grey-level erosion or dilation of the ink)
BLUR_PROB = 0.2
COLOUR_PROB = 0.3  # channels shuffled (colour schemes) or grey
NOISE_PROB = 0.2


def _augment_shapes(batch, generator):
    """
    ``_augment`` plus randomised glyph shapes, on an N x 3 x H x W uint8 batch: a random affine warp
    per crop (width, shear, small rotation; the crop's centre, and so the digit's label, stays),
    thinner or thicker strokes, blur, shuffled or grey channels and noise. Crops are cheap, so the
    warm start sees condensed, expanded, slanted, light and heavy versions of every training glyph
    without a detector step spent on them.
    """
    x = batch.float()
    n, c, h, w = x.shape

    def uniform(lo, hi):
        return torch.empty(n).uniform_(lo, hi, generator=generator)

    def chosen(prob):
        return torch.rand(n, generator=generator) < prob

    # Affine warp about the centre, in the normalised coordinates of affine_grid (output -> input).
    width, shear, angle = uniform(*SHAPE_WIDTH), uniform(*SHAPE_SHEAR), uniform(-SHAPE_ROTATION, SHAPE_ROTATION)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos / width
    theta[:, 0, 1] = (-sin + shear * cos) / width * h / w
    theta[:, 1, 0] = sin * w / h
    theta[:, 1, 1] = cos + shear * sin
    grid = F.affine_grid(theta, (n, c, h, w), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # Strokes: the ink is the minority side of the crop's median grey (a mean above the median: bright
    # ink on a darker ground); grow or shrink it by one pixel.
    stroke = chosen(STROKE_PROB)
    if stroke.any():
        grey = x.mean(dim=1, keepdim=True)
        bright_ink = (grey - grey.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)).mean(dim=(1, 2, 3)) > 0
        thin = chosen(0.5)
        dilate = F.max_pool2d(x, 3, 1, 1)
        erode = -F.max_pool2d(-x, 3, 1, 1)
        # bright ink grows by a dilation, dark ink by an erosion
        thicker = torch.where(bright_ink.view(-1, 1, 1, 1), dilate, erode)
        thinner = torch.where(bright_ink.view(-1, 1, 1, 1), erode, dilate)
        changed = torch.where(thin.view(-1, 1, 1, 1), thinner, thicker)
        x = torch.where(stroke.view(-1, 1, 1, 1), changed, x)
    blur = chosen(BLUR_PROB)
    if blur.any():
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = (kernel[:, None] * kernel[None, :] / 16).expand(c, 1, 3, 3)
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
        x = torch.where(blur.view(-1, 1, 1, 1), blurred, x)
    colour = chosen(COLOUR_PROB)
    if colour.any():
        perm = torch.stack([torch.randperm(c, generator=generator) for _ in range(n)])
        shuffled = torch.gather(x, 1, perm.view(n, c, 1, 1).expand(n, c, h, w))
        grey = x.mean(dim=1, keepdim=True).expand(n, c, h, w)
        recoloured = torch.where(chosen(0.5).view(-1, 1, 1, 1), shuffled, grey)
        x = torch.where(colour.view(-1, 1, 1, 1), recoloured, x)
    noise = chosen(NOISE_PROB)
    if noise.any():
        sigma = uniform(2.0, 10.0).view(-1, 1, 1, 1)
        noisy = x + torch.randn(x.shape, generator=generator) * sigma
        x = torch.where(noise.view(-1, 1, 1, 1), noisy, x)
    return _augment(x.clamp(0, 255), generator)


AUGMENTATIONS = {"basic": _augment, "shapes": _augment_shapes}


def pretrain_backbone(
    cfg,
    dataset_names,
    output_path,
    steps=300,
    batch_size=128,
    lr=2e-3,
    crop_size=32,
    max_images=None,
    seed=0,
    augment="basic",
):
    """
    Pre-train ``cfg``'s bottom-up backbone on digit crops of ``dataset_names`` and save it as a
    detectron2 checkpoint (keys ``backbone.bottom_up.*``) at ``output_path``, atomically.
    ``augment``: "basic" (inversion, contrast, brightness) or "shapes" (``_augment_shapes``: also
    width, slant, stroke weight, blur, colour and noise). Returns a dict with the crop count, the
    last-100-step accuracy and the time taken.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"DIGITS.PRETRAIN.AUGMENT must be one of {sorted(AUGMENTATIONS)}, got {augment!r}")
    start = time.perf_counter()
    dicts = [d for name in dataset_names for d in DatasetCatalog.get(name)]
    if max_images:
        dicts = dicts[:max_images]
    crops, labels = extract_crops(dicts, cfg.INPUT.FORMAT, crop_size, seed=seed)
    logger.info(
        f"Backbone pre-training: {len(labels)} crops ({(labels == BACKGROUND).sum()} background) "
        f"from {len(dicts)} images in {time.perf_counter() - start:.1f} s"
    )
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = BackboneClassifier(cfg)
    model.train()
    data = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
    targets = torch.from_numpy(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05, fused=bool(cfg.SOLVER.ADAMW_FUSED))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    correct = []
    bar = tqdm(range(steps), desc="backbone warm start", unit="step", mininterval=5, disable=not comm.is_main_process())
    for step in bar:
        idx = torch.randint(len(targets), (batch_size,), generator=generator)
        logits = model(AUGMENTATIONS[augment](data[idx], generator))
        loss = F.cross_entropy(logits, targets[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        correct.append((logits.argmax(1) == targets[idx]).float().mean().item())
        if step % 50 == 0 or step == steps - 1:
            logger.info(
                f"pre-train step {step + 1}/{steps}: loss {loss.item():.3f}, "
                f"accuracy (last 50) {np.mean(correct[-50:]):.3f}"
            )
    state = {f"backbone.bottom_up.{k}": v for k, v in model.bottom_up.state_dict().items()}
    with atomic_open(output_path, "wb") as f:
        torch.save({"model": state, "__author__": "digit_detectron.engine.pretrain"}, f)
    summary = {
        "crops": int(len(labels)),
        "train_accuracy": float(np.mean(correct[-100:])),
        "seconds": time.perf_counter() - start,
        "checkpoint": output_path,
    }
    logger.info(f"Backbone pre-training done: {summary}")
    return summary


def pretrain_cache_path(cfg, dataset_names):
    """Cache file of a warm start, keyed by the backbone config, the annotations and the settings."""
    p = cfg.DIGITS.PRETRAIN
    data = [
        [
            (d["file_name"], [a["bbox"] + [a["category_id"]] for a in d.get("annotations", [])])
            for d in DatasetCatalog.get(n)
        ]
        for n in dataset_names
    ]
    settings = [
        cfg.MODEL.BACKBONE.NAME,
        cfg.MODEL.RESNETS.dump(),
        cfg.MODEL.TORCHVISION_BACKBONE.dump(),
        cfg.MODEL.PIXEL_MEAN,
        cfg.MODEL.PIXEL_STD,
        cfg.INPUT.FORMAT,
        p.STEPS,
        p.BATCH_SIZE,
        p.LR,
        p.CROP_SIZE,
        p.MAX_IMAGES,
        cfg.SEED,
    ]
    if p.AUGMENT != "basic":  # the key of a "basic" warm start is the one it had before AUGMENT existed
        settings.append(p.AUGMENT)
    digest = hashlib.sha1(json.dumps([settings, data], default=str).encode()).hexdigest()[:12]
    return os.path.join(p.CACHE_DIR, f"backbone_pretrain_{digest}.pth")


def backbone_source_path(source):
    """The model file that ``DIGITS.PRETRAIN.FROM`` names: "ready" is the package's ready model."""
    return ready_model() if source == "ready" else os.path.expanduser(source)


def backbone_from_model(cfg, source, output_dir):
    """
    Cut the bottom-up backbone (``backbone.bottom_up.*``) out of a trained model file (``source``: see
    ``backbone_source_path``) into a checkpoint under ``output_dir`` that starts ``cfg``'s detector,
    keyed by the file's bytes and the backbone's layers, and return its path. The file must hold every
    bottom-up parameter and buffer of ``cfg``'s backbone in the same shape: otherwise a ConfigError
    naming DIGITS.PRETRAIN.FROM, the file and the first layer that differs.
    """
    try:
        path = backbone_source_path(source)
    except BundleError as e:
        raise ConfigError(f"DIGITS.PRETRAIN.FROM {source!r}: {e}") from None
    if not os.path.isfile(path):
        raise ConfigError(f"DIGITS.PRETRAIN.FROM {source!r}: {path}: no such model file")
    expected = build_backbone(cfg).bottom_up.state_dict()
    digest = hashlib.sha1(json.dumps([(k, list(v.shape)) for k, v in expected.items()]).encode())
    with open(path, "rb") as f:
        digest.update(f.read())
    out = os.path.join(output_dir, f"backbone_from_{digest.hexdigest()[:12]}.pth")  # this file, this backbone
    if os.path.isfile(out):
        return out
    try:
        loaded = safe_torch_load(path)
    except BundleError as e:
        raise ConfigError(f"DIGITS.PRETRAIN.FROM {source!r}: {e}") from None
    weights = loaded.get("model", loaded) if isinstance(loaded, dict) else None
    if not isinstance(weights, dict):
        raise ConfigError(f"DIGITS.PRETRAIN.FROM {source!r}: {path} holds no model weights")
    prefix = "backbone.bottom_up."
    state = {}
    for key, value in expected.items():
        theirs = weights.get(prefix + key)
        if not isinstance(theirs, torch.Tensor):
            raise ConfigError(
                f"DIGITS.PRETRAIN.FROM {source!r}: {path} has no {prefix}{key}, which this config's backbone "
                f"has: its backbone is another architecture (MODEL.RESNETS / MODEL.BACKBONE)"
            )
        if tuple(theirs.shape) != tuple(value.shape):
            raise ConfigError(
                f"DIGITS.PRETRAIN.FROM {source!r}: {path}'s {prefix}{key} is {tuple(theirs.shape)}, this "
                f"config's is {tuple(value.shape)}: its backbone is another architecture"
            )
        state[prefix + key] = theirs.to(value.dtype)
    os.makedirs(output_dir, exist_ok=True)
    with atomic_open(out, "wb") as f:
        torch.save({"model": state, "__author__": f"digit_detectron.engine.pretrain from {path}"}, f)
    logger.info(f"Backbone of {path} ({len(state)} tensors) -> {out}")
    return out


def maybe_pretrain(cfg):
    """
    If MODEL.WEIGHTS is empty: with DIGITS.PRETRAIN.FROM, point MODEL.WEIGHTS (cfg not frozen) at that
    model's backbone (``backbone_from_model``); else, with DIGITS.PRETRAIN.ENABLED, at the cached
    pre-trained backbone, making it first if the cache lacks it. Returns the path or None.
    """
    if cfg.MODEL.WEIGHTS:
        return None
    source = cfg.DIGITS.PRETRAIN.FROM
    if source:
        path = None
        if comm.is_main_process():
            path = backbone_from_model(cfg, source, cfg.DIGITS.PRETRAIN.CACHE_DIR)
        comm.synchronize()
        path = path or backbone_from_model(cfg, source, cfg.DIGITS.PRETRAIN.CACHE_DIR)  # made: only its path
        cfg.MODEL.WEIGHTS = path
        return path
    if not cfg.DIGITS.PRETRAIN.ENABLED:
        return None
    path = pretrain_cache_path(cfg, cfg.DATASETS.TRAIN)
    if comm.is_main_process():
        if os.path.isfile(path):
            logger.info(f"Warm start from the cached pre-trained backbone {path}")
        else:
            p = cfg.DIGITS.PRETRAIN
            pretrain_backbone(
                cfg,
                cfg.DATASETS.TRAIN,
                path,
                steps=p.STEPS,
                batch_size=p.BATCH_SIZE,
                lr=p.LR,
                crop_size=p.CROP_SIZE,
                max_images=p.MAX_IMAGES or None,
                seed=max(cfg.SEED, 0),
                augment=p.AUGMENT,
            )
    comm.synchronize()
    cfg.MODEL.WEIGHTS = path
    return path
