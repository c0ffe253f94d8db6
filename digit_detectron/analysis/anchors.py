"""
How well a config's RPN anchors fit a dataset's boxes at the network input.

Every image is resized as the config's ResizeShortestEdge does (INPUT.MIN_SIZE_TEST /
MAX_SIZE_TEST, and each INPUT.MIN_SIZE_TRAIN choice), padded as the backbone pads it, and its
boxes are matched against all anchors that detectron2's anchor generator (built from the config,
as the RPN builds it) places on the feature grids of that padded image. The best IoU of a box
over those anchors decides whether the RPN can ever label it foreground on its own
(>= MODEL.RPN.IOU_THRESHOLDS[-1]) rather than only as a low-quality match.
"""

from collections import Counter, defaultdict

import numpy as np
import torch
from detectron2.data.transforms import ResizeShortestEdge, ResizeTransform
from detectron2.modeling import build_backbone
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator, build_anchor_generator
from detectron2.structures import BoxMode
from torchvision.ops import box_iou
from tqdm import tqdm

PERCENTILES = (5, 25, 50, 75, 95)
# Box-anchor IoU matrices are computed in chunks of at most this many entries.
IOU_CHUNK = 1 << 22


class AnchorLayout:
    """The RPN's anchor generator and the backbone's padding / strides for a config."""

    def __init__(self, cfg):
        name = cfg.MODEL.ANCHOR_GENERATOR.NAME
        if name != "DefaultAnchorGenerator":
            raise ValueError(f"MODEL.ANCHOR_GENERATOR.NAME {name}: only DefaultAnchorGenerator is analysed")
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in cfg.MODEL.RPN.IN_FEATURES if f not in shapes]
        if missing:
            raise ValueError(f"MODEL.RPN.IN_FEATURES {missing} are not backbone outputs {sorted(shapes)}")
        input_shapes = [shapes[f] for f in cfg.MODEL.RPN.IN_FEATURES]
        self.generator = build_anchor_generator(cfg, input_shapes)
        assert isinstance(self.generator, DefaultAnchorGenerator)
        self.level_names = list(cfg.MODEL.RPN.IN_FEATURES)
        self.strides = [s.stride for s in input_shapes]
        constraints = backbone.padding_constraints
        self.size_divisibility = constraints.get("size_divisibility", backbone.size_divisibility)
        self.square_size = constraints.get("square_size", 0)
        # (size, ratio) of every cell anchor, per level, in the generator's order.
        self.cell_shapes = []
        for cells in self.generator.cell_anchors:
            w, h = (cells[:, 2] - cells[:, 0]).double(), (cells[:, 3] - cells[:, 1]).double()
            self.cell_shapes.append([(round(float(s), 2), round(float(r), 3)) for s, r in zip((w * h).sqrt(), h / w)])

    def padded_shape(self, height, width):
        """The (H, W) of the padded batch tensor holding one image of this size (ImageList)."""
        if self.square_size > 0:
            height = width = self.square_size
        d = self.size_divisibility
        if d > 1:
            height, width = -(-height // d) * d, -(-width // d) * d
        return height, width

    def grid_anchors(self, padded_shape):
        """All anchors (XYXY) on the feature grids of a padded image, with their level and cell index."""
        features = [torch.empty(1, 0, -(-padded_shape[0] // s), -(-padded_shape[1] // s)) for s in self.strides]
        per_level = [b.tensor for b in self.generator(features)]
        levels = torch.cat([torch.full((len(a),), i) for i, a in enumerate(per_level)])
        cells = torch.cat([torch.arange(len(a)) % len(self.cell_shapes[i]) for i, a in enumerate(per_level)])
        return torch.cat(per_level), levels, cells


def resize_boxes(records, min_size, max_size):
    """
    Boxes (XYXY, at the network input) of ``records`` resized by ResizeShortestEdge(min_size,
    max_size), and the resized (H, W) of the image of each box.
    """
    boxes, shapes = [], []
    for r in records:
        anns = [a for a in r.get("annotations", []) if not a.get("iscrowd", 0)]
        if not anns:
            continue
        h, w = r["height"], r["width"]
        new_h, new_w = ResizeShortestEdge.get_output_shape(h, w, min_size, max_size) if min_size > 0 else (h, w)
        xyxy = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns], dtype=np.float64)
        boxes.append(ResizeTransform(h, w, new_h, new_w).apply_box(xyxy))
        shapes += [(new_h, new_w)] * len(anns)
    if not boxes:
        raise ValueError("the dataset has no annotated boxes")
    return np.concatenate(boxes), np.array(shapes)


def best_anchor_match(layout, boxes, image_shapes, desc="anchors"):
    """
    Best IoU of every box (N x 4 XYXY) against the anchors of its padded image.

    Returns:
        best_iou (N,), level (N,) and cell (N,) index of the best anchor.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    n = len(boxes)
    best, level, cell = torch.zeros(n), torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    groups = defaultdict(list)
    for i, (h, w) in enumerate(image_shapes):
        groups[layout.padded_shape(int(h), int(w))].append(i)
    for shape, idx in tqdm(groups.items(), desc=desc, unit="shape", leave=False):
        anchors, anchor_level, anchor_cell = layout.grid_anchors(shape)
        idx = torch.tensor(idx)
        rows = max(1, IOU_CHUNK // len(anchors))
        for chunk in idx.split(rows):
            iou, arg = box_iou(boxes[chunk], anchors).max(dim=1)
            best[chunk], level[chunk], cell[chunk] = iou, anchor_level[arg], anchor_cell[arg]
    return best.numpy(), level.numpy(), cell.numpy()


def percentiles(values):
    return {f"p{p}": round(float(v), 3) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}


def box_geometry(boxes):
    """Percentiles of box height, width, sqrt(area) and aspect (h / w) of XYXY boxes."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return {
        "height": percentiles(h),
        "width": percentiles(w),
        "sqrt_area": percentiles(np.sqrt(w * h)),
        "aspect_h_over_w": percentiles(h / w),
    }


def _shares(keys):
    counts = Counter(keys)
    return {k: round(counts[k] / len(keys), 4) for k in sorted(counts, key=lambda k: -counts[k])}


def centred_best_iou(layout, boxes):
    """
    Best IoU of every box with each cell anchor centred on the box: how well the anchor shapes
    fit, ignoring where the feature grids put them.

    Returns:
        best_iou (N,), and the (size, ratio) of the best cell anchor of each box.
    """
    cells = torch.cat(list(layout.generator.cell_anchors)).double()
    aw, ah = cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1]
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    w, h = boxes[:, 2:3] - boxes[:, 0:1], boxes[:, 3:4] - boxes[:, 1:2]
    inter = torch.minimum(w, aw) * torch.minimum(h, ah)
    best, arg = (inter / (w * h + aw * ah - inter)).max(dim=1)
    shapes = [shape for level in layout.cell_shapes for shape in level]
    return best.numpy(), [shapes[i] for i in arg.tolist()]


