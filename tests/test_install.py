"""
A non-editable install works away from the source checkout: the wheel built from this repository, installed
into a folder of its own (its dependencies are this environment's), runs train (two iterations), predict,
read and export from another directory, with the configs named as shipped.
"""

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, tiny_model_opts, write_digit_dataset

pytestmark = pytest.mark.slow


def run(argv, cwd, env):
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert proc.returncode == 0, (argv, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), REPO_ROOT], tmp, dict(os.environ))
    (wheel,) = os.listdir(tmp / "dist")
    run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(tmp / "dist" / wheel)], tmp, dict(os.environ))
    env = dict(os.environ, PYTHONPATH=str(tmp / "site"), PYTHONUNBUFFERED="1")
    work = tmp / "elsewhere"
    work.mkdir()
    return tmp, env, work


def test_the_installed_package_is_the_one_that_runs(installed):
    tmp, env, work = installed
    code = "import digit_detectron; print('FILE', digit_detectron.__file__)"
    where = run([sys.executable, "-c", code], work, env)
    assert f"FILE {tmp / 'site' / 'digit_detectron' / '__init__.py'}" in where
    assert os.path.isfile(tmp / "site" / "digit_detectron" / "configs" / "digits_cpu.yaml")


def test_train_predict_read_export_run_outside_the_checkout(installed):
    tmp, env, work = installed
    root = write_digit_dataset(tmp / "digits", counts=(4, 2, 2))
    env = dict(env, DIGITS_DATASET_ROOT=root)
    cmd = [sys.executable, "-m", "digit_detectron.command"]
    opts = tiny_model_opts(work / "unused")[2:] + ["SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0"]
    opts += ["DIGITS.PLOT_AT_END", "False", "OUTPUT_DIR", "out"]
    run([*cmd, "train", "--config-file", "digits_cpu.yaml", "--device", "cpu", *opts], work, env)
    bundle = str(work / "out" / "model_final.pth")
    test = os.path.join(root, "test")
    run([*cmd, "predict", "--weights", bundle, "--input", test, "--output", "pred"], work, env)
    assert len((work / "pred" / "pred.csv").read_text().splitlines()) == 3
    out = run([*cmd, "read", test, "--weights", bundle], work, env)
    assert out.count("drawn:") == 2
    run([*cmd, "export", "--weights", bundle, "--format", "onnx", "--output", "export", "--images", test], work, env)
    assert (work / "export" / "digit_runtime.py").is_file()
