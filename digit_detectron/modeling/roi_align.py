"""
ROIAlign whose training pass is a sparse matrix product: the same numbers as torchvision's ROIAlign,
~7x faster forward + backward on CPU.

torchvision's CPU ``roi_align`` backward scatters every sampling point of every ROI into the feature
gradient one float at a time, on one thread: in a ``digits_cpu.yaml`` step (512 ROIs on p2, 128
channels, sampling ratio 2) it took ~0.3 s of ~1.3 s (benchmarks/speed.md). ROIAlign is linear in the
features: each output bin is a fixed weighted sum of at most ``4 * sampling_ratio**2`` feature
pixels. :class:`SparseROIAlign` writes those weights as a sparse matrix ``S`` (one row per ROI bin,
one column per feature pixel of the batch) and computes ``S @ F`` forward and ``S.T @ dL/dout``
backward with PyTorch's multi-threaded CSR kernels. The weights follow torchvision's kernel exactly
(``aligned`` offset, bins of ``sampling_ratio`` x ``sampling_ratio`` points, points beyond one
pixel outside the map count zero, clamping at the border), so outputs and gradients agree to float
rounding (tests/test_roi_align.py). ROIs get no gradient, as with torchvision.

:class:`SparseROIPooler` (the box pooler of ``DigitROIHeads``) puts the ROIs of all FPN levels into
one such matrix, so a training pass needs no per-level ``index_put_`` into a zero tensor (whose
backward cloned the whole output gradient once per level).

Only training-mode passes that need a feature gradient take this path; eval mode (inference, and
export, which traces the eval-mode model) runs torchvision's op unchanged, as do adaptive sampling
(``sampling_ratio <= 0``) and empty levels.
"""

import torch
from detectron2.layers import ROIAlign, nonzero_tuple
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels, convert_boxes_to_pooler_format

__all__ = ["SparseROIAlign", "SparseROIPooler", "sparse_roi_align", "use_sparse_roi_align", "use_sparse_training_pass"]


def _sampling_entries(rois, height, width, output_size, spatial_scale, sampling_ratio, aligned):
    """
    Column indices (into the batch's feature pixels, n * height * width) and weights of the sampling
    matrix, row-major with exactly ``4 * sampling_ratio**2`` entries per output bin (duplicates and
    zero weights included; the products sum them).
    """
    ph, pw = output_size
    g = int(sampling_ratio)
    r = rois.shape[0]
    rois = rois.to(torch.float32)
    offset = 0.5 if aligned else 0.0
    batch = rois[:, 0].long()
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - x1
    roi_h = rois[:, 4] * spatial_scale - offset - y1
    if not aligned:  # the legacy op forces ROIs to at least one pixel
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    # Point k along an axis (bins of g points): start + (k + 0.5) * roi / (bins * g).
    k_y = torch.arange(ph * g, device=rois.device, dtype=torch.float32)
    k_x = torch.arange(pw * g, device=rois.device, dtype=torch.float32)
    ys = y1[:, None] + (k_y + 0.5) * (roi_h / (ph * g))[:, None]
    xs = x1[:, None] + (k_x + 0.5) * (roi_w / (pw * g))[:, None]

    def axis(v, size):
        # torchvision's bilinear_interpolate, per axis: zero beyond one pixel outside, clamp to the map.
        inside = ((v >= -1.0) & (v <= size)).to(v.dtype)
        v = v.clamp(min=0.0)
        low = v.floor().long()
        at_end = low >= size - 1
        low = low.clamp(max=size - 1)
        high = torch.where(at_end, low, low + 1)
        frac = torch.where(at_end, torch.zeros_like(v), v - low)
        return torch.stack([low, high], -1), torch.stack([(1.0 - frac) * inside, frac * inside], -1)

    yi, wy = axis(ys, height)  # (R, PH*g, 2)
    xi, wx = axis(xs, width)  # (R, PW*g, 2)
    # Layout (R, PH, PW, g, g, 2, 2): row-major in the output bins (r, ph, pw).
    yi, wy = yi.view(r, ph, 1, g, 1, 2, 1), wy.view(r, ph, 1, g, 1, 2, 1)
    xi, wx = xi.view(r, 1, pw, 1, g, 1, 2), wx.view(r, 1, pw, 1, g, 1, 2)
    cols = (batch.view(r, 1, 1, 1, 1, 1, 1) * height + yi) * width + xi
    weights = (wy * wx) / (g * g)
    return cols.reshape(-1), weights.reshape(-1), 4 * g * g


