"""dataset_prep.locking: one build of a pair at a time, across threads and processes."""

import os
import subprocess
import sys
import threading
import time

import pytest

from dataset_prep import food_kitchen as fk
from dataset_prep.locking import fcntl, lock_path, pair_lock

pytestmark = pytest.mark.skipif(fcntl is None, reason="no flock on this platform")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _in_thread(target):
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_a_second_holder_waits_for_the_first(tmp_path):
    events, held = [], threading.Event()

    def first():
        with pair_lock(str(tmp_path), "pair"):
            events.append("first in")
            held.set()
            time.sleep(0.3)
            events.append("first out")

    def second():
        held.wait(5)
        with pair_lock(str(tmp_path), "pair"):
            events.append("second in")

    threads = [_in_thread(first), _in_thread(second)]
    for thread in threads:
        thread.join(10)
    assert events == ["first in", "first out", "second in"]
    assert os.path.isfile(lock_path(str(tmp_path), "pair"))


def test_the_lock_is_reentrant_in_a_thread_and_per_pair(tmp_path):
    done = []

    def nested():
        with pair_lock(str(tmp_path), "pair"):
            with pair_lock(str(tmp_path), "pair"):  # ensure_dataset -> build -> convert
                with pair_lock(str(tmp_path), "other"):
                    done.append(True)
        with pair_lock(str(tmp_path), "pair"):  # released: taken again
            done.append(True)

    thread = _in_thread(nested)
    thread.join(10)
    assert not thread.is_alive() and done == [True, True]


def test_another_process_waits_for_the_lock(tmp_path):
    script = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); "
        "from dataset_prep.locking import pair_lock\n"
        "print('ready', flush=True)\n"
        "with pair_lock(sys.argv[2], 'pair'):\n"
        "    print(time.time(), flush=True)\n"
    )
    with pair_lock(str(tmp_path), "pair"):
        child = subprocess.Popen([sys.executable, "-c", script, REPO, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"  # about to take the lock
        time.sleep(0.5)
        released = time.time()
    entered = float(child.communicate(timeout=60)[0])
    assert entered >= released


def test_concurrent_ensure_dataset_builds_a_pair_once(tmp_path, monkeypatch):
    builds = []

    def slow_build(**kwargs):
        time.sleep(0.3)
        builds.append(kwargs["name"])

    monkeypatch.setattr(fk, "build", slow_build)
    monkeypatch.setattr(fk, "is_built", lambda name, out_dir, recipe=None: name in builds)
    threads = [_in_thread(lambda: fk.ensure_dataset("food_kitchen_demo", out_dir=str(tmp_path))) for _ in range(3)]
    for thread in threads:
        thread.join(10)
    assert builds == ["food_kitchen_demo"]  # without the lock every caller would build it
