"""
The layouts a public clone renders (no geometry file) reproduce the real SVHN train framing: the shipped
statistics are the fit of the real geometry, and layouts drawn from them match its distributions.
"""

import json
import os

import numpy as np
import pytest
from scipy.stats import ks_2samp

from digit_detectron.data.datasets import DatasetError
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


def drawn_layouts(n=5000, seed=0):
    sampler, rng = ParametricSampler(), np.random.default_rng(seed)
    return [sampler(rng) for _ in range(n)]


def drawn(n=5000, seed=0):
    return framing_table(drawn_layouts(n, seed))


def test_shipped_layouts_are_framed_wide_like_real_photos():
    table = drawn(2000)
    assert 2.0 < np.median(table["aspect"]) < 2.5  # real train 2.23; the old parametric layouts 1.3
    assert 0.25 < np.median(table["share_w"]) < 0.33  # real 0.29; old 0.51
    assert json.load(open(LAYOUT_STATS))["images"] > 30000  # fitted to the whole train geometry


@needs_geometry
def test_shipped_statistics_are_the_fit_of_the_real_geometry():
    fitted, shipped = fit_layout_stats(SVHN_GEOMETRY), json.load(open(LAYOUT_STATS))
    # The same keys, counts and variables; numbers equal up to the last rounded digit (another machine's
    # BLAS may round a correlation the other way).
    assert json.dumps(fitted, sort_keys=True).count(",") == json.dumps(shipped, sort_keys=True).count(",")
    assert {k: v for k, v in fitted.items() if k != "by_count"} == {k: v for k, v in shipped.items() if k != "by_count"}
    for ours, theirs in zip(fitted["by_count"], shipped["by_count"]):
        assert ours["variables"] == theirs["variables"] and ours["digits_by_position"] == theirs["digits_by_position"]
        np.testing.assert_allclose(ours["quantiles"], theirs["quantiles"], atol=2e-5)
        np.testing.assert_allclose(ours["correlation"], theirs["correlation"], atol=2e-4)


@needs_geometry
@pytest.mark.parametrize("quantity", QUANTITIES)
def test_drawn_layouts_match_the_real_framing(quantity):
    real = framing_table(SVHNGeometrySampler(SVHN_GEOMETRY))[quantity]
    ours = drawn()[quantity]
    assert abs(np.median(ours) / np.median(real) - 1) <= 0.10, (np.median(ours), np.median(real))
    assert ks_2samp(real, ours).statistic <= 0.1  # measured 0.005-0.063


def test_each_digit_gets_a_box_of_its_own_shape():
    # A "1" is drawn into a narrow box and an "8" into a wide one, as real annotators box them (real median
    # w / h: "1" 0.37, the others 0.50-0.52); numbers seldom start with 0 and "1" is the commonest digit.
    table = drawn(3000)
    aspect, label = table["box_aspect"], table["box_label"]
    assert (label >= 0).all()
    assert np.median(aspect[label == 1]) > 1.25 * np.median(aspect[(label != 1)])
    first = np.array([lay.digits[0] for lay in drawn_layouts(3000) if len(lay.digits) > 1])
    assert (first == 0).mean() < 0.03 and np.bincount(label, minlength=10).argmax() == 1


def test_statistics_of_another_format_are_refused(tmp_path):
    old = tmp_path / "old_stats.json"
    old.write_text(json.dumps({"source": "x", "images": 1, "digit_count": [1, 0, 0, 0, 0]}))
    with pytest.raises(DatasetError, match="old_stats.json.*format 1.*fit_layout_stats"):
        ParametricSampler(str(old))


@needs_geometry
@pytest.mark.parametrize("quantity", ("box_aspect", "gap", "y_spread"))
def test_digit_shapes_gaps_and_offsets_match_the_real_ones(quantity):
    # The gaps between neighbouring boxes (real ones touch or overlap half the time), each box's h / w and
    # the digits' vertical offsets: what the first statistics got wrong (their 90th-percentile gap was half
    # a digit height against 0.1).
    real = framing_table(SVHNGeometrySampler(SVHN_GEOMETRY))[quantity]
    ours = drawn()[quantity]
    for p in (10, 50, 90):
        assert abs(np.percentile(ours, p) - np.percentile(real, p)) <= 0.03 + 0.06 * abs(np.percentile(real, p))
    assert ks_2samp(real, ours).statistic <= 0.1  # measured 0.02-0.04


@needs_geometry
def test_digits_of_one_number_share_a_height_as_real_ones_do():
    real = framing_table(SVHNGeometrySampler(SVHN_GEOMETRY))["h_spread"]
    assert np.percentile(real, 95) == 0  # real annotators gave a number's digits one height
    assert (drawn(2000)["h_spread"] == 0).all()


@needs_geometry
def test_digit_frequencies_and_shapes_by_digit_match():
    real = framing_table(SVHNGeometrySampler(SVHN_GEOMETRY))
    ours = drawn()
    for d in range(10):
        assert abs((ours["box_label"] == d).mean() - (real["box_label"] == d).mean()) <= 0.015
        r, o = (np.median(t["box_aspect"][t["box_label"] == d]) for t in (real, ours))
        assert abs(o / r - 1) <= 0.05, (d, o, r)


@needs_geometry
def test_digit_counts_match():
    real = framing_table(SVHNGeometrySampler(SVHN_GEOMETRY))["k"]
    ours = drawn()["k"]
    for k in range(1, 6):
        assert abs((ours == k).mean() - (real == k).mean()) <= 0.015
