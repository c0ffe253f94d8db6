"""The ablation summary on metrics files the test writes; experiments files and tools/run_experiments.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from digit_detectron.analysis.experiments import (
    compare_to_baseline,
    load_experiments,
    seed_statistics,
    summarize_runs,
    summarize_seeds,
)

from conftest import REPO_ROOT, tiny_model_opts, write_digit_dataset

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")
RUN_EXPERIMENTS = os.path.join(REPO_ROOT, "tools", "run_experiments.py")


def _write_metrics(path, aps):
    with open(path, "w") as f:
        for i, ap in enumerate(aps):
            it = 10 * (i + 1) - 1
            f.write(json.dumps({"iteration": it, "total_loss": 1.0 / (i + 1), "loss_cls": 0.5}) + "\n")
            f.write(
                json.dumps(
                    {
                        "iteration": it,
                        "bbox/AP": ap,
                        "bbox/AP50": ap + 20,
                        "bbox/AR100": ap + 5,
                        "number/accuracy": ap / 100,
                    }
                )
                + "\n"
            )


@pytest.mark.slow
def test_summary_table_and_figure(tmp_path):
    _write_metrics(tmp_path / "a.json", [10.0, 30.0, 25.0])
    _write_metrics(tmp_path / "b.json", [12.0, 20.0])
    md, png = summarize_runs({"none": tmp_path / "a.json", "diou": tmp_path / "b.json"}, tmp_path / "out")
    lines = open(md).read().splitlines()
    none_row = next(line for line in lines if line.startswith("| none |"))
    diou_row = next(line for line in lines if line.startswith("| diou |"))
    # Last evaluation: AP, AP50, ..., AR100, accuracy; then the best AP and its iteration.
    assert none_row.split("|")[2].strip() == "25.00" and none_row.split("|")[3].strip() == "45.00"
    assert none_row.split("|")[-5].strip() == "30.00 (19)"
    assert none_row.rstrip("| ").endswith("- | - | -")  # no config.yaml, step times or speeds in these files
    assert diou_row.split("|")[2].strip() == "20.00" and "0.20" in diou_row
    img = Image.open(png)
    assert img.size == (1600, 800)
    assert np.asarray(img.convert("L")).std() > 5


@pytest.mark.slow
def test_cost_columns_from_step_times_speed_and_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "metrics.json", "w") as f:
        for it, t in enumerate([2.0, 0.5, 0.5, 0.4, 0.6]):
            f.write(json.dumps({"iteration": it, "total_loss": 1.0, "time": t, "wall_minutes": it / 10}) + "\n")
        f.write(json.dumps({"iteration": 4, "bbox/AP": 10.0, "speed/images_per_s": 42.5}) + "\n")
    (run / "config.yaml").write_text("SOLVER:\n  IMS_PER_BATCH: 16\n")
    md, _ = summarize_runs({"r": run / "metrics.json"}, tmp_path / "out")
    row = next(line for line in open(md).read().splitlines() if line.startswith("| r |"))
    # 16 images / median step time 0.5 s; the last evaluation's images/s; minutes at the last iteration.
    assert [c.strip() for c in row.split("|")[-4:-1]] == ["32.00", "42.50", "0.40"]


def _write_experiments(path, text):
    path.write_text(text)
    return str(path)


def test_experiments_file_gives_each_run_its_config_and_opts(tmp_path):
    path = _write_experiments(
        tmp_path / "e.yaml",
        """
title: lr sweep
config_file: configs/a.yaml
opts: [SOLVER.MAX_ITER, 10]
runs:
  base: []
  fast: [SOLVER.BASE_LR, 0.01]
  other: {config_file: configs/b.yaml, opts: [SEED, 1]}
