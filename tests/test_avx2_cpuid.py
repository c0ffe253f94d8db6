"""
benchmarks/avx2_cpu/run_as_avx2.sh (the CPUID mask that lets one CPU be measured with an AVX2-only CPU's
kernels, ONNX Runtime included): under it PyTorch, oneDNN and NumPy choose AVX2 and no AVX-512, bf16 is
off, and a real segmentation fault still ends the program the way it would without the mask (through a
handler the program installed, here Python's faulthandler). Skipped where the CPU cannot trap CPUID
(no "cpuid_fault" in /proc/cpuinfo) or no C compiler is installed: the benchmark then says it ran
without the mask.
"""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

WRAPPER = os.path.join(REPO_ROOT, "benchmarks", "avx2_cpu", "run_as_avx2.sh")


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("cpuid_fault" not in _cpu_flags(), reason="this CPU cannot trap CPUID"),
    pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to build the mask"),
]

PROBE = r"""
import json, torch
from numpy._core._multiarray_umath import __cpu_features__ as numpy_cpu
from digit_detectron.modeling.speed import use_backbone_bf16
torch.backends.mkldnn.verbose(0)
print(json.dumps({
    "aten": torch.backends.cpu.get_cpu_capability(),
    "numpy_avx2": numpy_cpu["AVX2"],
    "numpy_avx512f": numpy_cpu["AVX512F"],
    "bf16": use_backbone_bf16("auto"),
}))
"""


def _run(args, tmp_path, **env):
    return subprocess.run(
        [WRAPPER, *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=dict(os.environ, AVX2_CPUID_LIB=str(tmp_path / "avx2_cpuid.so"), **env),
        timeout=120,
    )


@pytest.fixture(autouse=True)
def trap_allowed(tmp_path):
    """Skip where cpuid_fault is listed but the kernel refuses the trap (seccomp): the mask then exits 3."""
    proc = _run([sys.executable, "-c", "pass"], tmp_path)
    if proc.returncode == 3 and "cannot trap CPUID" in proc.stderr:
        pytest.skip("the kernel refuses to trap CPUID here")
    assert proc.returncode == 0, proc.stderr


def test_every_library_sees_avx2_and_no_avx512(tmp_path):
    import json

    proc = _run([sys.executable, "-c", PROBE], tmp_path)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"aten": "AVX2", "numpy_avx2": True, "numpy_avx512f": False, "bf16": False}
    onednn = _run(
        [
            sys.executable,
            "-c",
            "import torch\nx = torch.randn(4, 32, 32, 32)\nc = torch.nn.Conv2d(32, 32, 3)\nwith torch.no_grad(): c(x)",
        ],
        tmp_path,
        ONEDNN_VERBOSE="1",
    )
    assert onednn.returncode == 0, onednn.stderr
    isa = [line for line in onednn.stdout.splitlines() if "isa:" in line]
    if isa:  # oneDNN printed its ISA (it does when it runs the convolution)
        assert "AVX2" in isa[0] and "512" not in isa[0] and "AMX" not in isa[0]


def test_a_real_segfault_still_reaches_the_programs_handler(tmp_path):
    crash = "import ctypes\nctypes.string_at(0)"
    proc = _run([sys.executable, "-X", "faulthandler", "-c", crash], tmp_path)
    assert proc.returncode == -11
    assert "Segmentation fault" in proc.stderr  # faulthandler's report: the fault was passed on
    bare = _run([sys.executable, "-c", crash], tmp_path)
    assert bare.returncode == -11
