"""
Faults: bad images met in training, a non-finite loss, SIGKILLed training resumed with --resume,
and atomic writes that survive an exception or a SIGKILL of the writer.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import cv2
import pytest
import torch

from digit_detectron import get_digit_cfg
from digit_detectron.checkpoint import DigitCheckpointer
from digit_detectron.data import register_digits
from digit_detectron.engine import DigitTrainer, resolve_schedule
from digit_detectron.utils.io import atomic_open, atomic_write_json

from conftest import REPO_ROOT, tiny_model_opts, write_digit_dataset

TRAIN_NET = os.path.join(REPO_ROOT, "tools", "train_net.py")
CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")
# No evaluation (not even the final one), no plots; SOLVER.MAX_ITER counts.
QUICK = ["SOLVER.EPOCHS", "0", "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0", "DIGITS.PLOT_AT_END", "False"]


def train_net_command(*args):
    return [sys.executable, TRAIN_NET, "--config-file", CONFIG, *args]


def train_net_env(root):
    return dict(os.environ, DIGITS_DATASET_ROOT=str(root), PYTHONUNBUFFERED="1")


def run_train_net(root, *args):
    return subprocess.run(
        train_net_command(*args), env=train_net_env(root), capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )


def last_line(text):
    return [line for line in text.splitlines() if line.strip()][-1]


def read_metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# Bad images met during training.


def _truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return "corrupt or truncated image"


def _taller_than_json(path):
    image = cv2.imread(path)
    h, w = image.shape[:2]
    cv2.imwrite(path, cv2.copyMakeBorder(image, 0, 5, 0, 0, cv2.BORDER_REPLICATE))
    return f"image is {w}x{h + 5} (width x height, after EXIF rotation) but its annotation says {w}x{h}"


@pytest.mark.parametrize(
    "damage, workers",
    [(_truncate, "0"), (_taller_than_json, "1")],  # in the main process / in a DataLoader worker
    ids=["corrupt", "size-mismatch"],
)
@pytest.mark.slow
def test_bad_train_image_stops_training_naming_the_file(tmp_path, damage, workers):
    root = write_digit_dataset(tmp_path / "digits", counts=(4, 1, 1))
    bad = os.path.join(root, "train", "3.png")
    problem = damage(bad)
    # 4 train images in batches of 2: every image is read within the first 2 iterations.
    proc = run_train_net(
        root, *tiny_model_opts(tmp_path / "out"), *QUICK, "SOLVER.MAX_ITER", "6", "DATALOADER.NUM_WORKERS", workers
    )
    assert proc.returncode != 0
    # The last thing printed names the file and the problem, however deep the traceback above it.
    assert f"{bad}: {problem}" in last_line(proc.stderr), proc.stderr[-3000:]
    assert not os.path.exists(tmp_path / "out" / "model_final.pth")


# A non-finite loss.


@pytest.mark.slow
def test_non_finite_loss_names_iteration_and_term_and_keeps_last_checkpoint(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(4, 1, 1))
    out = tmp_path / "out"
    # An infinite IoU-loss weight from epoch 1 (iteration 2) on, mixed into loss_box_reg only;
    # the checkpoint of iteration 1 is the last good one. (1e400 parses as float inf.)
    proc = run_train_net(
        root,
        *tiny_model_opts(out),
        *QUICK,
        "SOLVER.MAX_ITER",
        "6",
        "SOLVER.CHECKPOINT_PERIOD",
        "2",
        "DIGITS.ITERS_PER_EPOCH",
        "2",
        "MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE",
        "diou",
        "MODEL.ROI_BOX_HEAD.IOU_LOSS.INTO",
        "box_reg",
        "MODEL.ROI_BOX_HEAD.IOU_LOSS.START_EPOCH",
        "1",
        "MODEL.ROI_BOX_HEAD.IOU_LOSS.LAMBDA_START",
        "1e400",
        "MODEL.ROI_BOX_HEAD.IOU_LOSS.LAMBDA_MAX",
        "1e400",
    )
    assert proc.returncode != 0
    checkpoint = out / "model_0000001.pth"
    message = last_line(proc.stderr)
    assert message.startswith("error: Non-finite loss at iteration 2: loss_box_reg = "), proc.stderr[-3000:]
    assert "loss_cls" not in message  # only the non-finite term is named
    assert message.endswith(f"last good checkpoint: {checkpoint}")
    assert "Traceback" not in proc.stderr + proc.stdout  # the one line only (--debug shows the traceback)
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == ["model_0000001.pth"]
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert [m["iteration"] for m in read_metrics(out / "metrics.json") if "total_loss" in m] == [0, 1]

    cfg = get_digit_cfg(CONFIG, tiny_model_opts(out))
    model = DigitTrainer.build_model(cfg)
    loaded = DigitCheckpointer(model, str(out)).resume_or_load("", resume=True)
    assert loaded["iteration"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_exploding_weights_are_reported_at_their_iteration(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(4, 1, 1))
    register_digits(root, prefix="faults_lr")
    cfg = get_digit_cfg(
        CONFIG,
        tiny_model_opts(tmp_path / "out")
        + QUICK
        + [
            "DATASETS.TRAIN",
            "('faults_lr_train',)",
            "SOLVER.MAX_ITER",
            "3",
            "SOLVER.WARMUP_ITERS",
            "0",
            "SOLVER.BASE_LR",
            "1e30",
            "SOLVER.CHECKPOINT_PERIOD",
            "100",
        ],
    )
    resolve_schedule(cfg, num_train_images=4)
    trainer = DigitTrainer(cfg)
    with pytest.raises(FloatingPointError) as e:
        trainer.train()
    message = str(e.value)
    # The first AdamW step moves every weight by ~1e30: the next forward pass overflows, and the RPN
    # meets non-finite boxes before any loss is computed.
    assert message.startswith("Non-finite values at iteration 1 in the model's forward pass: "), message
    assert "Training stopped before the optimizer step" in message
    assert message.endswith("last good checkpoint: none yet")


# Training killed at any moment resumes on the same schedule.


RESUME_OPTS = [
    "SOLVER.MAX_ITER",
    "12",
    "SOLVER.CHECKPOINT_PERIOD",
    "4",
    "SOLVER.WARMUP_ITERS",
    "4",
    "DIGITS.ITERS_PER_EPOCH",
    "2",
    "MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE",
    "diou",
    "MODEL.ROI_BOX_HEAD.IOU_LOSS.START_EPOCH",
    "1",
]


def uninterrupted_schedule(opts):
    """lr and IoU-loss lambda of each iteration of an uninterrupted run: the scheduler stepped from 0, the ramp."""
    from detectron2.solver import build_lr_scheduler

    cfg = resolve_schedule(get_digit_cfg(CONFIG, opts))
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # lambda = min(LAMBDA_START + LAMBDA_STEP * (epoch - START_EPOCH), LAMBDA_MAX) from START_EPOCH 1 on.
    lambdas = [0.0 if it < 2 else min(0.1 + 0.05 * (it // 2 - 1), 0.5) for it in range(cfg.SOLVER.MAX_ITER)]
    return lrs, lambdas


@pytest.mark.slow
def test_sigkilled_training_resumes_on_the_same_schedule(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(4, 1, 1))
    out = tmp_path / "out"
    opts = tiny_model_opts(out) + QUICK + RESUME_OPTS
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(
            train_net_command(*opts), env=train_net_env(root), stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
        )
        try:
            deadline = time.monotonic() + 180
            tag = out / "last_checkpoint"
            while not (tag.is_file() and tag.read_text() == "model_0000003.pth"):
                assert proc.poll() is None, (
                    "training ended before it could be killed:\n" + (tmp_path / "killed.log").read_text()[-3000:]
                )
                assert time.monotonic() < deadline, "no checkpoint of iteration 3 in time"
                time.sleep(0.02)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (out / "model_0000003.pth").is_file() and not (out / "model_final.pth").exists()
    killed_text = (out / "metrics.json").read_text()
    killed = read_metrics(out / "metrics.json")
    # The metrics writer runs after the checkpointer within a step, so a kill right after checkpoint 3
    # can come before iteration 3's line (seen on a slower CPU): the file is whole up to iteration 2.
    assert killed_text.endswith("\n") and killed[0]["iteration"] == 0 and killed[-1]["iteration"] >= 2

    proc = run_train_net(root, "--resume", *opts)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting training from iteration 4" in proc.stderr + proc.stdout
    assert (out / "model_final.pth").is_file()
    text = (out / "metrics.json").read_text()
    assert text.startswith(killed_text)  # appended to, not overwritten
    resumed = [json.loads(line) for line in text[len(killed_text) :].splitlines() if line.strip()]
    assert [m["iteration"] for m in resumed] == list(range(4, 12))

    lrs, lambdas = uninterrupted_schedule(opts)
    assert len(set(lrs)) == 12 and lrs.index(max(lrs)) == 4  # warm-up to iteration 4, cosine after
    for m in killed + resumed:
        it = m["iteration"]
        assert m["lr"] == pytest.approx(lrs[it], rel=1e-9, abs=0), it
        assert m["iou_loss_lambda"] == pytest.approx(lambdas[it], abs=1e-12), it
        assert m["epoch"] == it / 2


# Atomic writes.


def test_exception_while_writing_keeps_the_old_file(tmp_path):
    path = tmp_path / "pred.json"
    path.write_text('{"old": true}')
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_open(path) as f:
            f.write('{"new": ')
            f.flush()
            raise RuntimeError("disk on fire")
    assert path.read_text() == '{"old": true}'
    assert os.listdir(tmp_path) == ["pred.json"]  # no temporary file left behind

    with pytest.raises(TypeError):
        atomic_write_json(path, {"new": object()})  # not serialisable: json.dump fails midway
    assert path.read_text() == '{"old": true}' and os.listdir(tmp_path) == ["pred.json"]


@pytest.mark.slow
def test_sigkilled_writer_keeps_the_old_file(tmp_path):
    path = tmp_path / "pred.json"
    path.write_text('{"old": true}')
    # json.dump has written part of the document when `default` meets the object and hangs.
    writer = textwrap.dedent(
        f"""
        import sys, time
        from digit_detectron.utils.io import atomic_write_json

        def hang(obj):
            print("writing", flush=True)
            time.sleep(600)

        atomic_write_json({str(path)!r}, {{"images": list(range(5000)), "hang": object()}}, default=hang)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        assert proc.stdout.readline() == "writing\n"
        partial = [f for f in os.listdir(tmp_path) if f != "pred.json"]
        assert len(partial) == 1 and partial[0].startswith(".pred.json.") and partial[0].endswith(".tmp")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert path.read_text() == '{"old": true}'
    # The writer could not clean up: its temporary file is hidden and never mistaken for the output.
    assert [f for f in os.listdir(tmp_path) if not f.startswith(".")] == ["pred.json"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_written_files_have_the_usual_permissions(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "new.json", {"a": 1})
        (tmp_path / "old.json").write_text("[]")
        with atomic_open(tmp_path / "old.json", "wb") as f:
            f.write(b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) == mode  # not mkstemp's 0600
    assert stat.S_IMODE(os.stat(tmp_path / "old.json").st_mode) == mode
    assert json.loads((tmp_path / "new.json").read_text()) == {"a": 1}