class _SparseSampling(torch.autograd.Function):
    """out = S @ F (F: feature pixels as rows, (pixels, c)); backward dF = S.T @ dout. No grad for S."""

    @staticmethod
    def forward(ctx, flat, cols, weights, per_row, n_rows):
        pixels = flat.shape[0]
        crow = torch.arange(0, n_rows * per_row + 1, per_row, device=flat.device)
        s = torch.sparse_csr_tensor(crow, cols, weights.to(flat.dtype), (n_rows, pixels))
        ctx.save_for_backward(cols, weights)
        ctx.meta = (pixels, per_row, n_rows)
        return s @ flat

    @staticmethod
    def backward(ctx, grad):
        cols, weights = ctx.saved_tensors
        pixels, per_row, n_rows = ctx.meta
        order = torch.argsort(cols, stable=True)  # stable: a fixed summation order, deterministic
        rows = torch.div(order, per_row, rounding_mode="floor")
        crow = torch.zeros(pixels + 1, dtype=torch.long, device=grad.device)
        torch.cumsum(torch.bincount(cols, minlength=pixels), 0, out=crow[1:])
        s_t = torch.sparse_csr_tensor(crow, rows, weights[order].to(grad.dtype), (pixels, n_rows))
        return s_t @ grad.contiguous(), None, None, None, None


def _pixel_rows(features):
    """(n, c, h, w) -> (n * h * w, c): one row per feature pixel, in the order of the sampling columns."""
    n, c, h, w = features.shape
    return features.permute(0, 2, 3, 1).reshape(n * h * w, c)


def sparse_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned=True):
    """
    torchvision.ops.roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    as a sparse product. rois: (R, 5) float (batch index, x1, y1, x2, y2); sampling_ratio > 0.
    Returns (R, C, PH, PW).
    """
    if sampling_ratio <= 0:
        raise ValueError(f"sparse_roi_align needs a fixed sampling_ratio > 0, got {sampling_ratio}")
    output_size = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    n, c, h, w = features.shape
    cols, weights, per_row = _sampling_entries(rois, h, w, output_size, spatial_scale, sampling_ratio, aligned)
    n_rows = rois.shape[0] * output_size[0] * output_size[1]
    out = _SparseSampling.apply(_pixel_rows(features), cols, weights, per_row, n_rows)
    return out.view(rois.shape[0], output_size[0], output_size[1], c).permute(0, 3, 1, 2)


def use_sparse_roi_align(features, rois, sampling_ratio):
    """Whether a pass takes the sparse path: it needs a feature gradient, fixed sampling, some ROIs."""
    return (
        torch.is_grad_enabled()
        and features.requires_grad
        and sampling_ratio > 0
        and rois.shape[0] > 0
        and features.device.type == "cpu"
    )


class SparseROIAlign(ROIAlign):
    """detectron2's :class:`ROIAlign` with the sparse training pass (module docstring)."""

    def forward(self, input, rois):
        # Training mode only: eval-mode passes (inference, export tracing) keep torchvision's op.
        if self.training and use_sparse_roi_align(input, rois, self.sampling_ratio) and not input.is_quantized:
            return sparse_roi_align(
                input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
            )
        return super().forward(input, rois)


