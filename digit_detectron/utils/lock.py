"""One training per OUTPUT_DIR: a lock file naming its owner, taken over by a later run once the owner is gone."""

import atexit
import contextlib
import json
import logging
import os
import socket
import time

from .errors import DigitError

logger = logging.getLogger(__name__)

LOCK_NAME = ".training.lock"


class LockedError(DigitError):
    """Another live process holds the lock."""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutputLock:
    """``OUTPUT_DIR/.training.lock``: pid, host and start time of the training that writes into OUTPUT_DIR."""

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_NAME)
        self._held = False

    def owner(self):
        """The lock file's content, or None when there is none (or it cannot be parsed)."""
        try:
            with open(self.path) as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def acquire(self):
        """Take the lock (released at exit); LockedError when a live training on this host holds it."""
        os.makedirs(self.output_dir, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.owner()
                if owner and (owner.get("host") != me["host"] or _alive(int(owner.get("pid", -1)))):
                    raise LockedError(
                        f"{self.output_dir}: another training (pid {owner.get('pid')} on {owner.get('host')}, "
                        f"started {owner.get('started')}) writes into this OUTPUT_DIR; wait for it, stop it, "
                        f"or choose another OUTPUT_DIR (a lock left by a dead process is {self.path})"
                    ) from None
                logger.warning(f"{self.path}: taking over the lock of a training that is gone ({owner})")
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
