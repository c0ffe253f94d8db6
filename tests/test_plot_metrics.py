"""digit_detectron.engine.plots and tools/plot_metrics.py on metrics.json files the tests write."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from digit_detectron.engine.plots import (
    DPI,
    FIGSIZE,
    MetricsError,
    iters_per_epoch_from,
    plot_learning_curve,
    plot_metrics,
    read_metrics,
    series,
    training_minutes,
)
from digit_detectron.utils.cli import run_tool

from conftest import REPO_ROOT

IPE = 50  # iterations per epoch of the fake runs
PNG_SIZE = (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_line(it, offset=0.0):
    line = {
        "iteration": it,
        "total_loss": 3.0 - it / 200 + offset,
        "loss_cls": 1.0 - it / 400,
        "loss_box_reg": 0.5,
        "loss_rpn_cls": 0.3 - it / 2000,
        "loss_rpn_loc": 0.1,
        "lr": 1e-3 * min(1.0, it / 100),
        "time": 0.25,
        "data_time": 0.01,
        "eta_seconds": (400 - it) * 0.25,
        "epoch": it / IPE,
    }
    if it >= 150:
        line.update(loss_iou=0.4, iou_loss_lambda=0.1 + 0.05 * (it // IPE - 3))
    return line


def eval_line(it, ap):
    line = {"iteration": it, "number/accuracy": ap / 100, "number/num_images": 4.0}
    line.update({f"bbox/{k}": ap * f for k, f in (("AP", 1), ("AP50", 2), ("AP75", 0.5), ("APm", 0.8), ("APl", 0.9))})
    line["bbox/APs"] = float("nan")  # COCOEvaluator reports NaN for an area range with no box
    line.update({f"bbox/AP-{d}": ap + d for d in range(10)})
    return line


def log_lines(first, last, offset=0.0, eval_period=IPE, nan_loss_at=None):
    """detectron2's lines for iterations first..last: training every 20, evaluation every eval_period."""
    lines = []
    for it in range(first, last + 1):
        if (it + 1) % 20 == 0:
            line = train_line(it, offset)
            if it == nan_loss_at:
                line["loss_cls"] = float("nan")
            lines.append(json.dumps(line))
        if (it + 1) % eval_period == 0:
            lines.append(json.dumps(eval_line(it, ap=10.0 if offset == 0 else 20.0)))
    return lines


def write_killed_and_resumed_run(path):
    """
    A run killed mid-line after iteration 179, resumed from its checkpoint of iteration 99 with
    evaluation every 100 iterations instead of 50 (the resumed lines are appended, the first glued
    to the partial one), then killed again mid-line.
    """
    first = log_lines(0, 179, nan_loss_at=99)
    resumed = log_lines(100, 399, offset=-1.0, eval_period=100)
    killed = json.dumps(train_line(199))[:25]
    path.write_text("\n".join(first) + "\n" + killed + "\n".join(resumed) + "\n" + json.dumps(train_line(419))[:40])
    return path


@pytest.fixture
def metrics_json(tmp_path):
    (tmp_path / "run").mkdir()
    return write_killed_and_resumed_run(tmp_path / "run" / "metrics.json")


def assert_png(path, size=PNG_SIZE):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == size
        pixels = np.asarray(im.convert("RGB"), dtype=float)
    assert pixels.std() > 0, f"{path} is blank"


def test_resumed_run_keeps_the_last_values(metrics_json):
    metrics = read_metrics(metrics_json)
    # The glued line's resumed half (iteration 119) was recovered; the partial last line skipped.
    assert metrics[119]["total_loss"] == pytest.approx(train_line(119, offset=-1.0)["total_loss"])
    assert max(metrics) == 399
    # Logged again after the resume: the resumed run wins; logged before iteration 100: kept.
    its, total = series(metrics, "total_loss")
    assert list(its) == list(range(19, 400, 20))
    assert total[its.tolist().index(139)] == pytest.approx(train_line(139, offset=-1.0)["total_loss"])
    assert metrics[99]["bbox/AP"] == 10.0 and metrics[49]["bbox/AP"] == 10.0
    assert list(series(metrics, "bbox/AP")[0]) == [49, 99, 199, 299, 399]  # not the dropped run's 149
    assert metrics[199]["bbox/AP"] == 20.0
    # NaN values are dropped from a series, the rest of their line stays.
    assert 99 not in series(metrics, "loss_cls")[0] and 99 in series(metrics, "loss_box_reg")[0]
    assert len(series(metrics, "bbox/APs")[0]) == 0
    assert iters_per_epoch_from(metrics) == pytest.approx(IPE)


