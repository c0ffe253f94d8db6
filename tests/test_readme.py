"""
The README is for users: short, the HW2 route in its first half, no lab-notebook references; and its
commands work. The HW2 route runs here as the README prints it, on a tiny generated dataset, with the
CPU for the GPU (``--device cpu``) and a tiny model and schedule appended as KEY VALUE opts; the reading
and export commands then run on a tiny model of the demo's config (export checks itself on the tiny
dataset's images: a barely trained model's boxes on the generator's images are too close to call).
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, tiny_model_opts, write_digit_dataset

README = os.path.join(REPO_ROOT, "README.md")
USER_DOCS = [README, os.path.join(REPO_ROOT, "docs", "reference.md"), os.path.join(REPO_ROOT, "docs", "robustness.md")]
# Lab-notebook references a user cannot follow: run / issue numbers, commit hashes.
NOTEBOOK = re.compile(r"\bruns? \d+\b|\bissues? \d+\b|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b|\bood2k\b")


def readme():
    return open(README, encoding="utf-8").read()


def block_after(text, marker):
    """The first fenced code block after ``marker``."""
    rest = text[text.index(marker) :]
    return rest.split("```", 2)[1].split("\n", 1)[1]


def test_readme_is_short_with_the_hw2_route_in_its_first_half():
    text = readme()
    lines = text.splitlines()
    assert len(lines) <= 220, len(lines)
    assert lines[3].startswith("pip install .") and lines[4].startswith("digit-detectron read docs/images/")
    assert lines[5].startswith("make demo") and lines[6].startswith("make test")  # the first lines
    hw2 = next(i for i, line in enumerate(lines) if line.startswith("## Hand in HW2"))
    assert hw2 < len(lines) / 2
    for path in USER_DOCS:
        found = NOTEBOOK.findall(open(path, encoding="utf-8").read())
        assert not found, (path, found)


def command_argv(line):
    """A README command line as argv: ``digit-detectron`` as this Python's module, variables expanded."""
    argv = shlex.split(os.path.expandvars(line))
    if argv[0] == "digit-detectron":
        argv = [sys.executable, "-m", "digit_detectron.command", *argv[1:]]
    elif argv[0] == "python":
        argv[0] = sys.executable
    return ["cpu" if a == "cuda" else a for a in argv]


def run(argv, cwd, env, expect=0):
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert proc.returncode == expect, (argv, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def hw2_route(tmp_path_factory):
    """The README's HW2 commands run in a fresh folder on a tiny dataset; returns (folder, env, outputs)."""
    tmp = tmp_path_factory.mktemp("hw2")
    root = write_digit_dataset(tmp / "hw2", counts=(8, 4, 3))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    lines = [line for line in block_after(readme(), "<!-- hw2-route").splitlines() if line.strip()]
    assert lines[0] == "export DIGITS_DATASET_ROOT=/data/hw2"
    env["DIGITS_DATASET_ROOT"] = os.environ["DIGITS_DATASET_ROOT"] = root
    # A tiny schedule and model on top of the README's own opts (later opts win); no ImageNet download.
    tiny = tiny_model_opts(tmp / "unused")[2:]  # without its OUTPUT_DIR: the README's is kept
    tiny += ["MODEL.WEIGHTS", "", "SOLVER.EPOCHS", "1", "DIGITS.REPORT", "True", "DIGITS.PLOT_AT_END", "False"]
    outputs = {}
    try:
        for line in lines[1:]:
            argv = command_argv(line)
            if argv[3] == "train":
                argv += tiny
            outputs[argv[3]] = run(argv, tmp, env)
    finally:
        os.environ.pop("DIGITS_DATASET_ROOT")
    return tmp, env, outputs


@pytest.mark.slow
def test_the_hw2_route_runs_as_printed_and_writes_the_submission(hw2_route):
    tmp, _, outputs = hw2_route
    assert set(outputs) == {"check", "train", "tune", "predict"}
    bundle = tmp / "output" / "hw2" / "model_best.pth"
    assert bundle.is_file()
    assert (tmp / "output" / "hw2" / "report" / "digits_valid" / "report.json").is_file()
    csv_lines = (tmp / "submission" / "pred.csv").read_text().splitlines()
    assert csv_lines[0] == "image_id,pred_label" and len(csv_lines) == 4  # the 3 test images
    assert (tmp / "submission" / "pred.json").read_text().startswith("[")


@pytest.mark.slow
def test_the_readme_reading_and_export_commands_run_on_the_trained_model(hw2_route):
    tmp, env, _ = hw2_route
    text = readme()
    demo_model = "output/demo/train/model_best.pth"
    photo = tmp / "hw2" / "test" / "13.png"  # a test image of the tiny dataset
    photos = tmp / "photos"
    photos.mkdir()
    (photos / "13.png").write_bytes(open(photo, "rb").read())
    (tmp / "photo.png").write_bytes(open(photo, "rb").read())
    # The README reads with make demo's model (configs/digits_cpu.yaml): a tiny one of that config, here.
    demo_train = tiny_model_opts(tmp / "unused")[2:] + ["SOLVER.EPOCHS", "1", "DIGITS.PLOT_AT_END", "False"]
    run(
        [sys.executable, "-m", "digit_detectron.command", "train", "--config-file", "digits_cpu.yaml", "--device",
         "cpu", *demo_train, "OUTPUT_DIR", "output/demo/train"],
        tmp, env,
    )  # fmt: skip
    assert (tmp / demo_model).is_file()

    python = block_after(text, "## Read a photo")
    code = python.replace('"photos/"', repr(str(photos)))
    script = tmp / "readme_api.py"
    script.write_text(code + "\nprint('NUMBER', result.number, len(result.digits))\n")
    out = run([sys.executable, str(script)], tmp, env)
    assert re.search(r"NUMBER -?\d+ \d+", out) and (tmp / "photo_read.png").is_file()

    read_line = next(line for line in text.splitlines() if line.startswith("digit-detectron read photo.png"))
    out = run(command_argv(read_line.split("#")[0]), tmp, env)
    assert out.startswith("photo.png: ") and (tmp / "read" / "photo_read.png").is_file()
    for line in block_after(text, "## Export").splitlines():
        if line.strip():
            argv = command_argv(line.split("#")[0])
            if argv[3:4] == ["export"]:  # its self-check on the tiny dataset's images, as test_bundle_api's
                argv += ["--images", str(tmp / "hw2" / "test")]
            out = run(argv, tmp, env)
    assert out.strip().startswith("photo.png: ")  # the exported runtime reads the photo
