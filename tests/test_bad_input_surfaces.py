"""
Bad input on the newer surfaces: the ``read`` command, the Python API (``DigitReader``), the exported
runtime (``digit_runtime.py``), concurrent ``predict`` runs, malformed COCO json and the older tools'
weak spots. Each case makes its input, runs the real code and asserts the outcome: the exit code, the one
line naming the file or argument, the pixels or the number read, and that nothing was lost or overwritten.
"""

import importlib.util
import itertools
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from digit_detectron import DigitReader, get_digit_cfg
from digit_detectron.checkpoint.bundle import BundleError, write_bundle
from digit_detectron.data.datasets import DatasetError, load_digits_json
from digit_detectron.data.image_io import read_image
from digit_detectron.data.prepare.check import check_dataset
from digit_detectron.modeling.number_reader import NumberReader
from digit_detectron.utils.device import resolve_device
from digit_detectron.utils.errors import ConfigError
from digit_detectron.utils.io import remove_stale_temporaries

from conftest import REPO_ROOT, save_random_checkpoint, tiny_model_opts, write_digit_dataset

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")
# A random model reads a number on every image at these thresholds: outcomes are numbers, not all -1.
LOW = ["DIGITS.PRED_JSON_SCORE_THRESH", "0.0", "DIGITS.READER.SCORE_THRESHS", "(0.0,)"]
QUICK = ["SOLVER.EPOCHS", "0", "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0", "DIGITS.PLOT_AT_END", "False"]


def run(*args, cwd=REPO_ROOT, env=None, timeout=300):
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=environment, timeout=timeout
    )


def command(*args, **kwargs):
    return run("-m", "digit_detectron.command", *args, **kwargs)


def tool(name, *args, **kwargs):
    return run(os.path.join(REPO_ROOT, "tools", name + ".py"), *args, **kwargs)