@pytest.mark.slow
def test_plot_metrics_writes_every_plot(metrics_json, tmp_path):
    out = tmp_path / "plots"
    pngs = plot_metrics(str(metrics_json), str(out))
    assert [os.path.basename(p) for p in pngs] == [
        "loss.png",
        "schedule.png",
        "validation.png",
        "time.png",
        "learning_curve.png",
    ]
    for path in pngs:
        assert_png(path)
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in pngs)  # no temp file left


def test_missing_keys_plot_what_exists(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(json.dumps({"iteration": i, "total_loss": 1.0 / (i + 1)}) for i in range(0, 40, 10)))
    pngs = plot_metrics(str(path), str(tmp_path / "plots"))
    assert [os.path.basename(p) for p in pngs] == ["loss.png"]
    assert_png(pngs[0])

    only_eval = tmp_path / "eval.json"
    only_eval.write_text(json.dumps({"iteration": 9, "number/accuracy": 0.5}) + "\n")
    pngs = plot_metrics(str(only_eval), str(tmp_path / "plots_eval"))
    assert [os.path.basename(p) for p in pngs] == ["validation.png"]
    assert_png(pngs[0])


@pytest.mark.parametrize(
    "content, problem",
    [(None, "not found"), ("", "no metrics found"), ('{"a": 1}\n[1, 2]\nnot json\n', "no metrics found")],
)
def test_unusable_file_is_a_clear_error(tmp_path, content, problem):
    path = tmp_path / "metrics.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(MetricsError, match=problem) as info:
        plot_metrics(str(path), str(tmp_path / "plots"))
    assert str(path) in str(info.value)
    assert not (tmp_path / "plots").exists() or not os.listdir(tmp_path / "plots")


@pytest.mark.slow
def test_cli_on_an_output_dir(metrics_json, capsys):
    tool = load_tool("plot_metrics")
    out_dir = os.path.dirname(metrics_json)
    pngs = tool.main([out_dir, "--iters-per-epoch", "25"])
    printed = capsys.readouterr().out
    assert os.path.join(out_dir, "plots") in printed
    assert len(pngs) == 5 and all(p in printed for p in pngs)
    for path in pngs:
        assert_png(path)


def test_cli_error_names_the_file(tmp_path):
    tool = load_tool("plot_metrics")
    missing = str(tmp_path / "nope.json")
    with pytest.raises(SystemExit) as info:
        run_tool(tool.main, [missing])
    assert missing in str(info.value) and "not found" in str(info.value)


def test_smoothing_is_a_debiased_average():
    from digit_detectron.engine.plots import smooth

    assert smooth(np.full(5, 2.0)) == pytest.approx(np.full(5, 2.0))
    values = smooth(np.array([0.0, 10.0]))
    assert values[0] == 0.0 and 0.0 < values[1] < 10.0 and math.isfinite(values[1])
    # Long runs are smoothed over more points: noise around a constant shrinks.
    noise = np.random.default_rng(0).normal(1.0, 0.5, size=5000)
    assert np.std(smooth(noise)[1000:]) < 0.1 < np.std(smooth(noise, span=4)[1000:])


def test_learning_curve_uses_logged_wall_minutes(tmp_path):
    lines = [{"iteration": i, "total_loss": 1.0, "time": 1.0, "wall_minutes": 0.5 * i} for i in range(10)]
    lines += [{"iteration": 4, "bbox/AP": 10.0, "number/accuracy": 5.0}, {"iteration": 9, "bbox/AP": 30.0}]
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(json.dumps(r) for r in lines))
    metrics = read_metrics(str(path))
    its, minutes, label = training_minutes(metrics)
    assert list(minutes) == [0.5 * i for i in range(10)] and label == "minutes since training started"
    assert_png(plot_learning_curve(metrics, str(tmp_path / "curve.png")))
