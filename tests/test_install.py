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
    # The ready model travels in the wheel: read without --weights, from elsewhere.
    example = os.path.join(REPO_ROOT, "docs", "images", "example_396.png")
    out = run([*cmd, "read", example, "--output", "ready"], work, env)
    assert f"{example}: 396 " in out
    assert os.path.isfile(tmp / "site" / "digit_detectron" / "weights" / "digits_ready.onnx")


BLOCK_DETECTRON2 = "import sys; sys.modules['detectron2'] = None; "  # as if it were not installed


def test_without_detectron2_every_command_says_how_to_get_it(installed):
    tmp, env, work = installed
    code = BLOCK_DETECTRON2 + "from digit_detectron.command import console_main; sys.argv[0] = 'x'; console_main()"
    for sub in (["read", "photo.png"], ["train"], ["predict", "--input", "x"], ["export"]):
        proc = subprocess.run([sys.executable, "-c", code, *sub], capture_output=True, text=True, cwd=work, env=env)
        assert proc.returncode == 2, (sub, proc.stderr[-2000:])
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and errors[0].startswith("error: detectron2 is not installed"), proc.stderr[-2000:]
        assert "digit-detectron setup-detectron2" in errors[0] and "Traceback" not in proc.stderr
    api = BLOCK_DETECTRON2 + "from digit_detectron import DigitReader"
    proc = subprocess.run([sys.executable, "-c", api], capture_output=True, text=True, cwd=work, env=env)
    assert proc.returncode == 1 and "ImportError" in proc.stderr and "setup-detectron2" in proc.stderr


def test_setup_detectron2_refuses_a_wheel_that_is_not_the_pinned_one(installed, tmp_path):
    tmp, env, work = installed
    fake = tmp_path / "sal_detectron2-0.7.2-cp310-none-any.whl"
    fake.write_bytes(b"PK not the wheel")
    code = BLOCK_DETECTRON2 + "from digit_detectron.command import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "setup-detectron2", "--wheel", str(fake)],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"error: {fake}: SHA-256 ") and "is not the pinned" in proc.stderr


def test_setup_detectron2_installs_a_package_pip_lists_and_uninstalls(installed, tmp_path):
    """In a fresh venv: the pinned wheel (downloaded by pip from the package index), checked, repacked and
    installed; pip lists it, its files hold no compiled _C, and pip uninstall removes it."""
    from digit_detectron.tools import setup_detectron2 as setup

    tmp, env, work = installed
    wheel_dir = tmp_path / "wheel"
    wheel_dir.mkdir()
    try:
        wheel = setup.download_wheel(str(wheel_dir))
    except setup.SetupError as e:
        pytest.skip(f"no package index reachable: {e}")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    run([python, "-m", "digit_detectron.tools.setup_detectron2", "--wheel", wheel], work, env)
    listed = run([python, "-m", "pip", "list", "--disable-pip-version-check"], work, env)
    assert "sal-detectron2" in listed and "0.7.2" in listed
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], work, env).strip()
    assert os.path.isfile(os.path.join(site, "detectron2", "modeling", "__init__.py"))
    assert not [n for n in os.listdir(os.path.join(site, "detectron2")) if n.startswith("_C")]
    with open(os.path.join(site, "sal_detectron2-0.7.2.dist-info", "METADATA")) as f:
        assert "Requires-Dist: numpy" not in f.read()
    run([python, "-m", "pip", "uninstall", "-y", "sal-detectron2"], work, env)
    assert not os.path.exists(os.path.join(site, "detectron2"))
