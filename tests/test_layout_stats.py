"""
The layouts a public clone renders (no geometry file) reproduce the real SVHN train framing: the shipped
statistics are the fit of the real geometry, and layouts drawn from them match its distributions.
"""

import json
import os

import numpy as np
import pytest
from scipy.stats import ks_2samp

from digit_detectron.data.synthetic.layout import (
    LAYOUT_STATS,
    ParametricSampler,
    SVHNGeometrySampler,
    fit_layout_stats,
    framing_table,
)

from conftest import SVHN_GEOMETRY

needs_geometry = pytest.mark.skipif(
    not os.path.isfile(SVHN_GEOMETRY), reason="the real SVHN geometry (../shared) is not here"
)
QUANTITIES = ("k", "height", "aspect", "share_w", "share_h", "cx", "cy")


def drawn(n=5000, seed=0):
    sampler, rng = ParametricSampler(), np.random.default_rng(seed)
    return framing_table([sampler(rng) for _ in range(n)])


def test_shipped_layouts_are_framed_wide_like_real_photos():
    table = drawn(2000)
    assert 2.0 < np.median(table["aspect"]) < 2.5  # real train 2.23; the old parametric layouts 1.3
    assert 0.25 < np.median(table["share_w"]) < 0.33  # real 0.29; old 0.51
    assert json.load(open(LAYOUT_STATS))["images"] > 30000  # fitted to the whole train geometry


@needs_geometry
def test_shipped_statistics_are_the_fit_of_the_real_geometry():
    assert fit_layout_stats(SVHN_GEOMETRY) == json.load(open(LAYOUT_STATS))


@needs_geometry
@pytest.mark.parametrize("quantity", QUANTITIES)
def test_drawn_layouts_match_the_real_framing(quantity):
    real = framing_table(SVHNGeometrySampler(SVHN_GEOMETRY))[quantity]
    ours = drawn()[quantity]
    assert abs(np.median(ours) / np.median(real) - 1) <= 0.10, (np.median(ours), np.median(real))
    assert ks_2samp(real, ours).statistic <= 0.15  # measured 0.01-0.14


@needs_geometry
def test_digit_boxes_are_a_little_narrower_than_real_ones():
    # Real neighbours' boxes overlap more than the generator lets digits overlap (a fifth of the narrower
    # box at most): to span the real share of the width, its digits are narrower (median h / w 2.34 vs 2.07).
    real = framing_table(SVHNGeometrySampler(SVHN_GEOMETRY))["box_aspect"]
    ours = drawn()["box_aspect"]
    assert 1.0 <= np.median(ours) / np.median(real) <= 1.15
    assert ks_2samp(real, ours).statistic <= 0.2


@needs_geometry
def test_digit_counts_match():
    real = framing_table(SVHNGeometrySampler(SVHN_GEOMETRY))["k"]
    ours = drawn()["k"]
    for k in range(1, 6):
        assert abs((ours == k).mean() - (real == k).mean()) <= 0.015