def _iou_stats(best, fg_iou):
    return {
        f"share_iou_ge_{fg_iou:g}": round(float((best >= fg_iou).mean()), 4),
        "share_iou_ge_0.5": round(float((best >= 0.5).mean()), 4),
        "best_iou": percentiles(best),
    }


def coverage(layout, boxes, image_shapes, fg_iou, desc="anchors"):
    """
    Best-anchor statistics of boxes at the network input: IoU shares and percentiles over the
    anchors on the grid, the best level / ratio / size, and the same IoU statistics "centred".
    """
    best, level, cell = best_anchor_match(layout, boxes, image_shapes, desc)
    shapes = [layout.cell_shapes[lv][c] for lv, c in zip(level, cell)]
    centred_best, centred_shapes = centred_best_iou(layout, boxes)
    return {
        **_iou_stats(best, fg_iou),
        "best_level": _shares([layout.level_names[lv] for lv in level]),
        "best_aspect_ratio": _shares([f"{r:g}" for _, r in shapes]),
        "best_size": _shares([f"{s:g}" for s, _ in shapes]),
        "centred": {
            **_iou_stats(centred_best, fg_iou),
            "best_aspect_ratio": _shares([f"{r:g}" for _, r in centred_shapes]),
        },
    }


def suggest_anchors(boxes, num_levels, num_ratios):
    """
    Anchor sizes (one per level, at evenly spaced quantiles of box sqrt(area)) and aspect ratios
    (evenly spaced quantiles of box h / w) for boxes at the network input.
    """
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    q = lambda n: [(i + 0.5) / n * 100 for i in range(n)]  # noqa: E731
    sizes = [[round(float(s), 1)] for s in np.percentile(np.sqrt(w * h), q(num_levels))]
    ratios = [[round(float(r), 2) for r in np.percentile(h / w, q(num_ratios))]]
    return sizes, ratios


def train_min_sizes(cfg):
    """The short-side lengths training uses: every choice, or the two ends of a range."""
    sizes = list(cfg.INPUT.MIN_SIZE_TRAIN)
    if cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "range":
        return [min(sizes), max(sizes)]
    return sizes


