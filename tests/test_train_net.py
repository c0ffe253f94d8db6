"""tools/train_net.py end to end on a tiny generated dataset: train, periodic eval, eval-only, resume, DDP."""

import json
import os
import re
import subprocess
import sys

import pytest

from digit_detectron.engine.hooks import LATER_WORK_ENV, parse_later_work, remaining_time
from digit_detectron.utils.threads import choose_thread_policy, usable_cores

from conftest import REPO_ROOT, tiny_model_opts, write_digit_dataset

TRAIN_NET = os.path.join(REPO_ROOT, "tools", "train_net.py")
CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")


def run_train_net(root, *args, timeout=600, env_extra=None):
    env = dict(os.environ, DIGITS_DATASET_ROOT=str(root), PYTHONUNBUFFERED="1", **(env_extra or {}))
    proc = subprocess.run(
        [sys.executable, TRAIN_NET, "--config-file", CONFIG, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def read_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """4 epochs of 2 iterations (8 train images, batch 4), evaluated and checkpointed every epoch."""
    tmp = tmp_path_factory.mktemp("train_net")
    root = write_digit_dataset(tmp / "digits", counts=(8, 4, 2))
    out = tmp / "out"
    log = run_train_net(
        root,
        *tiny_model_opts(out),
        "SOLVER.IMS_PER_BATCH",
        "4",
        "SOLVER.EPOCHS",
        "4",
        "SOLVER.WARMUP_ITERS",
        "0",
        "TEST.EVAL_PERIOD",
        "-1",
        "DIGITS.PLOT_AT_END",
        "False",
        env_extra={LATER_WORK_ENV: "500,60"},  # as make demo sets it: the estimate of the time left is printed
    )
    return root, out, log


@pytest.mark.slow
def test_train_evaluates_every_epoch_and_keeps_best(trained):
    root, out, log = trained
    assert "Schedule: 2 iterations/epoch, MAX_ITER 8" in log
    metrics = read_metrics(out)
    evals = [m for m in metrics if "bbox/AP" in m]
    # After iterations 1, 3, 5 and, as detectron2 logs the final evaluation, at MAX_ITER.
    assert [m["iteration"] for m in evals] == [1, 3, 5, 8]
    assert all("number/accuracy" in m and 0.0 <= m["number/accuracy"] <= 100.0 for m in evals)
    assert all("bbox/AR100" in m for m in evals)
    assert all(m["speed/images_per_s"] > 0 for m in evals)
    train_lines = [m for m in metrics if "total_loss" in m]
    assert train_lines and all("epoch" in m for m in train_lines)
    assert [m["epoch"] for m in train_lines if m["iteration"] in (0, 2, 7)] == [0.0, 1.0, 3.5]
    files = os.listdir(out)
    assert {"model_final.pth", "model_best.pth", "last_checkpoint", "config.yaml"} <= set(files)
    assert "model_0000001.pth" in files  # once per epoch


@pytest.mark.slow
def test_eval_only_prints_coco_table(trained):
    root, out, _ = trained
    # Score threshold 0: an 8-iteration model's class scores sit near 1/11 and can all fall under the
    # recipe's 0.05, and with no detection COCOEvaluator prints "No predictions" instead of its table.
    log = run_train_net(
        root,
        "--eval-only",
        *tiny_model_opts(out / "eval"),
        "MODEL.WEIGHTS",
        str(out / "model_final.pth"),
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
    )
    assert "Evaluation results for bbox" in log
    assert re.search(r"\|\s+AP\s+\|\s+AP50\s+\|\s+AP75\s+\|", log)
    assert "copypaste: Task: number" in log
    # DIGITS.INFERENCE.EVAL_BATCH_SIZE 8: the 4 validation images in one forward pass
    assert "Start inference on 1 batches" in log


@pytest.mark.slow
def test_eval_only_reports_unless_no_report(trained):
    root, out, _ = trained
    weights = ("MODEL.WEIGHTS", str(out / "model_final.pth"), "DIGITS.REPORT", "True")
    run_train_net(root, "--eval-only", "--no-report", *tiny_model_opts(out / "quiet"), *weights)
    assert not os.path.exists(out / "quiet" / "report")
    log = run_train_net(
        root, "--eval-only", *tiny_model_opts(out / "reported"), *weights, "DIGITS.INFERENCE.EVAL_BATCH_SIZE", "1"
    )
    assert "Start inference on 4 batches" in log
    report = json.loads((out / "reported" / "report" / "digits_valid" / "report.json").read_text())
    assert report["images"] == 4
    # One inference pass gives the metrics and the report: their accuracies are one number.
    assert log.count("Start inference on") == 1
    results = json.loads((out / "reported" / "eval_results.json").read_text())["digits_valid"]
    assert report["accuracy"] * 100 == pytest.approx(results["number"]["accuracy"])


@pytest.mark.slow
def test_resume_continues_at_saved_iteration(trained, tmp_path):
    root, out, _ = trained
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    # A run stopped after its epoch-1 checkpoint (iteration 3), resumed for the rest.
    (resumed / "model_0000003.pth").write_bytes((out / "model_0000003.pth").read_bytes())
    (resumed / "last_checkpoint").write_text("model_0000003.pth")
    log = run_train_net(
        root,
        "--resume",
        *tiny_model_opts(resumed),
        "SOLVER.IMS_PER_BATCH",
        "4",
        "SOLVER.EPOCHS",
        "4",
        "SOLVER.WARMUP_ITERS",
        "0",
        "DIGITS.PLOT_AT_END",
        "False",
    )
    assert "Starting training from iteration 4" in log
    iterations = [m["iteration"] for m in read_metrics(resumed) if "total_loss" in m]
    assert min(iterations) >= 4 and max(iterations) == 7


@pytest.mark.slow
def test_two_process_cpu_training(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(8, 2, 1))
    out = tmp_path / "ddp"
    log = run_train_net(
        root,
        "--num-gpus",
        "2",
        "--dist-url",
        "auto",
        *tiny_model_opts(out),
        "SOLVER.IMS_PER_BATCH",
        "4",
        "SOLVER.EPOCHS",
        "0",
        "SOLVER.MAX_ITER",
        "2",
        "TEST.EVAL_PERIOD",
        "0",
        "DIGITS.PLOT_AT_END",
        "False",
        "DIGITS.PRETRAIN.ENABLED",
        "True",
        "DIGITS.PRETRAIN.STEPS",
        "2",
        "DIGITS.PRETRAIN.CACHE_DIR",
        str(tmp_path / "cache"),
    )
    assert "Rank of current process: 0. World size: 2" in log  # detectron2's default_setup line
    assert os.path.isfile(out / "model_final.pth")
    # The warm start is made once, before the processes start (with every thread), and both use it.
    assert log.count("Backbone pre-training done") == 1
    assert log.index("Backbone pre-training done") < log.index("Rank of current process")
    assert len(os.listdir(tmp_path / "cache")) == 1
    # Each process runs on its share of the cores, not on all of them.
    share = choose_thread_policy(usable_cores(), processes=2)
    assert log.count(f"threads: {share.threads} torch thread(s) on {share.cores} usable core(s)") >= 2


@pytest.mark.slow
def test_training_prints_the_time_left_for_the_whole_job(trained):
    """With DIGITS_LATER_WORK set (make demo sets it), each evaluation is followed by an estimate of the
    time left: training, the evaluations still to come and the later phases."""
    _, _, log = trained
    lines = [line for line in log.splitlines() if "[demo] about" in line]
    assert lines, log[-3000:]
    assert re.search(r"min left: training [\d.]+ min \(\d+ steps at [\d.]+ s\), \d evaluation\(s\)", lines[-1])
    assert "then the later phases" in lines[-1] and "500 images at" in lines[-1] and "+ 60 s" in lines[-1]


def test_remaining_time_adds_training_evaluations_and_later_phases():
    total, training, evaluations, later = remaining_time(100, 0.5, 2, 400, 5000, 90.0, 0.01)
    assert (training, evaluations, later) == (50.0, 8.0, 140.0) and total == 198.0
    assert parse_later_work("5132,90") == (5132, 90.0)
    assert parse_later_work(None) == (0, 0.0) and parse_later_work("many") == (0, 0.0)
