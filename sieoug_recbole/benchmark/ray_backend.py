"""``run --backend ray``: each run of a grid as a Ray task, on this machine or a cluster.

The driver (the ``run`` command) plans the grid as the local backend does, builds missing
shipped pairs once, and appends every record to the results file itself: tasks only return
records. A task does on its node what a local worker thread does here: it starts the worker
process ``python -m sieoug_recbole.benchmark one`` through :func:`runner.execute` (same
``run_one``, same record, the same ``run.log`` in the run's folder), with the task's declared
resources (``--cpus-per-run``, ``--gpus-per-run``; Ray sets ``CUDA_VISIBLE_DEVICES`` for the
worker). The record gains ``node`` (Ray node id, its address and host name), ``attempts`` and,
after a retry, ``retried_after``.

What travels how: a task gets the spec, the run's folder and the driver's working directory as
arguments; everything else (the task yaml files, ``dataset/``, the code) it reads from the
filesystem of its node, at the driver's paths. A cluster therefore needs the repository and
``dataset/`` on a shared path, or the same checkout (and data) at the same path on every node.

When a task's Ray worker or its node dies (a lost node, a worker killed from outside, Ray's
memory monitor), the run is started again, at most ``max_retries`` times; a run that fails on
its own (an exception, its training process killed, a timeout) is recorded as failed, as with
the local backend, and not retried.

Ray is an optional extra (``pip install -e '.[ray]'``), imported only here and only when used.
"""

import contextlib
import logging
import math
import os
import socket
import threading

from sieoug_recbole.benchmark.grid import GridError
from sieoug_recbole.benchmark.runner import execute, failed_record

DEFAULT_MAX_RETRIES = 2
CONNECT_TIMEOUT_S = 5