def analyze_anchors(cfg, records, train=True, suggest=True):
    """
    The anchor report of ``records`` (detectron2 dataset dicts with height / width / annotations)
    under ``cfg``: box geometry and anchor coverage at the test-time resize, coverage at each
    train-time short side (if ``train``), and suggested anchors with their coverage (if ``suggest``).
    """
    layout = AnchorLayout(cfg)
    fg_iou = float(cfg.MODEL.RPN.IOU_THRESHOLDS[-1])
    boxes, shapes = resize_boxes(records, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    report = {
        "images": len(records),
        "boxes": len(boxes),
        "rpn_fg_iou": fg_iou,
        "anchors": {
            "levels": layout.level_names,
            "strides": layout.strides,
            "sizes": [sorted({s for s, _ in cells}) for cells in layout.cell_shapes],
            "aspect_ratios": [sorted({r for _, r in cells}) for cells in layout.cell_shapes],
            "offset": float(cfg.MODEL.ANCHOR_GENERATOR.OFFSET),
        },
        "test": {
            "min_size": cfg.INPUT.MIN_SIZE_TEST,
            "max_size": cfg.INPUT.MAX_SIZE_TEST,
            "image": {"height": percentiles(shapes[:, 0]), "width": percentiles(shapes[:, 1])},
            "box": box_geometry(boxes),
            **coverage(layout, boxes, shapes, fg_iou, desc="test resize"),
        },
    }
    if train:
        report["train"] = []
        for size in train_min_sizes(cfg):
            b, s = resize_boxes(records, size, cfg.INPUT.MAX_SIZE_TRAIN)
            entry = {"min_size": size, "max_size": cfg.INPUT.MAX_SIZE_TRAIN, "box": box_geometry(b)}
            report["train"].append({**entry, **coverage(layout, b, s, fg_iou, desc=f"train {size}")})
    if suggest:
        num_ratios = max(len({r for _, r in cells}) for cells in layout.cell_shapes)
        sizes, ratios = suggest_anchors(boxes, len(layout.strides), num_ratios)
        suggested = cfg.clone()
        suggested.defrost()
        suggested.MODEL.ANCHOR_GENERATOR.SIZES = sizes
        suggested.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = ratios
        cov = coverage(AnchorLayout(suggested), boxes, shapes, fg_iou, desc="suggested")
        report["suggested"] = {"sizes": sizes, "aspect_ratios": ratios, "test": cov}
    return report


def format_report(report):
    """The report as plain-text tables."""
    from tabulate import tabulate

    fg = report["rpn_fg_iou"]
    fg_key = f"share_iou_ge_{fg:g}"
    a = report["anchors"]
    lines = [
        f"{report['images']} images, {report['boxes']} boxes",
        "anchors: "
        + ", ".join(
            f"{n} (stride {st}): sizes {s} ratios {r}"
            for n, st, s, r in zip(a["levels"], a["strides"], a["sizes"], a["aspect_ratios"])
        )
        + f"; offset {a['offset']:g}",
        "",
    ]
    rows = []

    def row(name, entry, box, min_size, max_size):
        rows.append(
            [
                name,
                f"{min_size}/{max_size}",
                f"{box['height']['p5']:.0f}-{box['height']['p50']:.0f}-{box['height']['p95']:.0f}",
                f"{box['width']['p5']:.0f}-{box['width']['p50']:.0f}-{box['width']['p95']:.0f}",
                f"{100 * entry[fg_key]:.1f}",
                f"{100 * entry['share_iou_ge_0.5']:.1f}",
                f"{entry['best_iou']['p50']:.3f}",
                f"{100 * entry['centred'][fg_key]:.1f}",
                f"{100 * entry['centred']['share_iou_ge_0.5']:.1f}",
                f"{entry['centred']['best_iou']['p50']:.3f}",
            ]
        )

    t = report["test"]
    row("test", t, t["box"], t["min_size"], t["max_size"])
    for e in report.get("train", []):
        row("train", e, e["box"], e["min_size"], e["max_size"])
    if "suggested" in report:
        row("suggested (test)", report["suggested"]["test"], t["box"], t["min_size"], t["max_size"])
    headers = ["resize", "short/max", "box h p5-50-95", "box w p5-50-95", f"% IoU>={fg:g}", "% IoU>=0.5", "median IoU"]
    headers += [f"centred: % >={fg:g}", "% >=0.5", "median"]
    lines.append(
        "best IoU of each box over the anchors on the feature grids (centred: anchor shapes on the box centre):"
    )
    lines.append(tabulate(rows, headers=headers, tablefmt="pipe"))
    lines.append("")
    geo = [[k] + list(v.values()) for k, v in t["box"].items()]
    lines.append("boxes at the test-time input (px):")
    lines.append(tabulate(geo, headers=["quantity"] + [f"p{p}" for p in PERCENTILES], tablefmt="pipe"))
    lines.append("")
    for name, shares in [
        ("best level", t["best_level"]),
        ("best size", t["best_size"]),
        ("best aspect ratio", t["best_aspect_ratio"]),
        ("best aspect ratio, centred", t["centred"]["best_aspect_ratio"]),
    ]:
        lines.append(f"{name} (test): " + ", ".join(f"{k}: {100 * v:.1f}%" for k, v in shares.items()))
    if "suggested" in report:
        s = report["suggested"]
        lines.append(f"suggested: MODEL.ANCHOR_GENERATOR.SIZES {s['sizes']} ASPECT_RATIOS {s['aspect_ratios']}")
    return "\n".join(lines)
