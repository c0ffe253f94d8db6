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

Only training-mode passes that need a feature gradient take this path; eval mode (inference, and
export, which traces the eval-mode model) runs torchvision's op unchanged, as do adaptive sampling
(``sampling_ratio <= 0``) and empty levels.
"""

import torch
from detectron2.layers import ROIAlign

__all__ = ["SparseROIAlign", "sparse_roi_align", "use_sparse_roi_align", "use_sparse_training_pass"]


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
    """out = S @ F (F: the features as (n * h * w, c)); backward dF = S.T @ dout. No grad for S."""

    @staticmethod
    def forward(ctx, features, cols, weights, per_row, n_rows):
        n, c, h, w = features.shape
        crow = torch.arange(0, n_rows * per_row + 1, per_row, device=features.device)
        s = torch.sparse_csr_tensor(crow, cols, weights.to(features.dtype), (n_rows, n * h * w))
        flat = features.permute(0, 2, 3, 1).reshape(n * h * w, c)
        ctx.save_for_backward(cols, weights)
        ctx.meta = (features.shape, per_row, n_rows)
        return s @ flat

    @staticmethod
    def backward(ctx, grad):
        cols, weights = ctx.saved_tensors
        (n, c, h, w), per_row, n_rows = ctx.meta
        pixels = n * h * w
        order = torch.argsort(cols, stable=True)  # stable: a fixed summation order, deterministic
        rows = torch.div(order, per_row, rounding_mode="floor")
        crow = torch.zeros(pixels + 1, dtype=torch.long, device=grad.device)
        torch.cumsum(torch.bincount(cols, minlength=pixels), 0, out=crow[1:])
        s_t = torch.sparse_csr_tensor(crow, rows, weights[order].to(grad.dtype), (pixels, n_rows))
        grad_flat = s_t @ grad.contiguous()
        return grad_flat.reshape(n, h, w, c).permute(0, 3, 1, 2), None, None, None, None


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
    out = _SparseSampling.apply(features, cols, weights, per_row, n_rows)
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


def use_sparse_training_pass(pooler):
    """Make every ROIAlign level of a detectron2 ROIPooler a :class:`SparseROIAlign` (in place)."""
    for i, level in enumerate(pooler.level_poolers):
        if type(level) is ROIAlign:
            pooler.level_poolers[i] = SparseROIAlign(
                level.output_size, level.spatial_scale, level.sampling_ratio, aligned=level.aligned
            )
    return pooler
