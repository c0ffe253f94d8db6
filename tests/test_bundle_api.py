"""
Issue 17 on a model trained here: the bundle round trip, the Python API on every input type, the
``digit-detectron`` command's subcommands, and export to TorchScript / ONNX with the detectron2-free
runtime (tolerance: boxes within 1e-3 px, scores within 1e-4, same classes).
"""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances
from PIL import Image

from digit_detectron import DigitReader, ReadResult, default_dataset_root, register_digits
from digit_detectron.checkpoint.bundle import BUNDLE_KEY, read_bundle_config, update_bundle_config
from digit_detectron.command import main as command_main
from digit_detectron.config import get_digit_cfg, get_model_cfg
from digit_detectron.export.exporter import compare_with_pytorch
from digit_detectron.export.runtime import read_number
from digit_detectron.modeling.number_reader import NumberReader
from digit_detectron.utils.cli import run_tool
from digit_detectron.utils.errors import ConfigError

from conftest import REPO_ROOT, tiny_model_opts, write_digit_dataset

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")
LOW_THRESHOLDS = ["DIGITS.PRED_JSON_SCORE_THRESH", "0.0", "DIGITS.READER.SCORE_THRESHS", "(0.0,)"]


@pytest.fixture
def cli(capsys):
    """``digit-detectron ARGS`` in this process (``root``: the digits_* datasets point there meanwhile)."""

    def run(*args, root=None, expect=0):
        if root:
            register_digits(str(root))
        try:
            result = run_tool(command_main, [str(a) for a in args])
            code = 0 if result is None or not isinstance(result, int) or isinstance(result, bool) else result
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        finally:
            if root:
                register_digits(default_dataset_root())
        captured = capsys.readouterr()
        text = captured.out + captured.err
        assert code == expect, text[-3000:]
        return text

    return run


