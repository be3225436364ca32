"""One build of a pair at a time: an exclusive lock per (output folder, pair name).

Two processes that need the same missing pair (two ``run_sieoug.py`` started together on a
fresh checkout, or a build started by hand while a run builds it) would otherwise both build
it and swap their folders over each other while the other may be reading them. The lock is
an ``flock`` on ``<out_dir>/.<name>.lock`` (POSIX; where ``fcntl`` does not exist, e.g. on
Windows, nothing is locked). It is re-entrant within a thread, so :func:`ensure_dataset`
can hold it around its check and the build it calls, which takes it too.
"""

import contextlib
import os
import threading

try:
    import fcntl
except ImportError:  # not POSIX: builds are not serialised
    fcntl = None

_held = threading.local()  # lock path -> depth, per thread


def lock_path(out_dir, name):
    """The lock file of pair ``name`` in ``out_dir``."""
    return os.path.join(out_dir, f".{name}.lock")


@contextlib.contextmanager
def pair_lock(out_dir, name):
    """Hold the exclusive build lock of pair ``name`` in ``out_dir`` (waits for another holder)."""
    path = os.path.abspath(lock_path(out_dir, name))
    depth = getattr(_held, "depth", None)
    if depth is None:
        depth = _held.depth = {}
    if depth.get(path):  # this thread holds it already
        depth[path] += 1
        try:
            yield
        finally:
            depth[path] -= 1
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        depth[path] = 1
        try:
            yield
        finally:
            depth[path] = 0
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)
