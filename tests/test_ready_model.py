"""
The ready model shipped in the package (digit_detectron/weights/, trained by `make model`): it is small,
loads with weights_only=True, and reads the README's example image to the number the README states,
through DigitReader(), its ONNX export and `digit-detectron read` without --weights.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from digit_detectron import DigitReader
from digit_detectron.export.runtime import ExportedModel, load_image
from digit_detectron.inference.reader_api import READY_MODEL, READY_MODEL_ONNX

from conftest import REPO_ROOT

README = os.path.join(REPO_ROOT, "README.md")


def readme_example():
    """(image path, number) of the README's `digit-detectron read docs/images/...  # prints N` line."""
    text = open(README, encoding="utf-8").read()
    match = re.search(r"^digit-detectron read (docs/images/\S+)\s+# prints (\d+)", text, re.M)
    assert match, "the README's ready-model example line"
    return os.path.join(REPO_ROOT, match.group(1)), int(match.group(2))


def test_the_ready_model_is_small_and_loads_as_plain_tensors():
    sizes = [os.path.getsize(p) for p in (READY_MODEL, READY_MODEL_ONNX)]
    assert sum(sizes) <= 30 * 2**20
    data = torch.load(READY_MODEL, map_location="cpu", weights_only=True)
    assert set(data) == {"model", "digit_detectron"}
    assert all(v.dtype == torch.float16 for v in data["model"].values() if torch.is_floating_point(v))
    with open(os.path.splitext(READY_MODEL_ONNX)[0] + ".json") as f:
        meta = json.load(f)
    assert meta["reader"]["min_top_score"] > 0.5  # the gate make model tuned on walls without digits
    assert meta["source_weights"] == os.path.basename(READY_MODEL)  # no path of the machine that made it


def test_the_ready_model_reads_the_readme_example():
    image, number = readme_example()
    result = DigitReader(device="cpu")(image)
    assert result.number == number
    exported = ExportedModel(READY_MODEL_ONNX)
    assert exported.read(load_image(image))[0] == number
    assert DigitReader(READY_MODEL_ONNX)(image).number == number


def test_the_ready_model_reads_nothing_on_a_plain_wall():
    wall = np.full((60, 150, 3), (180, 170, 150), np.uint8)  # a painted wall, no digit
    wall = (wall + np.random.default_rng(0).normal(0, 4, wall.shape)).clip(0, 255).astype(np.uint8)
    assert DigitReader(device="cpu")(wall, channels="RGB").number == -1


@pytest.mark.slow
def test_read_without_weights_uses_the_ready_model(tmp_path):
    image, number = readme_example()
    proc = subprocess.run(
        [sys.executable, "-m", "digit_detectron.command", "read", image, "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"{image}: {number} ")
