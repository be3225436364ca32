"""``run_hyper.py --tool ray``: the search of :mod:`sieoug_recbole.tuning` on Ray Tune.

Trials are Ray Tune function trials, as many at a time as the resources allow
(``--cpus_per_trial``, ``--gpus_per_trial``), on a Ray instance started here or on a cluster
(``--address``; trials read the config files and ``dataset/`` at the driver's paths, so a
cluster needs them on a shared path). ``--algo tpe`` is Tune's HyperOptSearch over the space
RecBole's HyperTuning builds from the ``.hyper`` file; ``--algo exhaustive`` is a grid over
its ``choice`` lists. Every trial reports its best validation score so far after each
validation; with ``--asha`` the ASHA scheduler ends the trials that are behind (recorded as
``stopped``, without a test result). The driver appends each trial's line as the trial ends.
"""

import contextlib
import logging
import os
import shutil
import tempfile
import time

from sieoug_recbole.tuning import TuningError, record, train_trial, trial_line

SCORE = "score"  # the best validation score so far, signed so that higher is better


def import_ray_tune():
    try:
        import ray
        from ray import tune
    except ImportError:
        raise TuningError(
            "--tool ray needs Ray Tune, which is not installed: pip install -e '.[ray]' "
            "(or pip install 'ray[tune]>=2.44')"
        ) from None
    return ray, tune


def _trainer_classes():
    """RecBole's Trainer and every subclass of it that has a ``fit`` of its own."""
    from recbole.trainer.trainer import Trainer

    import sieoug_recbole  # noqa: F401  (imports this package's trainers)

    found, todo = [], [Trainer]
    while todo:
        cls = todo.pop()
        if "fit" in vars(cls):
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def _reporting_fit(original, report):
    """``fit`` that hands its caller's ``callback_fn`` on wrapped in one that reports (once,
    also when one trainer's ``fit`` calls another's)."""

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if getattr(callback_fn, "reports", False):
            return original(self, train_data, valid_data, verbose, saved, show_progress, callback_fn)
        best = [None]

        def callback(epoch_idx, valid_score):
            signed = valid_score if self.valid_metric_bigger else -valid_score
            best[0] = signed if best[0] is None else max(best[0], signed)
            report(best[0])
            if callback_fn:
                callback_fn(epoch_idx, valid_score)

        callback.reports = True
        return original(self, train_data, valid_data, verbose, saved, show_progress, callback)

    return fit


@contextlib.contextmanager
def validations_reported(report):
    """Meanwhile every trainer calls ``report(signed best validation score so far)`` after each
    validation, through the ``callback_fn`` that RecBole's trainers take in ``fit``."""
    originals = {cls: vars(cls)["fit"] for cls in _trainer_classes()}
    for cls, original in originals.items():
        cls.fit = _reporting_fit(original, report)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.fit = original


def run_trial(params, model, config_files, overrides, cwd, threads, per_validation):
    """A Tune trial: train here (in a Ray worker) and report; an error fails the trial."""
    import torch
    from ray import tune

    import sieoug_recbole  # noqa: F401  (repairs the framework, registers the models)

    os.chdir(cwd)  # config files and data_path are relative to the driver's folder
    torch.set_num_threads(max(1, int(threads)))
    reporting = (
        validations_reported(lambda score: tune.report({SCORE: score})) if per_validation else contextlib.nullcontext()
    )
    with reporting:
        outcome = train_trial(model, config_files, overrides, params)
    signed = outcome["best_valid_score"] if outcome["valid_score_bigger"] else -outcome["best_valid_score"]
    tune.report({SCORE: signed, "outcome": outcome})