def command(*args, root=None, timeout=600, expect=0):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if root:
        env["DIGITS_DATASET_ROOT"] = str(root)
    done = subprocess.run(
        [sys.executable, "-m", "digit_detectron.command", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=timeout,
    )
    assert done.returncode == expect, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A bundle from `digit-detectron train` (4 iterations on 8 images), with the dataset."""
    tmp = tmp_path_factory.mktemp("bundle")
    root = write_digit_dataset(tmp / "digits", counts=(8, 4, 3))
    out = tmp / "train"
    opts = (
        tiny_model_opts(out) + LOW_THRESHOLDS + ["SOLVER.EPOCHS", "0", "SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "0"]
    )
    command("train", "--config-file", CONFIG, *opts, "DIGITS.PLOT_AT_END", "False", "DIGITS.REPORT", "True", root=root)
    return {"root": root, "bundle": str(out / "model_final.pth"), "opts": opts, "tmp": tmp}


@pytest.mark.slow
def test_training_ends_with_the_report_of_its_model(trained):
    folder = os.path.join(os.path.dirname(trained["bundle"]), "report", "digits_valid")
    report = json.loads(open(os.path.join(folder, "report.json")).read())
    assert report["images"] == 4 and set(report["error_kinds"]) >= {"correct", "missed digit", "wrong digit"}
    for name in ("pr_curves", "confusion_matrix", "error_kinds", "ap_by_height"):
        for ext in ("png", "json"):
            assert os.path.isfile(os.path.join(folder, f"{name}.{ext}"))


def test_training_writes_bundles_that_carry_the_config(trained):
    data = torch.load(trained["bundle"], map_location="cpu", weights_only=False)
    assert data[BUNDLE_KEY]["format"] == 1
    cfg = get_model_cfg(weights=trained["bundle"])
    assert cfg.MODEL.WEIGHTS == trained["bundle"]
    assert cfg.MODEL.FPN.OUT_CHANNELS == 32 and cfg.DIGITS.READER.SCORE_THRESHS == (0.0,)
    # an explicit config file and opts still override, detectron2-style
    over = get_model_cfg(None, ["DIGITS.READER.NMS_THRESH", "0.45"], weights=trained["bundle"])
    assert over.DIGITS.READER.NMS_THRESH == 0.45


def test_bundle_config_reads_without_loading_the_weights_and_from_legacy_files(trained, tmp_path):
    """The config is read through a memory map (the weights stay on disk); a pre-zip torch file reads in full."""
    data = torch.load(trained["bundle"], map_location="cpu", weights_only=False)
    legacy = tmp_path / "legacy.pth"
    torch.save(data, legacy, _use_new_zipfile_serialization=False)
    assert read_bundle_config(str(legacy)) == read_bundle_config(trained["bundle"]) == data[BUNDLE_KEY]["config"]
    with pytest.raises(RuntimeError, match="mmap"):  # what the fallback is for
        torch.load(legacy, map_location="cpu", weights_only=False, mmap=True)


@pytest.mark.slow
def test_bundle_predicts_what_config_plus_weights_predicts(cli, trained, tmp_path):
    images = os.path.join(trained["root"], "test")
    cli("predict", "--weights", trained["bundle"], "--input", images, "--output", tmp_path / "bundle")
    cli(
        "predict", "--config-file", CONFIG, "--input", images, "--output", tmp_path / "config",
        *trained["opts"], "MODEL.WEIGHTS", trained["bundle"],
    )  # fmt: skip
    for name in ("pred.json", "pred.csv"):
        a = (tmp_path / "bundle" / name).read_text()
        assert a == (tmp_path / "config" / name).read_text(), name
    assert json.loads((tmp_path / "bundle" / "pred.json").read_text())  # boxes, not an empty list


def test_plain_and_broken_model_files_are_clear_errors(cli, trained, tmp_path):
    plain = tmp_path / "plain.pth"
    data = torch.load(trained["bundle"], map_location="cpu", weights_only=False)
    torch.save({"model": data["model"]}, plain)
    images = os.path.join(trained["root"], "test")
    out = cli("predict", "--weights", plain, "--input", images, "--output", tmp_path / "p", expect=2)
    assert "no config embedded in this checkpoint" in out and "--config-file" in out
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    out = cli("predict", "--weights", corrupt, "--input", images, "--output", tmp_path / "c", expect=2)
    assert f"error: {corrupt}: not a readable checkpoint" in out
    other = tmp_path / "list.pth"
    torch.save([1, 2, 3], other)
    out = cli("read", images, "--weights", other, expect=2)
    assert "not a model checkpoint" in out
    wrong_format = tmp_path / "future.pth"
    torch.save({"model": data["model"], BUNDLE_KEY: {"format": 99, "config": ""}}, wrong_format)
    with pytest.raises(ValueError, match="not a bundle of format 1"):
        read_bundle_config(str(wrong_format))
    with pytest.raises(ConfigError, match="no model"):
        get_model_cfg()
    # the upgrade path: tools/make_bundle.py (digit-detectron bundle) embeds the config
    cli("bundle", "--weights", plain, "--config-file", CONFIG, "--output", tmp_path / "b", *trained["opts"])
    assert read_bundle_config(str(tmp_path / "b" / "plain.pth"))


@pytest.mark.slow
def test_tuned_thresholds_ride_in_the_bundle(cli, trained, tmp_path):
    bundle = tmp_path / "model.pth"
    shutil.copy(trained["bundle"], bundle)
    out = cli("tune", "--weights", bundle, "--dataset", "digits_valid", "--output", tmp_path, root=trained["root"])
    assert f"Wrote the thresholds into the bundle {bundle}" in out
    tuned = get_model_cfg(weights=str(bundle))
    yaml_cfg = get_model_cfg(os.path.join(tmp_path, "reader_thresholds.yaml"), weights=trained["bundle"])
    assert tuned.DIGITS.READER.SCORE_THRESHS == yaml_cfg.DIGITS.READER.SCORE_THRESHS
    assert tuned.DIGITS.PRED_JSON_SCORE_THRESH == yaml_cfg.DIGITS.PRED_JSON_SCORE_THRESH
    assert update_bundle_config(str(bundle), {"DIGITS.READER.MAX_DIGITS": 4})
    assert get_model_cfg(weights=str(bundle)).DIGITS.READER.MAX_DIGITS == 4


@pytest.mark.slow
def test_api_reads_paths_arrays_pil_and_batches(trained, tmp_path):
    reader = DigitReader(trained["bundle"])
    files = sorted(os.path.join(trained["root"], "test", f) for f in os.listdir(os.path.join(trained["root"], "test")))
    by_path = reader(files[0])
    assert isinstance(by_path, ReadResult) and by_path.source == files[0]
    bgr = cv2.imread(files[0])
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    for result in (reader(bgr), reader(rgb, channels="RGB"), reader(Image.open(files[0]))):
        assert result.number == by_path.number and result.digits == by_path.digits
    flipped = reader(rgb)  # an RGB array read as BGR: the channels are swapped, not an error
    assert isinstance(flipped, ReadResult)
    batch = reader(files)  # one forward pass (padding to the widest: a barely trained model's numbers may move)
    assert [r.source for r in batch] == files
    assert reader([files[0], files[0]])[1].digits == reader([files[0], files[0]])[0].digits
    for r in batch:
        assert r.number == -1 or str(r.number) == r.text.lstrip("0") or set(r.text) == {"0"}
        assert all(0 <= d.digit <= 9 and len(d.box) == 4 for d in r.digits)
    drawn = by_path.plot()
    assert drawn.ndim == 3 and drawn.dtype == np.uint8
    path = by_path.save(str(tmp_path / "read.png"))
    assert Image.open(path).size == (drawn.shape[1], drawn.shape[0])
    (tmp_path / "folder").mkdir()
    shutil.copy(files[0], tmp_path / "folder" / "a.png")
    (tmp_path / "folder" / "broken.png").write_bytes(b"")
    folder = reader.read_folder(tmp_path / "folder", progress=False)
    assert folder[str(tmp_path / "folder" / "a.png")].number == by_path.number
    assert folder[str(tmp_path / "folder" / "a.png")].plot().shape == drawn.shape  # decoded when drawn
    assert folder[str(tmp_path / "folder" / "broken.png")].error
    with pytest.raises(ValueError, match="channels"):
        reader(bgr, channels="BRG")
    with pytest.raises(TypeError, match="cannot read a int"):
        reader(3)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        reader(np.zeros((10, 10, 3), np.float32))


@pytest.mark.slow
def test_command_lists_and_helps_every_subcommand(cli):
    out = cli("--help")
    for name in ("read", "train", "eval", "predict", "tune", "visualize", "benchmark", "check", "export", "demo"):
        assert f"  {name} " in out
        assert "usage:" in cli(name, "--help")
    assert "invalid choice" in cli("nonsense", expect=2)
    project = open(os.path.join(REPO_ROOT, "pyproject.toml")).read()
    assert 'digit-detectron = "digit_detectron.command:console_main"' in project
    script = os.path.join(os.path.dirname(sys.executable), "digit-detectron")
    if os.path.isfile(script):  # installed by `make setup` (pip install -e .)
        assert "subcommands" in subprocess.run([script, "--help"], capture_output=True, text=True).stdout


@pytest.mark.slow
def test_command_real_runs(cli, trained, tmp_path):
    root, bundle = trained["root"], trained["bundle"]
    image = os.path.join(root, "test", sorted(os.listdir(os.path.join(root, "test")))[0])
    out = cli("read", image, "--weights", bundle, "--output", tmp_path / "read")
    assert f"{image}: " in out and os.path.isfile(tmp_path / "read" / (os.path.basename(image)[:-4] + "_read.png"))
    out = cli("eval", "--weights", bundle, "OUTPUT_DIR", tmp_path / "eval", "DIGITS.REPORT", "True", root=root)
    assert "Number accuracy on digits_valid" in out
    assert "digits_valid" in json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    report = json.loads((tmp_path / "eval" / "report" / "digits_valid" / "report.json").read_text())
    assert report["images"] == 4 and (tmp_path / "eval" / "report" / "digits_valid" / "confusion_matrix.png").is_file()
    cli("check", root)  # exit code 0: no errors in the dataset
    out = cli(
        "visualize",
        "--weights",
        bundle,
        "--dataset",
        "digits_valid",
        "--num",
        "2",
        "--output",
        tmp_path / "v",
        root=root,
    )
    assert os.path.isfile(tmp_path / "v" / "grid.png")
    out = cli("benchmark", "--weights", bundle, "--task", "inference", "--images", "2", "--warmup", "1", root=root)
    assert "images_per_s" in out


@pytest.mark.slow
@pytest.mark.parametrize("fmt, graph", [("torchscript", "model.ts"), ("onnx", "model.onnx")])
def test_export_matches_pytorch_and_runs_without_detectron2(cli, trained, tmp_path, fmt, graph):
    pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    out_dir = tmp_path / fmt
    images = os.path.join(trained["root"], "test")
    log = cli("export", "--weights", trained["bundle"], "--format", fmt, "--output", out_dir, "--images", images)
    check = json.loads((out_dir / "export_check.json").read_text())
    assert check["ok"] and check["max_box_diff_px"] <= 1e-3 and check["max_score_diff"] <= 1e-4, log
    assert not check["mismatched_images"]
    # the runtime beside the model, with detectron2 (and this package) made unimportable
    blocker = tmp_path / "blocked"
    for name in ("detectron2", "digit_detectron"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker))
    files = sorted(os.path.join(images, f) for f in os.listdir(images))
    done = subprocess.run(
        [sys.executable, str(out_dir / "digit_runtime.py"), str(out_dir / graph), *files],
        capture_output=True, text=True, env=env, cwd=str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # the same numbers as the runtime in this process (where detectron2 is importable); the PyTorch
    # equivalence is export_check.json's (a barely trained model's readings flip on 1e-5 px)
    from digit_detectron.export.runtime import ExportedModel

    runtime = ExportedModel(str(out_dir / graph))
    numbers = [runtime.read(np.asarray(Image.open(f).convert("RGB")))[0] for f in files]
    assert done.stdout.strip().splitlines() == [f"{f}: {n}" for f, n in zip(files, numbers)]
    exported = DigitReader(str(out_dir / graph))  # the API on the exported model
    assert [exported(f).number for f in files] == numbers
    bench = ["--weights", trained["bundle"], "--task", "predict", "--exported", out_dir / graph]
    bench += ["--dataset", "digits_test"]
    out = cli("benchmark", *bench, "--images", "2", "--batch-size", "1", "--warmup", "1", root=trained["root"])
    assert "| exported" in out and "images_per_s" in out


def test_runtime_reader_equals_the_number_reader():
    rng = np.random.default_rng(0)
    reader = NumberReader((0.7, 0.5, 0.3), 0.3, 6)
    for _ in range(200):
        n = int(rng.integers(0, 9))
        x = np.sort(rng.uniform(0, 200, size=(n, 2)), axis=1)
        y = np.sort(rng.uniform(0, 60, size=(n, 2)), axis=1)
        boxes = np.stack([x[:, 0], y[:, 0], x[:, 1] + 1, y[:, 1] + 1], axis=1).astype(np.float32)
        scores = rng.uniform(0, 1, size=n).astype(np.float32)
        classes = rng.integers(0, 10, size=n)
        number, chosen = read_number(boxes, scores, classes, reader.score_threshs, reader.nms_thresh, 6)
        assert number == reader(boxes, scores, classes)
        assert list(chosen) == reader.select(boxes, scores, classes).tolist()


class _Fixed:
    """Detections fixed in advance (the comparison's inputs), in the predictor's and the runtime's forms."""

    def __init__(self, boxes, scores, classes, cfg=None):
        self.detections = np.array(boxes, np.float32), np.array(scores, np.float32), np.array(classes, np.int64)
        self.cfg, self.input_format = cfg, "BGR"

    def __call__(self, images):
        boxes, scores, classes = self.detections
        out = Instances(images[0].shape[:2])
        out.pred_boxes, out.scores, out.pred_classes = (
            Boxes(torch.from_numpy(boxes)),
            torch.from_numpy(scores),
            torch.from_numpy(classes),
        )
        return [out]

    def detect(self, image):
        return self.detections


def test_export_check_leaves_out_near_ties_at_the_detection_cap_only():
    cfg = get_digit_cfg(CONFIG, ["TEST.DETECTIONS_PER_IMAGE", "3", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05"])
    boxes = [[0, 0, 10, 20], [10, 0, 20, 20], [20, 0, 30, 20]]
    ref = _Fixed(boxes, [0.9, 0.5, 0.30000], [1, 2, 3], cfg)
    image = np.zeros((32, 32, 3), np.uint8)
    # At the cap of 3 the third detection of each side ties (0.30000 vs 0.30001): another box and class.
    tie = _Fixed([*boxes[:2], [2, 2, 12, 22]], [0.9, 0.5, 0.30001], [1, 2, 7])
    check = compare_with_pytorch(ref, tie, [image])
    assert check["ok"] and check["borderline_detections_skipped"] == 2 and check["mismatched_images"] == []
    # Not a tie (0.31): the image differs.
    other = _Fixed([*boxes[:2], [2, 2, 12, 22]], [0.9, 0.5, 0.31], [1, 2, 7])
    assert compare_with_pytorch(ref, other, [image])["mismatched_images"] == [0]
    # Below the cap nothing is left out: a missing detection is a mismatch.
    missing = _Fixed(boxes[:2], [0.9, 0.5], [1, 2])
    assert not compare_with_pytorch(ref, missing, [image])["ok"]


def test_export_check_counts_nms_near_ties_but_fails_when_every_box_moves():
    cfg = get_digit_cfg(CONFIG, ["MODEL.ROI_HEADS.NMS_THRESH_TEST", "0.5"])
    boxes = [[0, 0, 10, 20], [10, 0, 20, 20], [20, 0, 30, 20], [30, 0, 40, 20], [40, 0, 50, 20]]
    scores, classes = [0.99, 0.98, 0.97, 0.96, 0.95], [1, 2, 3, 4, 5]
    ref = _Fixed(boxes, scores, classes, cfg)
    image = np.zeros((32, 64, 3), np.uint8)
    # One digit kept from the other candidate of its NMS cluster: same score, box 1.2 px off (IoU 0.8).
    tie = _Fixed([*boxes[:4], [41.2, 0.5, 51.2, 20]], scores, classes)
    check = compare_with_pytorch(ref, tie, [image], max_nms_tie_fraction=0.2)
    assert check["ok"] and check["nms_near_ties"] == 1 and check["matched_detections"] == 5
    assert check["max_box_diff_px"] < 1e-3
    # Every box moved (a decoding error, scores unchanged): not ties, a failed check.
    shifted = _Fixed([[x0 + 1.2, y0, x1 + 1.2, y1] for x0, y0, x1, y1 in boxes], scores, classes)
    check = compare_with_pytorch(ref, shifted, [image], max_nms_tie_fraction=0.2)
    assert not check["ok"] and check["nms_near_ties"] == 5
    # A moved box whose score moved too is a real difference.
    moved = _Fixed([*boxes[:4], [41.2, 0.5, 51.2, 20]], [*scores[:4], 0.9], classes)
    check = compare_with_pytorch(ref, moved, [image], max_nms_tie_fraction=0.2)
    assert not check["ok"] and check["max_box_diff_px"] > 1