class RayBackendError(GridError):
    """Ray missing, a cluster out of reach, or a run no node can hold."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayBackendError(
            "--backend ray needs Ray, which is not installed: "
            "pip install -e '.[ray]' (or pip install 'ray[tune]>=2.44')"
        ) from None
    return ray


def add_arguments(parser):
    """The ``run`` options of this backend."""
    group = parser.add_argument_group("backend (where runs go)")
    group.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local: worker processes here (--jobs at a time); ray: Ray tasks",
    )
    group.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="ray: the cluster's head node (`ray start --head` prints it; auto: "
        "the cluster `ray start` runs on this machine); default: a new Ray "
        "instance on this machine for this grid",
    )
    group.add_argument("--cpus-per-run", type=float, default=1.0, help="ray: CPUs a run holds (default 1)")
    group.add_argument("--gpus-per-run", type=float, default=0.0, help="ray: GPUs a run holds (default 0)")
    group.add_argument(
        "--max-retries",
        type=int,
        default=DEFAULT_MAX_RETRIES,
        help=f"ray: times a run is started again after its Ray worker or node died (default {DEFAULT_MAX_RETRIES})",
    )


def check_reachable(address, timeout=CONNECT_TIMEOUT_S):
    """Fail fast (Ray itself waits minutes) when nothing listens at ``HOST:PORT``."""
    if not address or address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RayBackendError(f"--address {address}: expected HOST:PORT of the Ray head node")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayBackendError(
            f"--address {address}: no Ray head node answers there "
            f"({exc.strerror or exc}); start one with "
            f"`ray start --head --port={port}` or correct HOST:PORT"
        ) from None


def init_ray(ray, address=None):
    """Connect to the cluster at ``address`` (``auto``: the one ``ray start`` runs on this
    machine), or without one start a new Ray instance here: never one that another process
    left behind. Raises :class:`RayBackendError` (one line) when that fails."""
    check_reachable(address)
    options = {"address": address or "local", "logging_level": logging.WARNING, "log_to_driver": False}
    if not address:
        options["include_dashboard"] = False
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayBackendError(
            f"could not connect to Ray at {address or 'a new local instance'}: {_first_line(exc)}"
        ) from None


def runs_that_fit(nodes, cpus, gpus):
    """How many runs of ``cpus`` CPUs and ``gpus`` GPUs the alive nodes hold at once."""
    total = 0
    for node in nodes:
        if not node.get("Alive", True):
            continue
        have = node.get("Resources", {})
        fits = [
            math.floor(have.get(name, 0.0) / need + 1e-9) for name, need in (("CPU", cpus), ("GPU", gpus)) if need > 0
        ]
        total += min(fits) if fits else 1
    return total


def _describe_nodes(nodes):
    return "; ".join(
        f"{n.get('NodeManagerAddress', '?')}: {n.get('Resources', {}).get('CPU', 0):g} CPU, "
        f"{n.get('Resources', {}).get('GPU', 0):g} GPU"
        for n in nodes
        if n.get("Alive", True)
    )


def _first_line(exc):
    """``Type: message`` of an error from Ray (of its cause, for an error raised in a task)."""
    cause = getattr(exc, "cause", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _node():
    import ray

    return {
        "id": ray.get_runtime_context().get_node_id(),
        "ip": ray.util.get_node_ip_address(),
        "hostname": socket.gethostname(),
    }


def run_on_node(spec, run_dir, cwd, verbose, threads, timeout):
    """The Ray task: one run in a worker process of this node; (record, node)."""
    node = _node()
    if not os.path.isdir(cwd):
        return failed_record(
            spec,
            f"node {node['hostname']} ({node['ip']}): the driver's working "
            f"directory {cwd} does not exist there; a cluster needs the repository "
            "and dataset/ on a shared path, or the same checkout at the same path on "
            "every node",
            run_dir,
        ), node
    os.chdir(cwd)  # task yaml files and data_path are relative to the driver's folder
    return execute(spec, run_dir, verbose, threads, timeout), node


class RayRuns:
    """The ``remote`` of :func:`runner.run_grid`: starts runs as Ray tasks (see the module)."""

    def __init__(
        self,
        ray,
        cpus_per_run=1.0,
        gpus_per_run=0.0,
        max_retries=DEFAULT_MAX_RETRIES,
        verbose=False,
        threads=1,
        timeout=None,
    ):
        self.ray = ray
        self.task = ray.remote(run_on_node).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
        self.max_retries = max(0, int(max_retries))
        self.arguments = (verbose, threads, timeout)
        nodes = ray.nodes()
        self.parallel = runs_that_fit(nodes, cpus_per_run, gpus_per_run)
        if self.parallel < 1:
            raise RayBackendError(
                f"no node of the Ray cluster has {cpus_per_run:g} CPU(s) and {gpus_per_run:g} GPU(s) "
                f"for a run (nodes: {_describe_nodes(nodes) or 'none'}); lower --cpus-per-run / "
                "--gpus-per-run or add a node that has them"
            )
        self.lock = threading.Lock()
        self.running = set()
        self.stopping = False

    def _died(self, exc):
        """Whether a task's error means its Ray worker or node died (worth another attempt)."""
        errors = self.ray.exceptions
        return (
            isinstance(exc, errors.RayError)
            and not isinstance(exc, errors.RayTaskError)
            and not isinstance(exc, errors.TaskCancelledError)
        )

    def _submit(self, spec, run_dir):
        with self.lock:
            if self.stopping:
                raise KeyboardInterrupt
            ref = self.task.remote(spec, os.path.abspath(run_dir), os.getcwd(), *self.arguments)
            self.running.add(ref)
        return ref

    def start(self, spec, run_dir):
        """Run ``spec`` as a Ray task (again after a worker death); its record."""
        died = []
        for attempt in range(1, self.max_retries + 2):
            ref = self._submit(spec, run_dir)
            try:
                record, node = self.ray.get(ref)
                break
            except Exception as exc:  # noqa: BLE001  (Ray's errors: sorted out below)
                if self.stopping:
                    raise KeyboardInterrupt from None
                if not self._died(exc):
                    record, node = (
                        failed_record(spec, f"Ray task failed: {_first_line(exc)}", os.path.abspath(run_dir)),
                        None,
                    )
                    break
                died.append(f"attempt {attempt}: {_first_line(exc)}")
            finally:
                with self.lock:
                    self.running.discard(ref)
        else:
            record, node = (
                failed_record(
                    spec,
                    f"the Ray worker running it died {len(died)} time(s), the limit "
                    f"(--max-retries {self.max_retries}): " + " | ".join(died),
                    os.path.abspath(run_dir),
                ),
                None,
            )
        record.update({"node": node, "attempts": attempt})
        if died:
            record["retried_after"] = died
        return record

    def stop_all(self):
        """End the runs in flight (Ctrl-C, SIGTERM): their tasks are cancelled, their workers killed."""
        with self.lock:
            self.stopping = True
            running = list(self.running)
        for ref in running:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)


@contextlib.contextmanager
def connected(args):
    """A :class:`RayRuns` for the ``run`` command's options, Ray shut down afterwards. Raises
    :class:`RayBackendError` (one line) when Ray is missing, the cluster is out of reach or no
    node can hold a run."""
    ray = import_ray()
    if args.cpus_per_run <= 0 or args.gpus_per_run < 0:
        raise RayBackendError("--cpus-per-run must be > 0 and --gpus-per-run >= 0")
    init_ray(ray, args.address)
    try:
        yield RayRuns(
            ray,
            args.cpus_per_run,
            args.gpus_per_run,
            args.max_retries,
            verbose=args.verbose,
            threads=args.threads,
            timeout=args.timeout,
        )
    finally:
        ray.shutdown()
