"""Atomic file writes: a reader never sees a half-written file, whatever kills the writer."""

import contextlib
import hashlib
import json
import os
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """
    Open a temporary file beside ``path``; on a clean exit flush, fsync and rename it onto ``path``.
    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and not e.filename and e.errno:  # e.g. disk full: say which file
            raise OSError(e.errno, f"{path}: {e.strerror}; the previous file, if any, is kept") from e
        raise


def atomic_write_json(path, obj, **kwargs):
    """Write ``obj`` as JSON to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, **kwargs)


def ensure_writable_dir(path):
    """Create folder ``path`` if needed and check that files can be written into it; OSError naming it otherwise."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{path}: output path is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OSError(e.errno, f"{path}: output folder is not writable ({e.strerror})") from None
    return path


def temporary_beside(path):
    """
    ``(fd, name)`` of a new temporary file beside ``path``, named ``.<file>.<pid>-<random>.tmp``: the
    writer's pid in the name lets ``remove_stale_temporaries`` tell a live writer's file from a dead one's.
    """
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    return tempfile.mkstemp(dir=directory, prefix=f".{name}.{os.getpid()}-", suffix=".tmp")


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path):
    """
    Remove the temporary files that killed writes of ``path`` left beside it (``temporary_beside``):
    those whose writer process is gone, or that carry no pid. A live writer's files are kept, so two runs
    writing into one folder never delete each other's staged files. Returns the files removed.
    """
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    prefix = "." + name + "."
    stale = []
    for f in os.listdir(directory) if os.path.isdir(directory) else []:
        if not (f.startswith(prefix) and f.endswith(".tmp")):
            continue
        pid, sep, _ = f[len(prefix) :].partition("-")
        if sep and pid.isdigit() and process_alive(int(pid)):
            continue
        stale.append(os.path.join(directory, f))
    for f in stale:
        with contextlib.suppress(FileNotFoundError):
            os.remove(f)
    return stale


def sha256_of(path):
    """The SHA-256 of a file's bytes, as hex (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
