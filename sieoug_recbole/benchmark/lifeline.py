"""A worker process that ends with the process that started it.

The harness starts each run as a worker process (``python -m sieoug_recbole.benchmark one``).
When the harness is killed outright (SIGKILL, a crash of its node's scheduler), nothing of it
runs to end its workers, and a worker would go on training as an orphan. So the worker ties
itself to its parent as it starts, with :func:`die_with_parent`:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the worker as soon as its
  parent is gone, whatever the worker is doing (even deep in a torch op). The kernel counts the
  parent *thread* that started the worker, so the harness waits for each worker in the thread
  that started it (as :func:`sieoug_recbole.benchmark.runner.execute` does);
- elsewhere, a daemon thread that checks once a second whether the parent is still the parent
  (an orphan is handed to another process) and ends the worker if not.

The parent passes its pid in ``SIEOUG_BENCHMARK_PARENT_PID``; a worker whose parent died before
the tie was made sees another parent pid and exits at once.
"""

import ctypes
import os
import signal
import sys
import threading
import time

PARENT_ENV = "SIEOUG_BENCHMARK_PARENT_PID"
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
ORPHAN_EXIT_STATUS = 3


def parent_env():
    """The environment entry that tells a worker started from this process who its parent is."""
    return {PARENT_ENV: str(os.getpid())}


def _kernel_tie():
    """Ask Linux to SIGKILL this process when its parent dies; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _orphaned():
    sys.stderr.write("the process that started this worker is gone: exiting\n")
    sys.stderr.flush()
    os._exit(ORPHAN_EXIT_STATUS)


def _watch(parent_pid, every_s):
    while True:
        time.sleep(every_s)
        if os.getppid() != parent_pid:
            _orphaned()


def die_with_parent(parent_pid=None, every_s=1.0):
    """Tie this process to its parent (see the module's text). ``parent_pid``: the pid the
    parent announced (default: from ``SIEOUG_BENCHMARK_PARENT_PID``; nothing is done when neither
    is there, e.g. a worker started by hand). Returns how: "prctl", "watchdog" or None."""
    if parent_pid is None:
        text = os.environ.get(PARENT_ENV, "")
        if not text.isdigit():
            return None
        parent_pid = int(text)
    how = "prctl" if _kernel_tie() else "watchdog"
    if os.getppid() != parent_pid:  # the parent died before the tie was made
        _orphaned()
    if how == "watchdog":
        threading.Thread(target=_watch, args=(parent_pid, every_s), daemon=True, name="die-with-parent").start()
    return how
