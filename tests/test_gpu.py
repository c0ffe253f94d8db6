"""
The whole path on CUDA (marked ``gpu``: skipped where torch sees no GPU): a few training iterations of the
R50 and the digits_cpu configs, evaluation, predict, read, export, and the exported ONNX model on
onnxruntime's CUDA provider where it is installed.
"""

import os
import subprocess
import sys

import pytest
import torch

from digit_detectron import DigitReader

from conftest import tiny_model_opts, write_digit_dataset

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

CONFIGS = ["digits_cpu.yaml", "faster_rcnn_R_50_FPN_digits_scratch.yaml"]


def command(*args, root, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1", DIGITS_DATASET_ROOT=str(root))
    proc = subprocess.run(
        [sys.executable, "-m", "digit_detectron.command", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("config", CONFIGS)
def test_train_evaluate_predict_read_export_on_cuda(tmp_path, config):
    assert torch.cuda.is_available()
    root = write_digit_dataset(tmp_path / "digits", counts=(8, 4, 3))
    out = tmp_path / "train"
    opts = tiny_model_opts(out) + ["SOLVER.EPOCHS", "1", "DIGITS.PLOT_AT_END", "False", "MODEL.WEIGHTS", ""]
    log = command("train", "--config-file", config, "--device", "cuda", *opts, root=root, cwd=tmp_path)
    assert "cuda" in log
    bundle = out / "model_best.pth"
    assert bundle.is_file()
    command("eval", "--weights", bundle, "--device", "cuda", "OUTPUT_DIR", tmp_path / "eval", root=root, cwd=tmp_path)
    test_dir = os.path.join(root, "test")
    command("predict", "--weights", bundle, "--input", test_dir, "--output", tmp_path / "pred", "--device", "cuda",
            root=root, cwd=tmp_path)  # fmt: skip
    assert len((tmp_path / "pred" / "pred.csv").read_text().splitlines()) == 4
    out_read = command("read", test_dir, "--weights", bundle, "--device", "cuda", "--output", tmp_path / "read",
                       root=root, cwd=tmp_path)  # fmt: skip
    assert out_read.count("drawn:") == 3
    reader = DigitReader(str(bundle), device="cuda")
    assert next(reader.predictor.model.parameters()).is_cuda
    command("export", "--weights", bundle, "--format", "onnx", "--output", tmp_path / "export", "--device", "cuda",
            "--images", test_dir, root=root, cwd=tmp_path)  # fmt: skip
    onnx = DigitReader(str(tmp_path / "export" / "model.onnx"), device="cuda")
    image = os.path.join(test_dir, "13.png")
    assert onnx(image).number == reader(image).number
