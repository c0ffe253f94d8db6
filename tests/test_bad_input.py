"""
Bad input ends in one clear line or a counted skip, and inference never runs on a wrong model: each case
on files the test makes, asserting the exit code, the single error line and that nothing was written wrongly.
"""

import json
import os
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from PIL import Image
from test_svhn_converter import write_svhn_folder

from digit_detectron import get_digit_cfg
from digit_detectron.data.image_io import ImageReadError, read_image
from digit_detectron.data.prepare.check import check_dataset
from digit_detectron.data.prepare.svhn import convert_svhn
from digit_detectron.utils.cli import error_message, run_tool
from digit_detectron.utils.lock import LOCK_NAME, OutputLock

from conftest import REPO_ROOT, tiny_model_opts, write_digit_dataset

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")
QUICK = ["SOLVER.EPOCHS", "0", "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0", "DIGITS.PLOT_AT_END", "False"]


def tool(name, *args, root=None, env=None):
    """Run tools/<name>.py (or datasets/<name>.py); returns the CompletedProcess."""
    folder = "datasets" if name.startswith("prepare_") else "tools"
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    if root is not None:
        environment["DIGITS_DATASET_ROOT"] = str(root)
    return subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, folder, name + ".py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env=environment,
    )


def assert_one_error_line(proc, *fragments):
    """Non-zero exit, stderr ends in one 'error: ...' line holding ``fragments``, and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), proc.stderr[-3000:]
    for fragment in fragments:
        assert str(fragment) in lines[-1], lines[-1]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[-1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint of digits_cpu's tiny test model (random init) and one of a model with 5 classes."""
    out = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(get_digit_cfg(CONFIG, tiny_model_opts(out))), str(out)).save("good")
    five = get_digit_cfg(CONFIG, tiny_model_opts(out) + ["MODEL.ROI_HEADS.NUM_CLASSES", "5"])
    DetectionCheckpointer(build_model(five), str(out)).save("five_classes")
    torch.save({"model": {}}, out / "empty.pth")
    return out