class SparseROIPooler(ROIPooler):
    """
    detectron2's :class:`ROIPooler` whose training pass pools every FPN level in **one** sparse product.

    detectron2 pools each level apart and writes its ROIs into a zero ``(R, C, PH, PW)`` tensor with
    ``index_put_``; in a training pass autograd then clones the whole output gradient once per level
    (4 levels, 512 ROIs x 128 x 7 x 7 in a ``digits_cpu.yaml`` step: ~20% of the step's CPU time
    under torch.profiler, ~4% of a step's wall time measured without it; benchmarks/speed.md).
    Here each ROI's sampling entries (:func:`_sampling_entries`, on its assigned level) go into one
    matrix whose rows are the ROIs in their input order and whose columns are the pixels of the
    levels that hold an ROI: one product forward, one backward, no scatter, the same numbers.
    Eval mode, no-grad passes and non-ROIAlign levels run detectron2's forward.
    """

    @classmethod
    def from_pooler(cls, pooler):
        """A SparseROIPooler with ``pooler``'s levels and level rule, its ROIAlign levels made sparse."""
        first = pooler.level_poolers[0]
        pooler_type = "ROIAlignV2" if first.aligned else "ROIAlign"
        new = cls(
            pooler.output_size,
            [level.spatial_scale for level in pooler.level_poolers],
            first.sampling_ratio,
            pooler_type,
            canonical_box_size=pooler.canonical_box_size,
            canonical_level=pooler.canonical_level,
        )
        new.train(pooler.training)
        return new

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for i, level in enumerate(self.level_poolers):
            if type(level) is ROIAlign:
                self.level_poolers[i] = SparseROIAlign(
                    level.output_size, level.spatial_scale, level.sampling_ratio, aligned=level.aligned
                )

    def _takes_sparse_pass(self, x, boxes):
        levels = self.level_poolers
        if not all(isinstance(level, SparseROIAlign) for level in levels):
            return False
        ratios = {level.sampling_ratio for level in levels}
        if len(ratios) != 1 or len({level.aligned for level in levels}) != 1:
            return False
        (ratio,) = ratios
        return all(use_sparse_roi_align(f, boxes, ratio) and not f.is_quantized for f in x)

    def forward(self, x, box_lists):
        if not (self.training and box_lists):  # eval mode (inference, export tracing): detectron2's
            return super().forward(x, box_lists)
        boxes = convert_boxes_to_pooler_format(box_lists)
        if not self._takes_sparse_pass(x, boxes):
            return super().forward(x, box_lists)
        r = boxes.shape[0]
        if len(self.level_poolers) == 1:
            assignments = torch.zeros(r, dtype=torch.long, device=boxes.device)
        else:
            assignments = assign_boxes_to_levels(
                box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
            )
        ph, pw = self.output_size
        g = int(self.level_poolers[0].sampling_ratio)
        per_row = 4 * g * g
        cols = torch.empty((r, ph * pw * per_row), dtype=torch.long, device=boxes.device)
        weights = torch.empty((r, ph * pw * per_row), dtype=torch.float32, device=boxes.device)
        pixel_rows, offset = [], 0
        for level, (features, pooler) in enumerate(zip(x, self.level_poolers)):
            inds = nonzero_tuple(assignments == level)[0]
            if inds.numel() == 0:
                continue
            n, c, h, w = features.shape
            level_cols, level_weights, _ = _sampling_entries(
                boxes[inds], h, w, (ph, pw), pooler.spatial_scale, g, pooler.aligned
            )
            cols[inds] = level_cols.view(inds.numel(), -1) + offset
            weights[inds] = level_weights.view(inds.numel(), -1)
            pixel_rows.append(_pixel_rows(features))
            offset += n * h * w
        flat = pixel_rows[0] if len(pixel_rows) == 1 else torch.cat(pixel_rows)
        out = _SparseSampling.apply(flat, cols.view(-1), weights.view(-1), per_row, r * ph * pw)
        return out.view(r, ph, pw, flat.shape[1]).permute(0, 3, 1, 2)


def use_sparse_training_pass(pooler):
    """
    The :class:`SparseROIPooler` for a detectron2 ROIPooler of ROIAlign levels (its training passes
    sparse, every level in one product); any other pooler is returned unchanged.
    """
    if type(pooler) is not ROIPooler or not all(type(level) is ROIAlign for level in pooler.level_poolers):
        return pooler
    return SparseROIPooler.from_pooler(pooler)
