"""
The thread policy every tool applies before torch starts its thread pools.

On a 2-core machine torch's default (one OpenMP thread per core, threads that spin while they
wait) collapses as soon as anything else runs: each of the hundreds of parallel regions of a forward
pass waits for a descheduled thread (benchmarks/speed.md measured 3-20x). The policy:

* **wait policy**: ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of spinning), set when the
  package is imported and torch is not yet (libgomp reads it once, when torch loads it); an
  ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` already in the environment is left alone;
* **threads**: ``--threads`` if given, else ``OMP_NUM_THREADS`` if set, else the cores this process
  may run on (``os.sched_getaffinity``) less a quarter of them kept for data-loader workers
  (2 cores: 2 threads, 4: 3, 16: 12); in a training of several processes on one machine
  (``--num-gpus N`` on CPU) each process takes its 1/N share of the cores (2 cores, 2 processes:
  1 thread each);
* **data-loader workers**: at most the cores the torch threads leave (``data_loader_workers``);
  each worker runs one torch thread (PyTorch sets that), so threads + workers <= cores.

``DIGITS_THREAD_POLICY=torch`` turns all of it off (torch's own defaults, as before the policy).
The choice is logged once per process.
"""

import logging
import os
import sys
from dataclasses import dataclass

__all__ = [
    "POLICY_ENV",
    "ThreadPolicy",
    "apply_thread_policy",
    "choose_thread_policy",
    "current_policy",
    "data_loader_workers",
    "prepare_openmp",
    "usable_cores",
]

POLICY_ENV = "DIGITS_THREAD_POLICY"
_WAIT_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_logger = logging.getLogger("digit_detectron")
_state = {"policy": None, "logged": None, "wait": None}


def policy_enabled(env=None):
    env = os.environ if env is None else env
    return env.get(POLICY_ENV, "").strip().lower() not in ("torch", "off", "0")


def usable_cores():
    """How many cores this process may run on (its CPU affinity; os.cpu_count() where that is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def prepare_openmp(env=None, torch_loaded=None):
    """
    Set ``OMP_WAIT_POLICY=PASSIVE`` in ``env`` (default os.environ) unless a wait setting is there
    already, the policy is off, or torch is loaded (then it is too late). Returns what was done,
    one of "set", "kept <KEY>=<value>", "off", "too late".
    """
    env = os.environ if env is None else env
    torch_loaded = ("torch" in sys.modules) if torch_loaded is None else torch_loaded
    if not policy_enabled(env):
        result = "off"
    else:
        present = [k for k in _WAIT_KEYS if env.get(k)]
        if present:
            result = f"kept {present[0]}={env[present[0]]}"
        elif torch_loaded:
            result = "too late"
        else:
            env["OMP_WAIT_POLICY"] = "PASSIVE"
            result = "set"
    if env is os.environ and _state["wait"] is None:
        _state["wait"] = result
    return result


@dataclass(frozen=True)
class ThreadPolicy:
    threads: int  # torch intra-op threads
    cores: int  # cores the process may use
    source: str  # "--threads", "OMP_NUM_THREADS" or "cores"
    wait: str  # what prepare_openmp did

    @property
    def spare_cores(self):
        """Cores the torch threads leave for data-loader workers."""
        return max(0, self.cores - self.threads)

    def describe(self):
        wait = {
            "set": "OMP_WAIT_POLICY=PASSIVE (waiting threads sleep)",
            "too late": "OMP_WAIT_POLICY not set (torch was imported before digit_detectron)",
            "off": "torch's defaults",
        }.get(self.wait, self.wait.replace("kept ", ""))
        return (
            f"threads: {self.threads} torch thread(s) on {self.cores} usable core(s) (from {self.source}); {wait}; "
            f"data-loader workers <= {self.spare_cores}"
        )


def choose_thread_policy(cores, requested=None, env=None, wait="set", processes=1):
    """
    The policy for ``cores`` usable cores: ``requested`` threads (``--threads``) if given, else
    ``OMP_NUM_THREADS`` from ``env`` if it is a positive integer, else ``cores - cores // 4``.
    ``processes`` > 1 (processes of one training on these cores) gives each its share:
    ``cores // processes`` cores (at least 1), whose threads are chosen as above.
    Raises ValueError for a requested count below 1 or a malformed OMP_NUM_THREADS.
    """
    env = os.environ if env is None else env
    cores = max(1, cores // max(1, int(processes)))
    if requested is not None:
        if int(requested) < 1:
            raise ValueError(f"--threads must be at least 1, got {requested}")
        return ThreadPolicy(int(requested), cores, "--threads", wait)
    value = env.get("OMP_NUM_THREADS", "").strip()
    if value:
        try:
            threads = int(value.split(",")[0])  # OpenMP allows a list for nested levels
        except ValueError:
            raise ValueError(f"OMP_NUM_THREADS={value!r} is not a number of threads") from None
        if threads < 1:
            raise ValueError(f"OMP_NUM_THREADS={value!r}: need at least 1 thread")
        return ThreadPolicy(threads, cores, "OMP_NUM_THREADS", wait)
    return ThreadPolicy(max(1, cores - cores // 4), cores, "cores", wait)


def apply_thread_policy(requested=None, log=True, processes=1):
    """
    Choose the policy for this process and set torch's intra-op threads to it (unless
    ``DIGITS_THREAD_POLICY=torch``, then only ``--threads`` is applied). ``processes``: how many
    processes of one job share this machine's cores (see choose_thread_policy). Logs it once per
    process (on stderr before logging is set up). Returns the ThreadPolicy.
    """
    import torch

    wait = _state["wait"] or prepare_openmp()
    if policy_enabled():
        policy = choose_thread_policy(usable_cores(), requested, wait=wait, processes=processes)
    else:
        threads = int(requested) if requested else torch.get_num_threads()
        policy = ThreadPolicy(threads, usable_cores(), "--threads" if requested else "torch", "off")
    if torch.get_num_threads() != policy.threads:
        torch.set_num_threads(policy.threads)
    _state["policy"] = policy
    if log and _state["logged"] != policy:
        _state["logged"] = policy
        line = policy.describe()
        if _logger.handlers or logging.getLogger().handlers:
            _logger.info(line)
        else:
            print(line, file=sys.stderr, flush=True)
    return policy


def current_policy():
    """The policy applied in this process, or None."""
    return _state["policy"]


def data_loader_workers(requested, policy=None):
    """
    The data-loader workers to start for ``requested`` (DATALOADER.NUM_WORKERS): at most the cores
    the torch threads leave. With the policy off, ``requested`` as it is.
    """
    policy = policy or current_policy()
    if policy is None or policy.wait == "off":
        return requested
    workers = min(requested, policy.spare_cores)
    if workers != requested:
        _logger.info(
            f"DATALOADER.NUM_WORKERS {requested} -> {workers}: {policy.threads} torch thread(s) use "
            f"{policy.threads} of {policy.cores} core(s) (loading in the main process costs ~1 ms per image)"
        )
    return workers
