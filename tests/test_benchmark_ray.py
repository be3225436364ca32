"""``run --backend ray``: on a two-node Ray cluster started here on loopback (one CPU a node).

The same tiny grid as tests/test_benchmark.py (synthetic pair, 2 epochs): the Ray backend gives
the local backend's metrics, records the node of each run, retries a run whose Ray worker was
killed, skips finished runs on a rerun, and turns bad input into one error line (exit 2) with
no record written.
"""

import json
import os
import signal
import socket
import sys
import time

import pytest

# every Ray address of this test on loopback: Ray otherwise binds the machine's own address
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray")

from conftest import SYNTHETIC_YAML  # noqa: E402
from test_benchmark_lifeline import _alive, _wait_for  # noqa: E402

from sieoug_recbole.benchmark.cli import main  # noqa: E402

TASK = f"syn:0.5={SYNTHETIC_YAML}"


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    started = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    started.add_node(num_cpus=1)
    started.wait_for_nodes()
    assert started.address.startswith("127.0.0.1:")
    yield started
    if ray.is_initialized():
        ray.shutdown()
    started.shutdown()


def _lines(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _args(synthetic_dir, results, models="Pop,LightGCN", seeds="1,2", epochs="2"):
    return [
        "run",
        "--models",
        models,
        "--task",
        TASK,
        "--seeds",
        seeds,
        "--epochs",
        epochs,
        "--set",
        f"data_path={synthetic_dir}{os.sep}",
        "--set",
        "embedding_size=16",
        "--set",
        "learning_rate=0.01",
        "--results",
        str(results),
        "--no-progress",
    ]


def _ray(cluster, *more):
    return ["--backend", "ray", "--address", cluster.address, *more]


def _node_ids():
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def test_ray_grid_matches_the_local_backend_and_resumes(cluster, synthetic_dir, tmp_path, capsys):
    local = tmp_path / "local.jsonl"
    assert main(_args(synthetic_dir, local) + ["--in-process"]) == 0
    remote = tmp_path / "ray.jsonl"
    assert main(_args(synthetic_dir, remote) + _ray(cluster)) == 0
    records = _lines(remote)
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    by_run = {(r["model"], r["seed"]): r for r in _lines(local)}
    for r in records:
        twin = by_run[(r["model"], r["seed"])]
        assert r["metrics"] == twin["metrics"] and r["valid_history"] == twin["valid_history"]
        assert r["overrides_hash"] == twin["overrides_hash"]
        assert r["attempts"] == 1 and "retried_after" not in r
        assert r["node"]["ip"] == "127.0.0.1" and r["node"]["hostname"] == socket.gethostname()
        assert sorted(os.listdir(r["run_dir"])) == ["run.log"]  # the worker's log, as locally
    # each record names a node of the cluster (which one is Ray's choice)
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        assert {r["node"]["id"] for r in records} <= _node_ids()
    finally:
        ray.shutdown()
    capsys.readouterr()
    # a rerun skips the finished runs: nothing is appended
    before = remote.read_text()
    assert main(_args(synthetic_dir, remote) + _ray(cluster)) == 0
    assert remote.read_text() == before
    assert "4 already done" in capsys.readouterr().out


def test_a_run_whose_ray_worker_is_killed_is_retried(cluster, synthetic_dir, tmp_path):
    # kill the Ray worker of the run while its training process (child of that worker) trains
    import threading

    results = tmp_path / "retry.jsonl"
    killed = {}

    def killer():
        def training():
            for pid, cmd in _all_processes():
                if "sieoug_recbole.benchmark one" in cmd and str(tmp_path) in cmd:
                    return pid
            return None

        worker = _wait_for(training, timeout=120)
        if worker:
            parent = _parent(worker)
            killed.update(ray_worker=parent, training=worker)
            os.kill(parent, signal.SIGKILL)

    thread = threading.Thread(target=killer)
    thread.start()
    code = main(_args(synthetic_dir, results, models="LightGCN", seeds="1", epochs="40") + _ray(cluster))
    thread.join()
    assert killed, "no training process was seen"
    assert not _alive(killed["training"])  # it died with its Ray worker
    [record] = _lines(results)
    assert code == 0 and record["status"] == "ok"
    assert record["attempts"] == 2
    [reason] = record["retried_after"]
    assert reason.startswith("attempt 1: ") and "Error" in reason


def _all_processes():
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    yield int(entry), f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue


def _parent(pid):
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_retries_are_bounded(cluster, synthetic_dir, tmp_path, monkeypatch):
    # a task that always loses its worker: tried 1 + max_retries times, then recorded as failed
    from ray import cloudpickle

    from sieoug_recbole.benchmark import ray_backend

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    monkeypatch.setattr(ray_backend, "run_on_node", _die)
    results = tmp_path / "bounded.jsonl"
    assert main(_args(synthetic_dir, results, models="Pop", seeds="1") + _ray(cluster, "--max-retries", "1")) == 1
    [record] = _lines(results)
    assert record["status"] == "failed" and record["attempts"] == 2
    assert len(record["retried_after"]) == 2 and "died 2 time(s)" in record["error"]


def _die(*args):
    os.kill(os.getpid(), signal.SIGKILL)  # the Ray worker process ends: Ray reports a dead worker


@pytest.mark.parametrize(
    "more, message",
    [
        (["--gpus-per-run", "1"], "no node of the Ray cluster has 1 CPU(s) and 1 GPU(s)"),
        (["--cpus-per-run", "2"], "no node of the Ray cluster has 2 CPU(s) and 0 GPU(s)"),
    ],
)
def test_a_run_no_node_can_hold_is_one_error_line(cluster, synthetic_dir, tmp_path, capsys, more, message):
    results = tmp_path / "r.jsonl"
    assert main(_args(synthetic_dir, results) + _ray(cluster, *more)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not results.exists()


def test_an_unreachable_cluster_is_one_error_line(synthetic_dir, tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = tmp_path / "r.jsonl"
    started = time.time()
    code = main(_args(synthetic_dir, results) + ["--backend", "ray", "--address", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"--address 127.0.0.1:{port}: no Ray head node answers there" in err
    assert time.time() - started < 30 and not results.exists()


def test_ray_not_installed_is_one_error_line(synthetic_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    results = tmp_path / "r.jsonl"
    assert main(_args(synthetic_dir, results) + ["--backend", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--backend ray needs Ray" in err and "pip install" in err
    assert not results.exists()
