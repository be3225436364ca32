"""run_hyper.py on both tools: failed trials recorded and the search going on, one line appended
per trial as it ends, unknown keys refused before any trial, overrides reaching every trial."""

import importlib.util
import json
import os
import sys

import pytest
from conftest import REPO, SYNTHETIC_YAML

from sieoug_recbole import tuning

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a Ray started here: loopback only


@pytest.fixture
def run_hyper(monkeypatch):
    """run_hyper.main, called here (it rewrites sys.argv: give it a copy)."""
    monkeypatch.setattr(sys, "argv", ["run_hyper.py"])
    spec = importlib.util.spec_from_file_location("run_hyper", os.path.join(REPO, "run_hyper.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _space(tmp_path, text):
    path = tmp_path / "space.hyper"
    path.write_text(text)
    return str(path)


def _args(synthetic_dir, space, out, *more):
    return [
        "--model=LightGCN",
        f"--config_files={SYNTHETIC_YAML}",
        f"--params_file={space}",
        f"--output_file={out}",
        f"--data_path={synthetic_dir}{os.sep}",
        "--embedding_size=16",
        "--train_epochs=['BOTH:2']",
        "--show_progress=False",
        *more,
    ]


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _check_failed_and_ok(lines):
    """One trial with a bad learning rate (failed, its error kept), one that trained."""
    by_rate = {line["params"]["learning_rate"]: line for line in lines}
    assert set(by_rate) == {0.01, -1}
    bad, good = by_rate[-1], by_rate[0.01]
    assert bad["status"] == "failed" and "learning_rate" in bad["error"] and "> 0" in bad["error"]
    assert good["status"] == "ok" and set(good["test_result"]) == {"hit@10", "ndcg@10"}
    assert good["best_valid_score"] == good["best_valid_result"]["ndcg@10"]
    # the overrides reached the trial: 2 epochs (the yaml says 30), each validated once
    assert good["n_validations"] == 2
    assert good["overrides"]["train_epochs"] == "['BOTH:2']"
    return good


def test_hyperopt_records_a_failed_trial_and_goes_on(run_hyper, synthetic_dir, tmp_path, capsys):
    out = tmp_path / "h.jsonl"
    space = _space(tmp_path, "learning_rate choice [-1,0.01]\n")  # the failing trial comes first
    best_params, best = run_hyper(_args(synthetic_dir, space, out))
    lines = _lines(out)
    assert [line["trial"] for line in lines] == [1, 2] and {l["tool"] for l in lines} == {"hyperopt"}
    good = _check_failed_and_ok(lines)
    assert best_params == {"learning_rate": 0.01} and best == good
    assert "2 trial(s), 1 failed" in capsys.readouterr().out


def test_ray_tune_records_a_failed_trial_and_goes_on(run_hyper, synthetic_dir, tmp_path):
    pytest.importorskip("ray.tune")
    out = tmp_path / "r.jsonl"
    space = _space(tmp_path, "learning_rate choice [-1,0.01]\n")
    run_hyper(_args(synthetic_dir, space, out, "--tool", "ray"))
    lines = _lines(out)
    assert sorted(line["trial"] for line in lines) == [1, 2] and {l["tool"] for l in lines} == {"ray"}
    good = _check_failed_and_ok(lines)
    # the same trial as on the default path gives the same numbers (same seed, same config)
    direct = tuning.train_trial("LightGCN", [SYNTHETIC_YAML], good["overrides"], good["params"])
    assert direct["best_valid_result"] == good["best_valid_result"]
    assert direct["test_result"] == good["test_result"]


def test_ray_tune_tpe_with_asha(run_hyper, synthetic_dir, tmp_path):
    # TPE (Tune's HyperOptSearch) over the .hyper file, ASHA on the per-validation reports
    pytest.importorskip("ray.tune")
    out = tmp_path / "a.jsonl"
    space = _space(tmp_path, "learning_rate uniform 0.005,0.05\n")
    run_hyper(
        _args(
            synthetic_dir,
            space,
            out,
            "--tool",
            "ray",
            "--algo",
            "tpe",
            "--max_evals",
            "3",
            "--asha",
            "--cpus_per_trial",
            "1",
        )
    )
    lines = _lines(out)
    assert sorted(line["trial"] for line in lines) == [1, 2, 3]
    assert all(0.005 <= line["params"]["learning_rate"] <= 0.05 for line in lines)
    assert {line["status"] for line in lines} <= {"ok", "stopped"} and any(l["status"] == "ok" for l in lines)
    for line in lines:
        if line["status"] == "stopped":  # ended by ASHA after some validations: no test result
            assert 1 <= line["validations_seen"] <= 2 and "test_result" not in line
        else:
            assert line["n_validations"] == 2 and line["test_result"]


def test_each_trial_is_appended_as_it_ends(run_hyper, tmp_path, monkeypatch, synthetic_dir):
    out = tmp_path / "h.jsonl"
    seen = []

    def fake_trial(model, config_files, overrides, params, saved=False):
        seen.append((len(_lines(out)) if out.exists() else 0, dict(overrides), dict(params)))
        if len(seen) == 3:
            raise KeyboardInterrupt  # the search is interrupted during its third trial
        return {
            "best_valid_score": params["learning_rate"] / 10,
            "valid_score_bigger": True,
            "best_valid_result": {},
            "test_result": {},
            "n_validations": 1,
        }

    monkeypatch.setattr(tuning, "train_trial", fake_trial)
    space = _space(tmp_path, "learning_rate choice [1,2,3]\n")
    with pytest.raises(SystemExit) as stop:
        run_hyper(_args(synthetic_dir, space, out, "--stopping_step=7"))
    assert stop.value.code == 130
    assert [count for count, _, _ in seen] == [0, 1, 2]  # each trial finds the earlier ones written
    assert [line["params"] for line in _lines(out)] == [p for _, _, p in seen[:2]]  # nothing finished lost
    for _, overrides, _ in seen:  # every trial got every override, as given on the command line
        assert overrides == {
            "data_path": f"{synthetic_dir}{os.sep}",
            "embedding_size": "16",
            "train_epochs": "['BOTH:2']",
            "show_progress": "False",
            "stopping_step": "7",
        }


@pytest.mark.parametrize(
    "space_text, more, message",
    [
        ("learning_rat choice [0.01]\n", [], "the search space: key(s) learning_rat are not declared"),
        (
            "learning_rate choice [0.01]\n",
            ["--embeding_size=8"],
            "the overrides: key(s) embeding_size are not declared",
        ),
        ("learning_rate choice [0.01]\n", ["--learning_rate=0.1"], "learning_rate are both searched and overridden"),
        ("learning_rate choise [0.01]\n", [], "space.hyper:1: learning_rate: type 'choise' is not one of"),
        ("learning_rate uniform 0.01\n", [], "space.hyper:1: learning_rate: uniform takes low,high"),
        ("learning_rate choice 0.01\n", [], "choice takes a non-empty list"),
        ("learning_rate choice [0.01]\n", ["stray"], "overrides must look like --key=value, got: stray"),
    ],
)
def test_bad_space_or_override_is_an_error_before_any_trial(
    run_hyper, synthetic_dir, tmp_path, monkeypatch, capsys, space_text, more, message
):
    monkeypatch.setattr(tuning, "train_trial", lambda *a, **k: pytest.fail("a trial ran"))
    out = tmp_path / "h.jsonl"
    for tool in ("hyperopt", "ray"):
        with pytest.raises(SystemExit) as stop:
            run_hyper(_args(synthetic_dir, _space(tmp_path, space_text), out, "--tool", tool, *more))
        err = capsys.readouterr().err
        assert stop.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
        assert not out.exists()


def test_a_key_of_a_given_config_file_may_be_searched(tmp_path):
    own = tmp_path / "own.yaml"
    own.write_text("my_new_key: 1\n")
    tuning.check_search({"my_new_key": ("choice", [1, 2])}, {}, [str(own)])  # declared there
    with pytest.raises(tuning.TuningError, match="my_new_key"):
        tuning.check_search({"my_new_key": ("choice", [1, 2])}, {}, [])


def test_validations_are_reported_as_the_best_so_far(fast_config):
    from sieoug_recbole.tuning_ray import validations_reported

    reported = []
    with validations_reported(reported.append):
        outcome = tuning.train_trial("LightGCN", [SYNTHETIC_YAML], {**fast_config, "train_epochs": ["BOTH:3"]}, {})
    assert len(reported) == 3 and reported == sorted(reported)  # one per validation, never worse
    assert reported[-1] == pytest.approx(outcome["best_valid_score"])
    from recbole.trainer.trainer import Trainer

    from sieoug_recbole.trainer import PluginTrainer

    for cls in (Trainer, PluginTrainer):  # put back
        assert not getattr(vars(cls).get("fit"), "__qualname__", "").startswith("_reporting_fit")


def test_exhaustive_on_ray_takes_choice_lists_only():
    pytest.importorskip("ray.tune")
    from ray import tune

    from sieoug_recbole.tuning_ray import _space

    with pytest.raises(tuning.TuningError, match="ot_eps are not"):
        _space(tune, "x.hyper", {"learning_rate": ("choice", [1]), "ot_eps": ("uniform", [0, 1])}, "exhaustive")