def _error_line(trial):
    """The last line of a failed trial's trace (``ValueError: ...``)."""
    text = None
    if trial.error_file and os.path.isfile(trial.error_file):  # the driver's copy of the trace
        with open(trial.error_file, encoding="utf-8", errors="replace") as f:
            text = f.read()
    lines = [line.strip() for line in str(text or trial.get_error() or "unknown error").splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def _recorder(tune, search, started):
    """A Tune callback (it runs in the driver) that appends each ended trial's line."""

    class Recorder(tune.Callback):
        def __init__(self):
            self.numbers = {}

        def _number(self, trial):
            return self.numbers.setdefault(trial.trial_id, len(self.numbers) + 1)

        def _seconds(self, trial):
            return time.time() - started.get(trial.trial_id, time.time())

        def on_trial_start(self, iteration, trials, trial, **info):
            started[trial.trial_id] = time.time()
            self._number(trial)

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            outcome = result.get("outcome")
            status = "ok" if outcome else "stopped"
            extra = (
                None
                if outcome
                else {"score_so_far": result.get(SCORE), "validations_seen": result.get("training_iteration")}
            )
            line = record(
                search,
                trial_line(
                    search, self._number(trial), trial.config, status, outcome or extra, seconds=self._seconds(trial)
                ),
            )
            print(
                f"trial {line['trial']} {status}: {line['params']}"
                + (f" -> valid {line['best_valid_score']:.4f}" if outcome else "")
            )

        def on_trial_error(self, iteration, trials, trial, **info):
            error = _error_line(trial)
            record(
                search,
                trial_line(
                    search, self._number(trial), trial.config, "failed", error=error, seconds=self._seconds(trial)
                ),
            )
            print(f"trial {self._number(trial)} failed: {error}")

    return Recorder()


def _space(tune, params_file, space, algo):
    """(param_space, search_alg, num_samples factor) for Tune."""
    if algo == "exhaustive":
        not_choice = sorted(k for k, (kind, _) in space.items() if kind != "choice")
        if not_choice:
            raise TuningError(
                f"--algo exhaustive searches choice lists only; {', '.join(not_choice)} are not (use --algo tpe)"
            )
        return {k: tune.grid_search(values) for k, (_, values) in space.items()}, None
    from ray.tune.search.hyperopt import HyperOptSearch
    from recbole.trainer import HyperTuning

    return None, HyperOptSearch(space=HyperTuning._build_space_from_file(params_file), metric=SCORE, mode="max")


def search_ray(
    search,
    params_file,
    space,
    algo="exhaustive",
    max_evals=10,
    address=None,
    cpus_per_trial=1.0,
    gpus_per_trial=0.0,
    asha=False,
    asha_grace_period=1,
):
    """Run the search on Ray Tune; the lines of its trials (also appended to the output file)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables (lines are printed here)
    ray, tune = import_ray_tune()
    from sieoug_recbole.benchmark.ray_backend import RayBackendError, init_ray

    param_space, search_alg = _space(tune, params_file, space, algo)
    scheduler = None
    if asha:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            metric=SCORE,
            mode="max",
            grace_period=max(1, asha_grace_period),
            reduction_factor=2,
            max_t=10**6,
        )
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            model=search["model"],
            config_files=search["config_files"],
            overrides=search["overrides"],
            cwd=os.getcwd(),
            threads=max(1, int(cpus_per_trial)),
            per_validation=asha,
        ),
        {"cpu": cpus_per_trial, "gpu": gpus_per_trial},
    )
    try:
        init_ray(ray, address)
    except RayBackendError as error:
        raise TuningError(str(error)) from None
    storage = tempfile.mkdtemp(prefix="run_hyper_ray_")
    quiet = logging.getLogger("ray.tune")  # each trial's end is printed (and recorded) here
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=search_alg,
                scheduler=scheduler,  # both on SCORE
                num_samples=1 if algo == "exhaustive" else max_evals,
            ),
            run_config=tune.RunConfig(
                name="run_hyper",
                storage_path=storage,
                verbose=0,
                callbacks=[_recorder(tune, search, {})],
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        tuner.fit()
    finally:
        quiet.setLevel(level)
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    return search["lines"]