def predict(images, output, weights, *opts, env=None):
    return tool(
        "predict", "--config-file", CONFIG, "--input", images, "--output", output,
        *tiny_model_opts(output.parent / "work"), "MODEL.WEIGHTS", weights, *opts, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = write_digit_dataset(tmp_path_factory.mktemp("imgs") / "digits", counts=(0, 0, 3))
    return os.path.join(root, "test")


# --- the wrong ones ---------------------------------------------------------------------------


@pytest.mark.slow
def test_an_image_over_the_pixel_limit_is_a_counted_skip_in_predict_and_an_error_in_check(images, checkpoint, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in os.listdir(images):
        (folder / name).write_bytes(open(os.path.join(images, name), "rb").read())
    Image.new("RGB", (300, 200)).save(folder / "99.png")  # 60,000 pixels, over the limit below
    env = {"DIGITS_MAX_IMAGE_PIXELS": "20000"}
    proc = predict(folder, tmp_path / "out", checkpoint / "good.pth", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 1 unreadable image" in proc.stdout and "99.png: 300x200 = 60,000 pixels" in proc.stdout
    rows = (tmp_path / "out" / "pred.csv").read_text().splitlines()
    assert rows[-1] == "99,-1" and len(rows) == 1 + 4
    # PIL's own decompression-bomb limit is an ImageReadError naming the file too.
    Image.MAX_IMAGE_PIXELS, limit = 1000, Image.MAX_IMAGE_PIXELS
    try:
        with pytest.raises(ImageReadError, match="99.png: too many pixels"):
            read_image(str(folder / "99.png"))
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    root = write_digit_dataset(tmp_path / "digits", counts=(2, 1, 0))
    Image.new("RGB", (300, 200)).save(os.path.join(root, "train", "1.png"))
    os.environ["DIGITS_MAX_IMAGE_PIXELS"] = "20000"
    try:
        report = check_dataset(root, progress=False)
    finally:
        del os.environ["DIGITS_MAX_IMAGE_PIXELS"]
    assert any(f.kind == "image-too-large" and f.path.endswith("1.png") for f in report.errors)


@pytest.mark.slow
@pytest.mark.parametrize("weights, problem", [("five_classes.pth", "of another shape"), ("empty.pth", "missing")])
def test_inference_refuses_a_checkpoint_that_does_not_fit(checkpoint, images, tmp_path, weights, problem):
    proc = predict(images, tmp_path / "out", checkpoint / weights)
    assert_one_error_line(proc, checkpoint / weights, "does not fit the model of this config for inference", problem)
    assert not (tmp_path / "out" / "pred.json").exists()


@pytest.mark.slow
def test_eval_only_refuses_a_checkpoint_that_does_not_fit(checkpoint, tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(2, 2, 0))
    proc = tool(
        "train_net", "--config-file", CONFIG, "--eval-only", *tiny_model_opts(tmp_path / "eval"),
        "MODEL.WEIGHTS", checkpoint / "five_classes.pth", root=root,
    )  # fmt: skip
    assert_one_error_line(proc, "five_classes.pth", "does not fit", "roi_heads.box_predictor")


@pytest.mark.slow
def test_weights_of_another_depth_are_refused_by_the_converter(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    proc = tool("convert_torchvision_weights", "resnet50", "--input", tmp_path / "resnet18.pth", "--output", tmp_path)
    assert_one_error_line(proc, "resnet18.pth", "not a torchvision resnet50 state dict", "missing")
    assert os.listdir(tmp_path) == ["resnet18.pth"]


@pytest.mark.parametrize(
    "opts, key",
    [
        (["DIGITS.PRED_JSON_SCORE_THRESH", "5.0"], "DIGITS.PRED_JSON_SCORE_THRESH: 5.0 is outside [0, 1]"),
        (["SOLVER.IMS_PER_BATCH", "0"], "SOLVER.IMS_PER_BATCH: 0 is outside [1, inf]"),
        (["SOLVER.IMS_PER_BATCH", "-1"], "SOLVER.IMS_PER_BATCH: -1 is outside [1, inf]"),
        (["MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE", "xiou"], "MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE must be one of"),
        (["INPUT.NO_SUCH_KEY", "1"], "Non-existent key: INPUT.NO_SUCH_KEY"),
        (["SOLVER.BASE_LR", "fast"], "Type mismatch"),
    ],
)
@pytest.mark.slow
def test_bad_config_values_end_in_one_line_naming_the_key(images, tmp_path, opts, key):
    proc = tool("predict", "--config-file", CONFIG, "--input", images, "--output", tmp_path / "out", *opts)
    assert_one_error_line(proc, key)


@pytest.mark.slow
def test_a_second_training_into_the_same_output_dir_is_refused_and_a_dead_lock_is_taken_over(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(4, 1, 0))
    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "started": "now"}))
        proc = tool("train_net", "--config-file", CONFIG, *tiny_model_opts(out), *QUICK, "SOLVER.MAX_ITER", "1",
                    root=root)  # fmt: skip
        assert_one_error_line(proc, out, f"another training (pid {sleeper.pid}", "writes into this OUTPUT_DIR")
        assert not (out / "metrics.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # The sleeper is gone (as a SIGKILLed training would be): its lock is taken over, and released at the end.
    proc = tool("train_net", "--config-file", CONFIG, *tiny_model_opts(out), *QUICK, "SOLVER.MAX_ITER", "1", root=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "taking over the lock" in proc.stdout + proc.stderr and (out / "model_final.pth").exists()
    assert not (out / LOCK_NAME).exists()


def test_lock_is_exclusive_within_a_process(tmp_path):
    first = OutputLock(str(tmp_path)).acquire()
    with pytest.raises(Exception, match="another training"):
        OutputLock(str(tmp_path)).acquire()
    first.release()
    OutputLock(str(tmp_path)).acquire().release()
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.slow
def test_non_finite_svhn_boxes_are_counted_drops(tmp_path):
    entries = {
        "1.png": (40, 20, [(5, 2, 8, 15, 1), (float("nan"), 3, 9, 15, 10)]),
        "2.png": (30, 16, [(10, 1, 9, 14, 7)]),
    }
    write_svhn_folder(tmp_path / "svhn" / "train", entries)
    summary = convert_svhn(str(tmp_path / "svhn"), str(tmp_path / "digits"), valid_fraction=0.0)
    assert summary["dropped_boxes"] == 1 and summary["non_finite_boxes"] == 1 and summary["clipped_boxes"] == 0
    boxes = [a["bbox"] for a in json.load(open(tmp_path / "digits" / "train.json"))["annotations"]]
    assert len(boxes) == 2 and all(np.isfinite(b).all() for b in boxes)
    assert summary["non_finite_images"] == [str(tmp_path / "svhn" / "train" / "1.png")]
    proc = tool("prepare_svhn", tmp_path / "svhn", tmp_path / "again", "--valid-fraction", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"non-finite boxes dropped in 1 image(s): {tmp_path / 'svhn' / 'train' / '1.png'}" in proc.stdout


# --- the weak ones: the right outcome, said in one line ----------------------------------------


@pytest.mark.parametrize(
    "config, problem",
    [("missing.yaml", "missing.yaml: config file not found"), ("broken.yaml", "broken.yaml:")],
)
@pytest.mark.slow
def test_missing_or_malformed_config_file(tmp_path, images, config, problem):
    (tmp_path / "broken.yaml").write_text("MODEL: [unclosed\n")
    proc = tool("predict", "--config-file", tmp_path / config, "--input", images, "--output", tmp_path / "out")
    assert_one_error_line(proc, problem)


@pytest.mark.slow
def test_debug_flag_shows_the_traceback(tmp_path, images):
    proc = tool(
        "predict", "--config-file", tmp_path / "missing.yaml", "--input", images, "--output", tmp_path, "--debug"
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "config file not found" in proc.stderr


def test_errors_of_workers_and_child_processes_become_their_last_line():
    worker = ValueError(
        "Caught ImageReadError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise ImageReadError(path)\n'
        "digit_detectron.data.image_io.ImageReadError: /data/3.png: corrupt or truncated image\n"
    )
    assert error_message(worker) == "/data/3.png: corrupt or truncated image"
    child = RuntimeError("\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n"
                         '  File "y.py", line 2\nDatasetError: /d/train.json: malformed json\n')  # fmt: skip
    assert error_message(child) == "/d/train.json: malformed json"
    assert error_message(KeyError("Non-existent key: A.B")) == "Non-existent key: A.B"


@pytest.mark.slow
def test_images_missing_on_disk_or_a_broken_valid_json_fail_before_the_first_iteration(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(4, 2, 0))
    os.remove(os.path.join(root, "train", "2.png"))
    proc = tool("train_net", "--config-file", CONFIG, *tiny_model_opts(tmp_path / "a"), *QUICK, root=root)
    assert_one_error_line(proc, os.path.join(root, "train", "2.png"), "file not found (listed in dataset digits_train)")
    assert "Starting training" not in proc.stdout + proc.stderr
    root = write_digit_dataset(tmp_path / "other", counts=(4, 2, 0))
    with open(os.path.join(root, "valid.json"), "w") as f:
        f.write("{broken")
    opts = [*tiny_model_opts(tmp_path / "b"), *QUICK[:2], "DIGITS.PLOT_AT_END", "False"]  # DATASETS.TEST: valid
    proc = tool("train_net", "--config-file", CONFIG, *opts, root=root)
    assert_one_error_line(proc, os.path.join(root, "valid.json"), "malformed json")
    assert "Starting training" not in proc.stdout + proc.stderr


def test_check_dataset_fails_a_split_without_annotations(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(3, 1, 0))
    with open(os.path.join(root, "train.json")) as f:
        data = json.load(f)
    data["annotations"] = []
    with open(os.path.join(root, "train.json"), "w") as f:
        json.dump(data, f)
    report = check_dataset(root, progress=False)
    assert any(f.kind == "no-annotations" and f.path.endswith("train.json") for f in report.errors)


@pytest.mark.slow
def test_predict_checks_its_output_folder_before_inference(checkpoint, images, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("not a folder")
    # Weights that do not exist: had the model been loaded first, the error would name them instead.
    proc = predict(images, target, tmp_path / "no_such_model.pth")
    assert_one_error_line(proc, target, "output path is a file, not a folder")
    assert "no_such_model" not in proc.stderr and "Predicted" not in proc.stdout
    assert target.read_text() == "not a folder"


@pytest.mark.slow
def test_prediction_pair_is_vouched_for_and_stale_temporaries_are_cleaned(checkpoint, images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".pred.json.abc123.tmp"
    stale.write_text("left by a killed run")
    assert predict(images, out, checkpoint / "good.pth").returncode == 0
    assert not stale.exists()
    manifest = json.loads((out / "pred_manifest.json").read_text())
    assert manifest["images"] == 3 and len(manifest["run_id"]) == 32
    # A kill between the two renames: a new pred.csv beside the old pred.json.
    rows = (out / "pred.csv").read_text().splitlines()
    (out / "pred.csv").write_text("\n".join(rows[:1] + [r.split(",")[0] + ",123" for r in rows[1:]]) + "\n")
    proc = tool("visualize", "--predictions", out / "pred.json", "--input", images, "--output", tmp_path / "vis",
                "--config-file", CONFIG)  # fmt: skip
    assert_one_error_line(proc, "pred.csv: not the file that run", "different runs")


def test_cli_wrapper_turns_project_errors_into_exit_code_1(capsys):
    def main(argv=None):
        raise ImageReadError("/x/1.png: corrupt or truncated image")

    with pytest.raises(SystemExit) as info:
        run_tool(main, [])
    assert str(info.value) == "error: /x/1.png: corrupt or truncated image" and info.value.code == 2


def test_read_image_names_a_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "1.png"
    cv2.imwrite(str(path), np.zeros((4, 4, 3), np.uint8))
    path.write_bytes(b"not a png" + path.read_bytes()[20:])
    with pytest.raises(ImageReadError, match="1.png: not an image file"):
        read_image(str(path))


def test_a_pkl_tensor_that_name_matching_cannot_load_is_an_error(tmp_path):
    import pickle

    from digit_detectron.checkpoint import CheckpointError, DigitCheckpointer

    cfg = get_digit_cfg(CONFIG, tiny_model_opts(tmp_path))
    model = build_model(cfg)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    key = "backbone.bottom_up.res2.0.conv1.weight"
    state[key] = np.zeros((3, 3, 3, 3), np.float32)  # another shape than the model's
    with open(tmp_path / "w.pkl", "wb") as f:
        pickle.dump({"model": state, "__author__": "test", "matching_heuristics": True}, f)
    with pytest.raises(CheckpointError, match="w.pkl: 1 tensors matched by name do not fit the model"):
        DigitCheckpointer(build_model(cfg)).load(str(tmp_path / "w.pkl"))


@pytest.mark.slow
def test_disk_full_while_writing_predictions_names_the_file_and_keeps_the_old_pair(checkpoint, images, tmp_path):
    out = tmp_path / "out"
    assert predict(images, out, checkpoint / "good.pth").returncode == 0
    before = {name: (out / name).read_bytes() for name in ("pred.json", "pred.csv")}
    script = os.path.join(REPO_ROOT, "tools", "predict.py")
    code = (
        "import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200)); "
        f"sys.argv = sys.argv[1:]; runpy.run_path({script!r}, run_name='__main__')"
    )
    args = ["--config-file", CONFIG, "--input", images, "--output", out, *tiny_model_opts(tmp_path / "w"),
            "MODEL.WEIGHTS", checkpoint / "good.pth", "DIGITS.PRED_JSON_SCORE_THRESH", "0.0"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, "predict.py", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=REPO_ROOT)  # fmt: skip
    assert_one_error_line(proc, out / ".pred.json.", "File too large")
    assert {name: (out / name).read_bytes() for name in ("pred.json", "pred.csv")} == before
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


@pytest.mark.slow
def test_training_stops_before_the_first_iteration_on_an_image_over_the_pixel_limit(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(3, 1, 0))
    big = os.path.join(root, "train", "2.png")
    image = read_image(big)
    cv2.imwrite(big, cv2.resize(image, (image.shape[1] * 8, image.shape[0] * 8)))
    proc = tool("train_net", "--config-file", CONFIG, *tiny_model_opts(tmp_path / "out"), *QUICK, root=root,
                env={"DIGITS_MAX_IMAGE_PIXELS": "20000"})  # fmt: skip
    assert_one_error_line(proc, big, "pixels, more than the limit of 20,000", "DIGITS_MAX_IMAGE_PIXELS")
    assert "Starting training" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_unknown_key_in_a_config_file_names_the_file_and_key(tmp_path, images):
    config = tmp_path / "typo.yaml"
    config.write_text(f'_BASE_: "{CONFIG}"\nDIGITS:\n  READER:\n    SCORE_THRESH: 0.5\n')
    proc = tool("predict", "--config-file", config, "--input", images, "--output", tmp_path / "out")
    assert_one_error_line(proc, "typo.yaml", "Non-existent config key: DIGITS.READER.SCORE_THRESH")
