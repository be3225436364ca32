"""A harness killed outright (SIGKILL) leaves no worker process training behind."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, SYNTHETIC_YAML

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _alive(pid):
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append((int(entry), cmdline))
    return found


def _wait_for(condition, timeout, every=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    return condition()


def test_sigkill_of_the_harness_ends_its_training_worker(synthetic_dir, tmp_path):
    # a real harness on a real (slow: 500 epochs) run; its worker must not outlive it
    harness = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sieoug_recbole.benchmark",
            "run",
            "--models",
            "LightGCN",
            "--task",
            f"syn:0.5={SYNTHETIC_YAML}",
            "--seeds",
            "1",
            "--epochs",
            "500",
            "--set",
            f"data_path={synthetic_dir}{os.sep}",
            "--set",
            "stopping_step=1000",
            "--results",
            str(tmp_path / "r.jsonl"),
            "--no-progress",
        ],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        workers = _wait_for(
            lambda: [pid for pid, cmd in _children(harness.pid) if "sieoug_recbole.benchmark one" in cmd], timeout=120
        )
        assert workers, "the harness started no worker"
        [worker] = workers
        # let the worker get into training (past its imports and the tie to its parent)
        log = tmp_path / "r_runs"
        assert _wait_for(lambda: any(log.glob("*/tensorboard")), timeout=120), "worker never trained"
        assert _alive(worker)
        harness.send_signal(signal.SIGKILL)
        harness.wait(timeout=10)
        assert _wait_for(lambda: not _alive(worker), timeout=5), "the worker outlived its harness"
        assert not (tmp_path / "r.jsonl").exists()  # nothing was recorded for the killed run
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait()
        for pid in locals().get("workers") or []:
            if _alive(pid):  # the test failed: do not leave it training
                os.kill(pid, signal.SIGKILL)


# lifeline.py alone (not the package, whose import loads torch): these processes start fast
LOAD = textwrap.dedent(f"""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "lifeline", {os.path.join(REPO, "sieoug_recbole", "benchmark", "lifeline.py")!r})
    lifeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lifeline)
""")
# a parent that starts a tied child (printing its pid) and then waits: the test kills the parent
PARENT = LOAD + textwrap.dedent("""
    import os, subprocess, sys
    parent_env = lifeline.parent_env
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=dict(os.environ, **parent_env()))
    print(child.pid, flush=True)
    child.wait()
""")
CHILD = LOAD + textwrap.dedent("""
    import sys, time
    if sys.argv[-1] == "watchdog":
        lifeline._kernel_tie = lambda: False
    print(lifeline.die_with_parent(every_s=0.2), flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("how", ["prctl", "watchdog"])
def test_a_tied_child_ends_with_its_parent(how):
    child_code = CHILD.replace("sys.argv[-1]", repr(how))
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, child_code],
        env=dict(os.environ, PYTHONPATH=REPO),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == how  # the child tied itself this way
        assert _alive(child)
        parent.kill()
        parent.wait(timeout=10)
        assert _wait_for(lambda: not _alive(child), timeout=5)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_a_child_whose_parent_is_already_gone_exits_at_once():
    code = LOAD + "lifeline.die_with_parent(parent_pid=1 if __import__('os').getppid() != 1 else 2); print('alive')"
    done = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3 and "alive" not in done.stdout
    assert "the process that started this worker is gone" in done.stderr


def test_a_worker_started_by_hand_is_left_alone(monkeypatch):
    from sieoug_recbole.benchmark import lifeline

    monkeypatch.delenv(lifeline.PARENT_ENV, raising=False)
    assert lifeline.die_with_parent() is None
