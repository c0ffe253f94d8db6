#!/usr/bin/env python
"""
The reference HW2 pipeline, re-implemented in plain torchvision for speed comparisons: timed on the
same images, the same way, as tools/benchmark.py times a config::

    python benchmarks/torchvision_baseline.py --dataset-root /tmp/speed_data --task train --images 2 \\
        --batch-size 2 --warmup 1 --output output/bench/torchvision_train.json

The reference setup: ``fasterrcnn_resnet50_fpn_v2`` with random init (weights=None,
weights_backbone=None: all backbone layers trainable, BatchNorm), 11 classes (background + 10 digits),
its default resize (short side 800, long side at most 1333), anchors (4, 8, 12, 24, 48) per FPN level
with height/width ratios (0.5, 1.0, 1.5, 2.0) (an RPN head for 4 anchors per location), ROI positive
fraction 0.25, score and NMS thresholds 0.5, batch 8, AdamW (lr 1e-4, weight decay 1e-4), images read
with PIL and converted with ``to_tensor``. Every training step also runs the model in eval mode on
the batch without gradients and adds an IoU term computed from those predictions to the loss.
"""

import os
import statistics
import time

import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.env import seed_all_rng
from PIL import Image
from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import box_iou
from torchvision.transforms.functional import to_tensor

from digit_detectron.analysis.benchmark import (
    machine_info,
    padding_fraction,
    peak_rss_mb,
    report,
    select_images,
    time_steps,
    timing_summary,
)
from digit_detectron.data import register_digits
from digit_detectron.utils.cli import argument_parser, run_tool

ANCHOR_SIZES = ((4,), (8,), (12,), (24,), (48,))
ASPECT_RATIOS = ((0.5, 1.0, 1.5, 2.0),) * len(ANCHOR_SIZES)
DATASET_PREFIX = "tvbaseline"


def build_reference_model(min_size=800, max_size=1333):
    """The reference detector, randomly initialised (nothing is downloaded)."""
    model = fasterrcnn_resnet50_fpn_v2(
        weights=None,
        weights_backbone=None,
        num_classes=11,
        min_size=min_size,
        max_size=max_size,
        box_positive_fraction=0.25,
        box_score_thresh=0.5,
        box_nms_thresh=0.5,
    )
    model.rpn.anchor_generator = AnchorGenerator(ANCHOR_SIZES, ASPECT_RATIOS)
    num_anchors = model.rpn.anchor_generator.num_anchors_per_location()[0]
    model.rpn.head = RPNHead(model.backbone.out_channels, num_anchors, conv_depth=2)
    return model


def load_sample(dataset_dict):
    """(CHW float image in [0, 1], target with XYXY boxes and labels 1..10) of a dataset dict."""
    with Image.open(dataset_dict["file_name"]) as img:
        image = to_tensor(img.convert("RGB"))
    anns = dataset_dict.get("annotations", [])
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=torch.float32)
    labels = torch.tensor([a["category_id"] + 1 for a in anns], dtype=torch.int64)
    return image, {"boxes": boxes.reshape(-1, 4), "labels": labels}


def iou_term(predictions, targets):
    """1 - best IoU of each ground-truth box over the predicted boxes (0 when none), averaged."""
    terms = []
    for pred, target in zip(predictions, targets):
        if len(pred["boxes"]):
            terms.append(1.0 - box_iou(target["boxes"], pred["boxes"]).max(dim=1).values)
        else:
            terms.append(torch.ones(len(target["boxes"])))
    return torch.cat(terms).mean()


def make_train_step(model, optimizer):
    """The reference training step: losses, an eval-mode forward for the IoU term, one AdamW step."""

    def step(batch):
        images, targets = batch
        model.train()
        losses = model(images, targets)
        model.eval()
        with torch.no_grad():
            term = iou_term(model(images), targets)
        model.train()
        loss = sum(losses.values()) + term
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def make_inference_step(model):
    model.eval()

    def step(batch):
        with torch.no_grad():
            model(batch[0])

    return step


def benchmark_reference(
    dataset_dicts,
    task="train",
    num_images=8,
    batch_size=8,
    warmup=1,
    min_size=800,
    max_size=1333,
    dataset_name="dataset",
    seed=0,
):
    """Time the reference pipeline like ``digit_detectron.analysis.benchmark.benchmark`` times a config."""
    seed_all_rng(seed)
    is_train = task == "train"
    total = max(num_images, batch_size) + warmup * batch_size
    dicts = select_images(dataset_dicts, total, is_train, dataset_name=dataset_name)
    samples, load_times = [], []
    for d in dicts:
        start = time.perf_counter()
        samples.append(load_sample(d))
        load_times.append(time.perf_counter() - start)
    batches = [tuple(map(list, zip(*samples[i : i + batch_size]))) for i in range(0, len(samples), batch_size)]

    model = build_reference_model(min_size, max_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    step = make_train_step(model, optimizer) if is_train else make_inference_step(model)
    wall, cpu = time_steps(step, batches, warmup)
    resized = [[model.transform.resize(im, None)[0] for im in images] for images, _ in batches]
    return {
        "task": task,
        "dataset": dataset_name,
        "seed": seed,
        **timing_summary(batch_size, wall, cpu, statistics.median(load_times)),
        "padding_fraction": padding_fraction(resized, model.transform.size_divisible),
        "input_size_median": [statistics.median(im.shape[i] for b in resized for im in b) for i in (1, 2)],
        "peak_rss_mb": peak_rss_mb(),
        **machine_info(),
    }


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--dataset-root", required=True, help="digit dataset in the HW2 layout")
    parser.add_argument("--split", choices=["train", "valid", "test"], default=None, help="default: train / valid")
    parser.add_argument("--task", choices=["train", "inference"], default="train")
    parser.add_argument("--images", type=int, default=8, help="images timed (after warm-up)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1, help="batches run before timing (default 1)")
    parser.add_argument("--min-size", type=int, default=800, help="resize short side (reference: 800)")
    parser.add_argument("--max-size", type=int, default=1333, help="resize long side cap (reference: 1333)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model init")
    parser.add_argument("--output", default=None, help="folder for the result as JSON (torchvision_<task>.json)")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    split = args.split or ("train" if args.task == "train" else "valid")
    register_digits(args.dataset_root, DATASET_PREFIX)
    name = f"{DATASET_PREFIX}_{split}"
    result = benchmark_reference(
        DatasetCatalog.get(name),
        args.task,
        args.images,
        args.batch_size,
        args.warmup,
        args.min_size,
        args.max_size,
        dataset_name=name,
        seed=args.seed,
    )
    result.update(
        config="torchvision fasterrcnn_resnet50_fpn_v2 (reference)", min_size=args.min_size, max_size=args.max_size
    )
    print(report(result, args.output and os.path.join(args.output, f"torchvision_{args.task}.json")))
    return result


if __name__ == "__main__":
    run_tool(main)
