"""Shared fixtures: tiny digit datasets written to disk in the HW2 layout."""

import json
import os

import cv2
import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Real SVHN box geometry beside the repository (no pixels); tests that need it skip without it.
SVHN_GEOMETRY = os.path.join(REPO_ROOT, "..", "shared", "svhn_geometry", "train.json")
# Layouts the synthetic generator draws from in tests: the real geometry when present, as make demo does.
GEOMETRY = SVHN_GEOMETRY if os.path.isfile(SVHN_GEOMETRY) else "parametric"


def draw_digits(rng, digits, height=48):
    """A BGR image of ``digits`` drawn left to right; returns (image, XYWH boxes tight on the ink)."""
    scale = height / 40.0
    glyphs = []
    for d in digits:
        (w, h), base = cv2.getTextSize(str(d), cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
        mask = np.zeros((h + base + 8, w + 8), np.uint8)
        cv2.putText(mask, str(d), (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 2)
        glyphs.append(mask)
    width = sum(g.shape[1] for g in glyphs) + 16
    img_h = max(g.shape[0] for g in glyphs) + 12
    background = rng.integers(0, 100, size=3)
    foreground = 255 - rng.integers(0, 60, size=3)
    image = np.empty((img_h, width, 3), np.uint8)
    image[:] = background
    boxes, x = [], 8
    for g in glyphs:
        y = 6
        region = image[y : y + g.shape[0], x : x + g.shape[1]]
        region[g > 127] = foreground
        ys, xs = np.nonzero(g > 127)
        boxes.append([x + xs.min(), y + ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1])
        x += g.shape[1]
    return image, boxes


def write_digit_dataset(root, counts=(8, 4, 3), seed=0, valid_name="valid"):
    """Write ROOT/{train,<valid_name>,test}/*.png, ROOT/train.json and ROOT/<valid_name>.json; returns root."""
    rng = np.random.default_rng(seed)
    image_id = 1
    for split, n in zip(("train", valid_name, "test"), counts):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        images, annotations = [], []
        for _ in range(n):
            digits = rng.integers(0, 10, size=int(rng.integers(1, 4))).tolist()
            image, boxes = draw_digits(rng, digits)
            name = f"{image_id}.png"
            cv2.imwrite(os.path.join(root, split, name), image)
            images.append({"id": image_id, "file_name": name, "height": image.shape[0], "width": image.shape[1]})
            for d, box in zip(digits, boxes):
                box = [int(v) for v in box]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "bbox": box,
                        "category_id": d + 1,
                        "area": box[2] * box[3],
                        "iscrowd": 0,
                    }
                )
            image_id += 1
        if split != "test":
            with open(os.path.join(root, split + ".json"), "w") as f:
                json.dump(
                    {
                        "images": images,
                        "annotations": annotations,
                        "categories": [{"id": d + 1, "name": str(d)} for d in range(10)],
                    },
                    f,
                )
    return str(root)


@pytest.fixture
def digit_root(tmp_path):
    return write_digit_dataset(tmp_path / "digits")


def save_random_checkpoint(output_dir, config, seed=0):
    """A randomly initialised tiny digits model of ``config`` saved as OUTPUT/random_init.pth; returns the path."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from digit_detectron import get_digit_cfg

    torch.manual_seed(seed)
    model = build_model(get_digit_cfg(config, tiny_model_opts(output_dir)))
    DetectionCheckpointer(model, str(output_dir)).save("random_init")
    return str(output_dir / "random_init.pth")


def tiny_model_opts(output_dir):
    """Opts that make configs/digits_cpu.yaml fast enough for tests."""
    return [
        "OUTPUT_DIR",
        str(output_dir),
        "MODEL.FPN.OUT_CHANNELS",
        "32",
        "MODEL.ROI_BOX_HEAD.FC_DIM",
        "64",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN",
        "64",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        "32",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "DATALOADER.NUM_WORKERS",
        "0",
        "DIGITS.PRETRAIN.ENABLED",
        "False",  # tests that pre-train say so
        "DIGITS.REPORT",
        "False",  # tests of the report say so
    ]


# Module-scoped fixtures that train a model or run the command: every test using one is slow too, so that
# ``make test-fast`` (-m "not slow") never builds them.
SLOW_FIXTURES = {"trained", "hw2_route", "installed", "exported"}


def pytest_collection_modifyitems(config, items):
    """Tests using a slow fixture are marked ``slow``; tests marked ``gpu`` run only where torch sees CUDA."""
    import torch

    skip = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs CUDA (torch sees no GPU here)")
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if skip is not None and "gpu" in item.keywords:
            item.add_marker(skip)
