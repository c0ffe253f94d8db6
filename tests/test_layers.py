"""The import contract (tools/check_layers.py, run by make lint) holds, and it catches a breach."""

import os
import shutil
import subprocess
import sys

from conftest import REPO_ROOT

CHECKER = os.path.join(REPO_ROOT, "tools", "check_layers.py")


def run_checker(package_dir):
    return subprocess.run([sys.executable, CHECKER, str(package_dir)], capture_output=True, text=True, timeout=60)


def test_the_package_follows_its_layers():
    proc = run_checker(os.path.join(REPO_ROOT, "digit_detectron"))
    assert proc.returncode == 0, proc.stdout
    assert "first-party imports follow utils < data < modeling" in proc.stdout


def test_an_upward_or_function_local_import_is_a_breach(tmp_path):
    package = tmp_path / "digit_detectron"
    shutil.copytree(os.path.join(REPO_ROOT, "digit_detectron"), package, ignore=shutil.ignore_patterns("__pycache__"))
    with open(package / "data" / "image_io.py", "a") as f:
        f.write("\nfrom ..inference import predictor  # noqa\n\n\ndef late():\n    from ..utils import io  # noqa\n")
    with open(package / "evaluation" / "report.py", "a") as f:
        f.write("\n\ndef allowed():\n    from ..utils import io  # local import: a test of the mark\n")
    proc = run_checker(package)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert any(
        line.startswith("digit_detectron/data/image_io.py:")
        and "layer 'data' imports 'digit_detectron.inference' of the higher layer 'inference'" in line
        for line in lines
    ), lines
    assert any("image_io.py" in line and "first-party import inside a function" in line for line in lines), lines
    assert not any("report.py" in line for line in lines), lines
    assert lines[-1].startswith("import contract: 2 breach(es)")