""",
    )
    title, runs = load_experiments(path)
    assert title == "lr sweep"
    assert runs == {
        "base": ("configs/a.yaml", ["SOLVER.MAX_ITER", "10"]),
        "fast": ("configs/a.yaml", ["SOLVER.MAX_ITER", "10", "SOLVER.BASE_LR", "0.01"]),
        "other": ("configs/b.yaml", ["SOLVER.MAX_ITER", "10", "SEED", "1"]),
    }


@pytest.mark.parametrize(
    "text, problem",
    [
        ("runs: {}", "non-empty 'runs'"),
        ("runs: {a: [SEED]}\nconfig_file: x.yaml", "run 'a' has an odd number of opts"),
        ("runs: {a: []}", "run 'a' has no config_file"),
        ("runs: {a: 3}\nconfig_file: x.yaml", "run 'a' must be a list of opts"),
        ("runs: [a", "not valid YAML"),
    ],
)
def test_bad_experiments_file_names_file_and_problem(tmp_path, text, problem):
    path = _write_experiments(tmp_path / "bad.yaml", text)
    with pytest.raises(ValueError, match=problem) as e:
        load_experiments(path)
    assert str(e.value).startswith(path)


@pytest.mark.slow
def test_run_experiments_trains_tabulates_and_keeps_finished_runs(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(4, 2, 1))
    opts = tiny_model_opts("unused")[2:] + [
        "SOLVER.MAX_ITER",
        "2",
        "TEST.EVAL_PERIOD",
        "2",
        "SOLVER.WARMUP_ITERS",
        "0",
        "DIGITS.PLOT_AT_END",
        "False",
    ]
    path = _write_experiments(
        tmp_path / "e.yaml",
        (
            f"title: tiny\nconfig_file: {CONFIG}\nopts: {json.dumps(opts)}\n"
            "runs:\n  adamw: []\n  sgd: [SOLVER.OPTIMIZER, SGD, SOLVER.BASE_LR, 0.01]\n"
        ),
    )
    out = tmp_path / "out"
    cmd = [sys.executable, RUN_EXPERIMENTS, path, "--output", str(out)]
    env = dict(os.environ, DIGITS_DATASET_ROOT=root)
    proc = subprocess.run(cmd + ["--only", "sgd"], env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isfile(out / "sgd" / "model_final.pth") and not os.path.exists(out / "adamw")
    with open(out / "sgd" / "config.yaml") as f:
        assert "OPTIMIZER: SGD" in f.read()
    row = next(line for line in open(out / "ablation.md").read().splitlines() if line.startswith("| sgd |"))
    train_ips, eval_ips, minutes = (float(c) for c in row.split("|")[-4:-1])
    assert train_ips > 0 and eval_ips > 0 and minutes > 0
    assert os.path.isfile(out / "ablation.png")

    again = subprocess.run(cmd + ["--only", "sgd"], env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert again.returncode == 0 and "finished earlier" in again.stdout

    unknown = subprocess.run(cmd + ["--only", "lamb"], env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    assert unknown.returncode != 0 and "no run named lamb" in unknown.stderr


def _ablate_loss_cmd(out, *args):
    return [sys.executable, os.path.join(REPO_ROOT, "tools", "ablate_loss.py"), "--config-file", CONFIG,
            "--output", str(out), *args]  # fmt: skip


@pytest.mark.slow
def test_ablate_loss_keeps_finished_runs_and_tabulates_them(tmp_path):
    out = tmp_path / "ablation"
    for loss_type, aps in (("none", [10.0, 20.0]), ("diou", [11.0, 22.0])):
        (out / loss_type).mkdir(parents=True)
        (out / loss_type / "model_final.pth").write_bytes(b"")  # finished: not trained again
        _write_metrics(out / loss_type / "metrics.json", aps)
    proc = subprocess.run(
        _ablate_loss_cmd(out, "--types", "none", "diou"), capture_output=True, text=True, cwd=REPO_ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("finished earlier") == 2
    rows = {
        line.split("|")[1].strip(): line
        for line in open(out / "ablation.md").read().splitlines()
        if line.startswith("| ")
    }
    assert rows["none"].split("|")[2].strip() == "20.00" and rows["diou"].split("|")[2].strip() == "22.00"


def _eval_results(ap, accuracy):
    entry = {"bbox": {"AP": ap, "AP50": ap + 30, "AP75": float("nan")}, "number": {"accuracy": accuracy}}
    return {"digits_valid": entry, "digits_valid_instyle": {"bbox": {"AP": ap + 10}, "number": {}}}


def test_seed_statistics_and_differences_on_known_values(tmp_path):
    results = {
        "none_seed0": _eval_results(50.0, 70.0),
        "none_seed1": _eval_results(52.0, 72.0),
        "none_seed2": _eval_results(54.0, 74.0),
        "diou_seed0": _eval_results(60.0, 70.5),
        "diou_seed1": _eval_results(61.0, 73.5),
        "diou_seed2": _eval_results(62.0, 72.0),
    }
    groups = {t: [f"{t}_seed{s}" for s in range(3)] for t in ("none", "diou")}
    datasets = ["digits_valid", "digits_valid_instyle"]
    stats = seed_statistics(groups, results, datasets)
    ap = stats["none"]["digits_valid"]["AP"]
    assert ap["values"] == [50.0, 52.0, 54.0] and ap["mean"] == pytest.approx(52.0) and ap["sd"] == pytest.approx(2.0)
    assert (ap["min"], ap["max"]) == (50.0, 54.0)
    assert stats["none"]["digits_valid"]["AP75"]["mean"] is None  # nan is not a value
    assert stats["none"]["digits_valid_instyle"]["accuracy"]["values"] == []  # missing is not a value

    diffs = compare_to_baseline(stats, "none")
    d = diffs["diou"]["digits_valid"]["AP"]  # +9 with se sqrt(4/3 + 1/3) = 1.29: clear
    assert d["diff"] == pytest.approx(9.0) and d["se"] == pytest.approx((5 / 3) ** 0.5) and d["clear"]
    acc = diffs["diou"]["digits_valid"]["accuracy"]  # +0, se sqrt(4/3 + 2.25/3): within the spread
    assert acc["diff"] == pytest.approx(0.0) and not acc["clear"]

    md, js, png = summarize_seeds(groups, results, datasets, tmp_path / "out", labels={"digits_valid": "out-of-style"})
    text = open(md).read()
    assert "## digits_valid (out-of-style)" in text and "## digits_valid_instyle" in text
    assert "| none | 52.00 +- 2.00 [50.0..54.0] |" in text
    assert "| diou - none | **+9.00 +- 1.29** |" in text and "| - | +0.00 +- 1.44 |" in text  # accuracy: not bold
    saved = json.load(open(js))
    assert saved["baseline"] == "none" and saved["stats"]["diou"]["digits_valid"]["AP"]["mean"] == pytest.approx(61.0)
    assert Image.open(png).size[0] > 600


@pytest.mark.slow
def test_ablate_loss_over_seeds_reuses_runs_and_evaluations(tmp_path):
    """Finished runs and written evaluations are reused (nothing trains); the seed table comes from them."""
    out = tmp_path / "ablation"
    for loss_type, base in (("none", 50.0), ("ciou", 56.0)):
        for seed in (3, 4):
            run = out / f"{loss_type}_seed{seed}"
            (run / "eval").mkdir(parents=True)
            (run / "model_final.pth").write_bytes(b"")
            _write_metrics(run / "metrics.json", [base])
            with open(run / "eval" / "eval_results.json", "w") as f:
                json.dump(_eval_results(base + seed, 80.0), f)
    cmd = _ablate_loss_cmd(out, "--types", "none", "ciou", "--seeds", "3", "4", "--eval-datasets", "digits_valid")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("finished earlier") == 4 and "evaluating" not in proc.stderr
    text = open(out / "seeds.md").read()
    assert "| none | 53.50 +- 0.71 [53.0..54.0] |" in text and "| ciou - none | **+6.00 +- 0.71** |" in text

    # a run without its evaluation of a requested split is named
    os.remove(out / "ciou_seed4" / "eval" / "eval_results.json")
    with open(out / "ciou_seed4" / "eval" / "eval_results.json", "w") as f:
        json.dump({"digits_test_ood": {}}, f)
    bad = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert bad.returncode != 0 and "ciou_seed4" in bad.stderr and "no results for digits_valid" in bad.stderr
