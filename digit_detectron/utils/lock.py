"""One job per output folder (a training per OUTPUT_DIR, a prediction per --output): a lock file naming its owner,
taken over by a later run once the owner is gone."""

import atexit
import contextlib
import json
import logging
import os
import socket
import time

from .errors import DigitError
from .io import process_alive

logger = logging.getLogger(__name__)

LOCK_NAME = ".training.lock"  # the training's; another job's is .<job>.lock


class LockedError(DigitError):
    """Another live process holds the lock."""


class OutputLock:
    """``OUTPUT_DIR/.training.lock`` (``.<job>.lock``): pid, host and start time of the job writing into the folder."""

    def __init__(self, output_dir, job="training"):
        self.output_dir = output_dir
        self.job = job
        self.path = os.path.join(output_dir, LOCK_NAME if job == "training" else f".{job}.lock")
        self._held = False

    def owner(self):
        """The lock file's content, or None when there is none (or it cannot be parsed)."""
        try:
            with open(self.path) as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def acquire(self):
        """Take the lock (released at exit); LockedError when a live job on this host holds it."""
        os.makedirs(self.output_dir, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.owner()
                if owner and (owner.get("host") != me["host"] or process_alive(int(owner.get("pid", -1)))):
                    folder = "OUTPUT_DIR" if self.job == "training" else "output folder"
                    raise LockedError(
                        f"{self.output_dir}: another {self.job} (pid {owner.get('pid')} on {owner.get('host')}, "
                        f"started {owner.get('started')}) writes into this {folder}; wait for it, stop it, "
                        f"or choose another {folder} (a lock left by a dead process is {self.path})"
                    ) from None
                logger.warning(f"{self.path}: taking over the lock of a {self.job} that is gone ({owner})")
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._held = True
            atexit.register(self.release)
            return self
        raise LockedError(f"{self.path}: could not take the lock (other processes keep taking it)")

    def release(self):
        if self._held and (self.owner() or {}).get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
        self._held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