def last_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_one_error_line(proc, *fragments, code=2):
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    line = last_line(proc.stderr)
    assert line.startswith("error: "), proc.stderr[-3000:]
    for fragment in fragments:
        assert str(fragment) in line, line
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return line


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle of digits_cpu's tiny test model (random init) whose reader reads every box."""
    out = tmp_path_factory.mktemp("bundle")
    weights = save_random_checkpoint(out, CONFIG)
    cfg = get_digit_cfg(CONFIG, tiny_model_opts(out) + LOW)
    return write_bundle(str(out / "model.pth"), weights, cfg)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Three test images 1.png .. 3.png of drawn digits."""
    root = write_digit_dataset(tmp_path_factory.mktemp("images") / "digits", counts=(0, 0, 3))
    return os.path.join(root, "test")


def sixteen_bit_png(path):
    """A 16-bit grayscale PNG with values across the whole 16-bit range (clipping makes most of it white)."""
    ramp = np.tile(np.linspace(0, 65535, 96).round().astype(np.uint16), (40, 1))
    ramp[10:30, 20:40] = 2000  # a dark square: 8 of 255 when scaled, white when clipped
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    return str(path)


def truncated_png(source, path):
    data = open(source, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    return str(path)


# --- every input route gives the same pixels -------------------------------------------------------


@pytest.mark.slow
def test_a_pil_image_reads_the_pixels_and_number_of_its_file(bundle, tmp_path):
    reader = DigitReader(bundle, device="cpu")
    png = sixteen_bit_png(tmp_path / "x_16bit.png")
    by_file = reader(png)
    with Image.open(png) as image:
        by_pil = reader(image)
    np.testing.assert_array_equal(by_pil.image_rgb, by_file.image_rgb)
    np.testing.assert_array_equal(by_file.image_rgb, read_image(png, "RGB"))
    assert by_file.image_rgb[20, 30, 0] == 8  # scaled, not clipped to white
    assert by_pil.number == by_file.number and by_pil.digits == by_file.digits

    # An EXIF-rotated photo: the PIL route turns it upright as the file route does.
    rgb = np.zeros((20, 50, 3), np.uint8)
    rgb[:, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = tmp_path / "rotated.jpg"
    Image.fromarray(rgb).save(rotated, exif=exif, quality=95)
    with Image.open(rotated) as image:
        np.testing.assert_array_equal(reader(image).image_rgb, reader(str(rotated)).image_rgb)
    assert reader(str(rotated)).image_rgb.shape == (50, 20, 3)


def test_the_exported_runtime_reads_the_pixels_of_the_package(tmp_path):
    from digit_detectron.export.exporter import standalone_runtime

    (tmp_path / "digit_runtime.py").write_text(standalone_runtime())
    spec = importlib.util.spec_from_file_location("digit_runtime_copy", tmp_path / "digit_runtime.py")
    runtime = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runtime)
    png = sixteen_bit_png(tmp_path / "x_16bit.png")
    np.testing.assert_array_equal(runtime.load_image(png), read_image(png, "RGB"))
    rgba = np.zeros((12, 14, 4), np.uint8)
    rgba[..., 0], rgba[:6, :, 3] = 200, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(
        runtime.load_image(str(tmp_path / "rgba.png")), read_image(str(tmp_path / "rgba.png"), "RGB")
    )


# --- one answer from both readers when boxes tie in position -----------------------------------------


def runtime_module():
    from digit_detectron.export import runtime

    return runtime


def test_both_readers_break_ties_in_position_the_same_way_in_any_input_order():
    # Six digits in three pairs that share their centre on the reading axis; two also share their score.
    row = [
        ([0, 0, 10, 20], 0.9, 6), ([0, 20, 10, 40], 0.8, 9),
        ([20, 0, 30, 20], 0.7, 6), ([20, 20, 30, 40], 0.7, 9),
        ([40, 5, 50, 25], 0.6, 6), ([40, 25, 50, 45], 0.95, 9),
    ]  # fmt: skip
    threshs, nms_thresh, max_digits = (0.5,), 0.3, 6
    torch_reader = NumberReader(threshs, nms_thresh, max_digits)
    runtime = runtime_module()
    answers = set()
    for order in itertools.permutations(range(len(row))):
        boxes = np.array([row[i][0] for i in order], np.float32)
        scores = np.array([row[i][1] for i in order], np.float32)
        classes = np.array([row[i][2] for i in order], np.int64)
        answers.add(torch_reader(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes)))
        answers.add(runtime.read_number(boxes, scores, classes, threshs, nms_thresh, max_digits)[0])
    assert answers == {696969}  # left to right; within a pair of equal centres, the upper one first


def test_equal_scores_on_one_digit_keep_the_same_class_in_both_readers():
    boxes = np.array([[0, 0, 10, 20], [0, 0, 10, 20], [12, 0, 22, 20]], np.float32)
    scores = np.array([0.8, 0.8, 0.9], np.float32)
    runtime = runtime_module()
    answers = set()
    for order in itertools.permutations(range(3)):
        b, s, c = boxes[list(order)], scores[list(order)], np.array([3, 7, 1])[list(order)]
        answers.add(NumberReader((0.5,), 0.3, 6)(torch.from_numpy(b), torch.from_numpy(s), torch.from_numpy(c)))
        answers.add(runtime.read_number(b, s, c, (0.5,), 0.3, 6)[0])
    assert answers == {31}  # the tie goes to the lower class in both


# --- the read command -----------------------------------------------------------------------------


@pytest.mark.slow
def test_read_draws_one_file_per_image_when_stems_repeat(bundle, digits, tmp_path):
    for folder in ("a", "b"):
        os.makedirs(tmp_path / folder)
    a, b = tmp_path / "a" / "501.png", tmp_path / "b" / "501.png"
    a.write_bytes(open(os.path.join(digits, "1.png"), "rb").read())
    b.write_bytes(open(os.path.join(digits, "2.png"), "rb").read())
    out = tmp_path / "out"
    proc = command("read", a, b, "--weights", bundle, "--output", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    drawn = sorted(os.listdir(out))
    assert drawn == ["501_read-2.png", "501_read.png"]
    assert f"drawn: {out / '501_read.png'}" in proc.stdout and f"drawn: {out / '501_read-2.png'}" in proc.stdout
    assert Image.open(out / "501_read.png").size != Image.open(out / "501_read-2.png").size  # two images kept


@pytest.mark.slow
def test_read_goes_on_past_an_unreadable_file_as_folder_mode_does(bundle, digits, tmp_path):
    bad = truncated_png(os.path.join(digits, "1.png"), tmp_path / "corrupt.png")
    good = os.path.join(digits, "2.png")
    files = command("read", good, bad, "--weights", bundle, "--output", tmp_path / "o1", "--device", "cpu")
    assert files.returncode == 1, files.stderr[-3000:]
    assert "Traceback" not in files.stderr
    lines = files.stdout.splitlines()
    assert lines[0].startswith(f"{good}: ") and "-1" not in lines[0].split()[1]
    assert lines[1].startswith(f"{bad}: -1 (unreadable: {bad}: corrupt or truncated image")
    assert last_line(files.stderr) == "1 of 2 image(s) unreadable"

    folder = tmp_path / "folder"
    os.makedirs(folder)
    for src, name in ((good, "2.png"), (bad, "9.png")):
        (folder / name).write_bytes(open(src, "rb").read())
    whole = command("read", folder, "--weights", bundle, "--output", tmp_path / "o2", "--device", "cpu")
    assert whole.returncode == 1 and last_line(whole.stderr) == "1 of 2 image(s) unreadable"
    assert f"{folder / '9.png'}: -1 (unreadable:" in whole.stdout
    number = lines[0].split(": ")[1].split()[0]
    assert whole.stdout.splitlines()[0].startswith(f"{folder / '2.png'}: {number} ")  # 2.png reads the same


@pytest.mark.slow
def test_read_names_a_missing_input_before_loading_the_model(tmp_path):
    proc = command("read", tmp_path / "nope.png", "--weights", tmp_path / "no_model.pth")
    assert_one_error_line(proc, f"{tmp_path / 'nope.png'}: no such image or folder")


# --- the Python API ----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, "4", True])
def test_reader_refuses_a_batch_size_that_is_not_a_positive_whole_number(bundle, batch_size):
    with pytest.raises(ValueError, match=r"batch_size must be a whole number >= 1"):
        DigitReader(bundle, batch_size=batch_size)


def test_device_auto_picks_what_this_machine_has_and_a_bad_device_names_the_key():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected
    assert get_digit_cfg(CONFIG).MODEL.DEVICE == expected
    assert get_digit_cfg(CONFIG, ["MODEL.DEVICE", "cpu"]).MODEL.DEVICE == "cpu"
    with pytest.raises(ConfigError, match="MODEL.DEVICE: 'tpu' is not a device"):
        get_digit_cfg(CONFIG, ["MODEL.DEVICE", "tpu"])


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for machines without a GPU")
def test_predict_with_a_bundle_made_on_a_gpu_runs_on_the_cpu(tmp_path, digits):
    weights = save_random_checkpoint(tmp_path, CONFIG)
    cfg = get_digit_cfg(CONFIG, tiny_model_opts(tmp_path) + LOW)
    cfg.defrost()
    cfg.MODEL.DEVICE = "cuda"  # as a bundle trained on a GPU stores it
    gpu_bundle = write_bundle(str(tmp_path / "gpu.pth"), weights, cfg)
    proc = tool("predict", "--weights", gpu_bundle, "--input", digits, "--output", tmp_path / "pred")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MODEL.DEVICE cuda: no CUDA device is usable here; running on the CPU" in proc.stdout + proc.stderr
    assert len(open(tmp_path / "pred" / "pred.csv").read().splitlines()) == 4


# --- the exported runtime ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(bundle, digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    proc = command("export", "--weights", bundle, "--format", "onnx", "--output", out, "--images", digits)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_runtime_reads_on_past_a_truncated_image_and_names_it(exported, digits, tmp_path):
    good = os.path.join(digits, "1.png")
    bad = truncated_png(good, tmp_path / "truncated.png")
    proc = run(exported / "digit_runtime.py", exported / "model.onnx", good, bad, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    first, second = proc.stdout.splitlines()
    assert (
        first.startswith(f"{good}: ")
        and int(first.split(": ")[1]) == DigitReader(str(exported / "model.onnx"))(good).number
    )
    assert second.startswith(f"{bad}: -1 (unreadable: {bad}: corrupt or truncated image")
    assert last_line(proc.stderr) == "1 of 2 image(s) unreadable"


@pytest.mark.slow
def test_runtime_and_api_name_a_missing_metadata_file_or_a_corrupt_model(exported, digits, tmp_path):
    good = os.path.join(digits, "1.png")
    lone = tmp_path / "lone"
    os.makedirs(lone)
    (lone / "model.onnx").write_bytes((exported / "model.onnx").read_bytes())
    (lone / "digit_runtime.py").write_bytes((exported / "digit_runtime.py").read_bytes())
    proc = run(lone / "digit_runtime.py", lone / "model.onnx", good, cwd=tmp_path)
    assert_one_error_line(proc, f"{lone / 'model.json'}: the exported model's metadata is missing")
    with pytest.raises(BundleError, match="model.json: the exported model's metadata is missing"):
        DigitReader(str(lone / "model.onnx"))

    (lone / "model.json").write_bytes((exported / "model.json").read_bytes())
    (lone / "model.onnx").write_bytes(b"not a protobuf at all" * 10)
    proc = run(lone / "digit_runtime.py", lone / "model.onnx", good, cwd=tmp_path)
    assert_one_error_line(proc, f"{lone / 'model.onnx'}: not a loadable ONNX model")
    with pytest.raises(BundleError, match="model.onnx: not a loadable ONNX model"):
        DigitReader(str(lone / "model.onnx"))

    (lone / "model.json").write_text("{broken")
    proc = run(lone / "digit_runtime.py", lone / "model.onnx", good, cwd=tmp_path)
    assert_one_error_line(proc, f"{lone / 'model.json'}: not readable as json")


# --- concurrent predict runs --------------------------------------------------------------------------


def test_stale_temporaries_are_those_of_dead_writers_only(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        live = tmp_path / f".pred.json.{sleeper.pid}-abc123.tmp"
        gone = tmp_path / f".pred.json.{int(dead.stdout)}-def456.tmp"
        legacy = tmp_path / ".pred.json.k2j4h5g6.tmp"  # written before temporaries carried a pid
        for f in (live, gone, legacy):
            f.write_text("staged")
        removed = remove_stale_temporaries(tmp_path / "pred.json")
        assert sorted(removed) == sorted([str(gone), str(legacy)])
        assert live.read_text() == "staged"
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow
def test_a_second_predict_into_a_busy_folder_stops_and_leaves_the_first_runs_files(bundle, digits, tmp_path):
    out = tmp_path / "pred"
    first = tool("predict", "--weights", bundle, "--input", digits, "--output", out, "--device", "cpu")
    assert first.returncode == 0, first.stderr[-3000:]
    before = {f: (out / f).read_bytes() for f in ("pred.json", "pred.csv", "pred_manifest.json")}
    assert not (out / ".predict.lock").exists()  # released at the end
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a live run holds the folder
        lock = {"pid": sleeper.pid, "host": socket.gethostname(), "started": "now"}
        (out / ".predict.lock").write_text(json.dumps(lock))
        second = tool("predict", "--weights", bundle, "--input", digits, "--output", out, "--device", "cpu")
        assert_one_error_line(second, f"{out}: another predict (pid {sleeper.pid}", "output folder")
        assert {f: (out / f).read_bytes() for f in before} == before
    finally:
        sleeper.kill()
        sleeper.wait()
    third = tool("predict", "--weights", bundle, "--input", digits, "--output", out, "--device", "cpu")
    assert third.returncode == 0, third.stderr[-3000:]  # the dead run's lock is taken over
    assert "taking over the lock of a predict that is gone" in third.stdout + third.stderr


# --- malformed COCO json, in one place for every tool -------------------------------------------------


def broken_json(root, damage):
    path = os.path.join(root, "train.json")
    data = json.load(open(path))
    data = damage(data)
    json.dump(data, open(path, "w"))
    return path


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda d: d["images"], "top level is a list, not an object"),
        (lambda d: {**d, "images": [7, *d["images"][1:]]}, "images[0] is 7, not an object"),
        (lambda d: {**d, "annotations": [{**d["annotations"][0], "bbox": None}]}, "bbox None is not 4 finite numbers"),
        (lambda d: {**d, "annotations": [{**d["annotations"][0], "bbox": [1, 2, "w", 4]}]}, "is not 4 finite numbers"),
        (lambda d: {**d, "images": [{**d["images"][0], "height": "tall"}]}, "are not positive integers"),
        (lambda d: {**d, "annotations": [7]}, "annotations[0] is 7, not an object"),
    ],
)
def test_a_malformed_train_json_is_one_line_naming_file_and_entry(tmp_path, damage, problem):
    root = write_digit_dataset(tmp_path / "digits", counts=(2, 1, 0))
    path = broken_json(root, damage)
    with pytest.raises(DatasetError) as e:
        load_digits_json(path, os.path.join(root, "train"))
    assert str(e.value).startswith(f"{path}: ") and problem in str(e.value)
    report = check_dataset(root, progress=False)  # tools/check_dataset.py says the same
    assert any(problem in f.message and f.path == path for f in report.findings), report.findings


@pytest.mark.slow
def test_train_net_on_a_malformed_json_ends_in_one_line(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(2, 1, 0))
    path = broken_json(root, lambda d: {**d, "annotations": [{**d["annotations"][0], "bbox": None}]})
    proc = tool(
        "train_net", "--config-file", CONFIG, *tiny_model_opts(tmp_path / "out"), *QUICK, "SOLVER.MAX_ITER", "1",
        env={"DIGITS_DATASET_ROOT": root},
    )  # fmt: skip
    assert_one_error_line(proc, path, "bbox None is not 4 finite numbers")


# --- the older tools ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("args, flag", [(["--max-rungs", "0"], "--max-rungs"), (["--batch-size", "0"], "--batch-size")])
def test_tune_reader_refuses_zero_rungs_or_batch_before_running(tmp_path, args, flag):
    proc = tool("tune_reader", "--weights", tmp_path / "model.pth", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"argument {flag}: must be a whole number >= 1, got '0'" in last_line(proc.stderr)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--second-cycle-epochs", "-1"], "argument --second-cycle-epochs: must be a whole number >= 0, got '-1'"),
        (["--calibration-images", "0"], "argument --calibration-images: must be a whole number >= 1, got '0'"),
    ],
)
def test_make_model_refuses_a_bad_count_before_the_hour_of_training(tmp_path, args, message):
    proc = tool("make_model", "--output", tmp_path / "model", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in last_line(proc.stderr)
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_resume_into_a_folder_without_checkpoints_warns(tmp_path):
    root = write_digit_dataset(tmp_path / "digits", counts=(2, 1, 0))
    out = tmp_path / "never_trained"
    proc = tool(
        "train_net", "--config-file", CONFIG, "--resume", *tiny_model_opts(out), *QUICK, "SOLVER.MAX_ITER", "1",
        env={"DIGITS_DATASET_ROOT": root},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    warning = [line for line in (proc.stdout + proc.stderr).splitlines() if "--resume:" in line]
    assert warning and "WARNING" in warning[0] and f"{out} holds no checkpoint to resume" in warning[0]
