"""The thread policy (utils/threads.py): choices for given cores / env / flags, and where tools apply it."""

import os
import subprocess
import sys

import pytest

from digit_detectron.utils.cli import requested_threads
from digit_detectron.utils.threads import ThreadPolicy, choose_thread_policy, data_loader_workers, prepare_openmp

from conftest import REPO_ROOT


@pytest.mark.parametrize("cores, threads, spare", [(1, 1, 0), (2, 2, 0), (4, 3, 1), (8, 6, 2), (16, 12, 4)])
def test_threads_follow_the_usable_cores(cores, threads, spare):
    policy = choose_thread_policy(cores, env={})
    assert (policy.threads, policy.source, policy.spare_cores) == (threads, "cores", spare)


@pytest.mark.parametrize("cores, processes, threads, spare", [(2, 2, 1, 0), (1, 2, 1, 0), (16, 2, 6, 2), (16, 4, 3, 1)])
def test_processes_of_one_training_share_the_cores(cores, processes, threads, spare):
    policy = choose_thread_policy(cores, env={}, processes=processes)
    assert (policy.threads, policy.spare_cores) == (threads, spare)
    # An explicit count is each process's own.
    assert choose_thread_policy(cores, requested=2, env={}, processes=processes).threads == 2


def test_flag_beats_env_beats_cores():
    assert choose_thread_policy(2, requested=1, env={"OMP_NUM_THREADS": "3"}).threads == 1
    assert choose_thread_policy(2, requested=1, env={}).source == "--threads"
    policy = choose_thread_policy(8, env={"OMP_NUM_THREADS": "3"})
    assert (policy.threads, policy.source, policy.spare_cores) == (3, "OMP_NUM_THREADS", 5)
    assert choose_thread_policy(8, env={"OMP_NUM_THREADS": "4,2"}).threads == 4  # nested list: first level


@pytest.mark.parametrize(
    "requested, env, problem",
    [(0, {}, "--threads must be at least 1"), (None, {"OMP_NUM_THREADS": "many"}, "not a number"),
     (None, {"OMP_NUM_THREADS": "0"}, "at least 1")],
)  # fmt: skip
def test_bad_thread_counts_name_the_setting(requested, env, problem):
    with pytest.raises(ValueError, match=problem):
        choose_thread_policy(2, requested=requested, env=env)


def test_workers_get_the_cores_the_threads_leave():
    two_cores = ThreadPolicy(threads=2, cores=2, source="cores", wait="set")
    assert data_loader_workers(1, two_cores) == 0
    assert data_loader_workers(2, ThreadPolicy(12, 16, "cores", "set")) == 2
    assert data_loader_workers(8, ThreadPolicy(12, 16, "cores", "set")) == 4
    assert data_loader_workers(0, ThreadPolicy(1, 16, "--threads", "set")) == 0
    assert data_loader_workers(3, ThreadPolicy(2, 2, "torch", "off")) == 3  # policy off: as configured


def test_wait_policy_is_set_only_before_torch_and_never_over_the_user():
    env = {}
    assert prepare_openmp(env, torch_loaded=False) == "set" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert prepare_openmp(env, torch_loaded=False) == "kept OMP_WAIT_POLICY=ACTIVE"
    assert env["OMP_WAIT_POLICY"] == "ACTIVE"
    env = {"GOMP_SPINCOUNT": "1000"}
    assert prepare_openmp(env, torch_loaded=False).startswith("kept GOMP_SPINCOUNT") and "OMP_WAIT_POLICY" not in env
    env = {}
    assert prepare_openmp(env, torch_loaded=True) == "too late" and env == {}
    env = {"DIGITS_THREAD_POLICY": "torch"}
    assert prepare_openmp(env, torch_loaded=False) == "off" and "OMP_WAIT_POLICY" not in env


def test_requested_threads_reads_both_spellings():
    assert requested_threads(["--config-file", "a.yaml", "--threads", "3"]) == 3
    assert requested_threads(["--threads=1"]) == 1
    assert requested_threads(["--threads", "x"]) is None  # the tool's parser reports it
    assert requested_threads(["--config-file", "a.yaml"]) is None


def _python(code, **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(env_changes)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_importing_the_package_sets_the_wait_policy_before_torch_loads():
    code = "import os, digit_detectron, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _python(code).stdout.strip() == "PASSIVE"
    assert _python(code, OMP_WAIT_POLICY="ACTIVE").stdout.strip() == "ACTIVE"
    assert _python(code, DIGITS_THREAD_POLICY="torch").stdout.strip() == "None"
    late = "import os, torch, digit_detectron; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _python(late).stdout.strip() == "None"


@pytest.mark.slow
def test_every_tool_applies_the_policy_once_and_honours_threads():
    tool = os.path.join(REPO_ROOT, "tools", "plot_metrics.py")
    done = subprocess.run(
        [sys.executable, tool, "--threads", "1", "--help"], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert done.returncode == 0 and "--threads N" in done.stdout
    code = (
        "import sys, torch; from digit_detectron.utils.cli import run_tool\n"
        "run_tool(lambda argv: print('torch threads', torch.get_num_threads()), ['--threads', '1'])"
    )
    done = _python(code)
    assert "torch threads 1" in done.stdout
    assert done.stderr.count("threads: 1 torch thread(s)") == 1 and "(from --threads)" in done.stderr
    done = _python(code.replace("'--threads', '1'", ""), OMP_NUM_THREADS="1")
    assert "(from OMP_NUM_THREADS)" in done.stderr and "torch threads 1" in done.stdout
    bad = subprocess.run([sys.executable, tool, "--threads", "0", "x"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert bad.returncode == 2 and "error: --threads must be at least 1, got 0" in bad.stderr
