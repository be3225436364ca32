"""A run stopped between two epochs and continued from its training state ends with the numbers
of a run that was never stopped."""

import os
import random

import numpy as np
import pytest
import torch

import sieoug_recbole
from sieoug_recbole.config_checks import ConfigError
from sieoug_recbole.trainer import PluginTrainer
from sieoug_recbole.training_state import (
    config_differences,
    read_state,
    rng_state,
    set_rng_state,
    write_state,
)
from tests.conftest import REPO, SYNTHETIC_YAML

# every number a run reports that training decides
COMPARED = ("best_valid_score", "best_valid_result", "test_result", "valid_history", "metrics_by_domain")


class Stop(Exception):
    """The stand-in for a killed process."""


def stop_at(monkeypatch, where, epoch):
    """Make ``PluginTrainer.<where>`` raise :class:`Stop` once, at training epoch ``epoch``
    (``_train_epoch``) or at the first call (``evaluate``, the test after training)."""
    original = getattr(PluginTrainer, where)
    calls = {"stopped": False}

    def stopping(self, *args, **kwargs):
        due = where != "_train_epoch" or args[1] == epoch
        if due and not calls["stopped"]:
            calls["stopped"] = True
            raise Stop
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PluginTrainer, where, stopping)
    return calls


def run(model, config):
    return sieoug_recbole.run(model, [SYNTHETIC_YAML], dict(config), verbose=False)


def assert_same_numbers(a, b):
    for key in COMPARED:
        assert a[key] == b[key], key


@pytest.fixture
def resumable(fast_config, tmp_path):
    fast_config.update(
        dual_domain_eval=True,  # per-domain selection: two domains' best weights in the state
        learning_rate=0.01,
        train_epochs=["BOTH:4"],
        training_state_file=str(tmp_path / "state" / "run.pth"),
    )
    return fast_config


@pytest.mark.parametrize(
    "model, overrides",
    [
        ("FREEDOM", {}),  # a graph pruned anew every epoch from the generators
        ("SIEOUG", {"guidance": "goum", "ot_scope": "global", "ot_refresh": 3, "ot_map": "linear"}),  # plan, map kept
    ],
)
def test_a_continued_run_ends_with_the_numbers_of_an_unstopped_one(resumable, monkeypatch, model, overrides):
    resumable.update(overrides)
    whole = run(model, dict(resumable, training_state_file=None))
    calls = stop_at(monkeypatch, "_train_epoch", epoch=2)
    with pytest.raises(Stop):
        run(model, resumable)
    assert calls["stopped"] and os.path.isfile(resumable["training_state_file"])
    continued = run(model, resumable)
    assert_same_numbers(continued, whole)
    assert continued["epoch_stats"] == whole["epoch_stats"]
    assert [(r["phase"], r["after_epoch"]) for r in continued["resumed"]] == [("BOTH", 2)]
    assert continued["elapsed_before_s"] > 0 and whole["resumed"] is None
    assert not os.path.exists(resumable["training_state_file"])  # tested: removed


def test_a_run_stopped_in_its_second_phase_continues_there(resumable, monkeypatch):
    resumable.update(train_epochs=["SOURCE:2", "BOTH:3"])
    whole = run("LightGCN", dict(resumable, training_state_file=None))
    stop_at(monkeypatch, "_train_epoch", epoch=1)  # the SOURCE phase's epoch 1 comes first
    with pytest.raises(Stop):
        run("LightGCN", resumable)
    continued = run("LightGCN", resumable)
    assert_same_numbers(continued, whole)
    assert [(r["phase"], r["after_epoch"]) for r in continued["resumed"]] == [("SOURCE", 1)]


def test_a_run_stopped_after_training_is_tested_without_training_again(resumable, monkeypatch):
    resumable.update(train_epochs=["BOTH:12"], stopping_step=0)  # early stopping: a phase that ends early
    whole = run("LightGCN", dict(resumable, training_state_file=None))
    assert len(whole["valid_history"]) < 12
    stop_at(monkeypatch, "evaluate", epoch=None)
    with pytest.raises(Stop):
        run("LightGCN", resumable)
    trained = []
    original = PluginTrainer._train_epoch
    monkeypatch.setattr(
        PluginTrainer, "_train_epoch", lambda self, *a, **k: trained.append(1) or original(self, *a, **k)
    )
    continued = run("LightGCN", resumable)
    assert trained == [] and continued["resumed"][0]["after_epoch"] == len(whole["valid_history"])
    assert_same_numbers(continued, whole)


def test_a_state_of_other_settings_is_refused_with_the_keys_that_differ(resumable, monkeypatch):
    stop_at(monkeypatch, "_train_epoch", epoch=1)
    with pytest.raises(Stop):
        run("LightGCN", resumable)
    path = resumable["training_state_file"]
    with pytest.raises(ValueError, match=r"run\.pth: it was written by a run with other settings: learning_rate"):
        run("LightGCN", dict(resumable, learning_rate=0.02))
    with pytest.raises(ValueError, match="not a training state of this library"):
        torch.save({"state_dict": {}}, path)
        run("LightGCN", resumable)
    with pytest.raises(ConfigError, match="training_state_file"):  # not a path
        run("LightGCN", dict(resumable, training_state_file=5))


def test_a_run_ended_at_its_state_has_the_numbers_of_a_run_capped_there_and_can_go_on(resumable, monkeypatch):
    whole = run("LightGCN", dict(resumable, training_state_file=None))
    capped = run("LightGCN", dict(resumable, training_state_file=None, train_epochs=["BOTH:2"]))
    stop_at(monkeypatch, "_train_epoch", epoch=2)  # the state holds epochs 1-2 of 4
    with pytest.raises(Stop):
        run("LightGCN", resumable)
    ended = run("LightGCN", dict(resumable, end_at_training_state=True))
    assert_same_numbers(ended, capped)
    assert ended["truncated"] == {"phase": "BOTH", "after_epoch": 2, "epochs": 4} and capped["truncated"] is None
    assert os.path.isfile(resumable["training_state_file"])  # kept: the run can go on
    continued = run("LightGCN", resumable)
    assert_same_numbers(continued, whole)
    assert continued["truncated"] is None and not os.path.exists(resumable["training_state_file"])


def test_ending_at_a_state_needs_one(resumable):
    with pytest.raises(ValueError, match=r"end_at_training_state: True needs a training state .*run\.pth"):
        run("LightGCN", dict(resumable, end_at_training_state=True))
    with pytest.raises(ConfigError, match="end_at_training_state"):
        run("LightGCN", dict(resumable, end_at_training_state=5))


def test_the_state_file_is_replaced_whole(tmp_path, monkeypatch):
    path = str(tmp_path / "state.pth")
    write_state(path, {"version": 1, "a": torch.ones(3)})

    def broken_save(obj, target):
        with open(target, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        write_state(path, {"version": 1, "a": torch.zeros(3)})
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["a"], torch.ones(3))  # the earlier state is whole


def test_generators_come_back_to_the_saved_point():
    saved = rng_state()
    drawn = (np.random.rand(), torch.rand(2), random.random())
    np.random.rand(5)  # the generators move on
    torch.rand(5)
    set_rng_state(saved)
    again = (np.random.rand(), torch.rand(2), random.random())
    assert drawn[0] == again[0] and torch.equal(drawn[1], again[1]) and drawn[2] == again[2]


def test_config_differences_name_changed_added_and_removed_keys():
    assert config_differences({"a": 1, "b": [1, 2], "c": 3}, {"a": 1, "b": [1, 3], "d": 4}) == ["b", "c", "d"]
    assert config_differences({"a": {"x": 1}}, {"a": {"x": 1}}) == []


def test_read_state_needs_the_file_of_a_run(tmp_path):
    path = tmp_path / "junk.pth"
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match="junk.pth: not a training state"):
        read_state(str(path), config=None)


def test_the_harness_continues_a_stopped_run_unless_fresh(synthetic_dir, tmp_path, monkeypatch):
    from sieoug_recbole.benchmark import grid as G
    from sieoug_recbole.benchmark import runner

    specs = G.expand(
        ["LightGCN"],
        [G.make_task("syn", 0.5, [SYNTHETIC_YAML])],
        [1],
        config={"data_path": synthetic_dir + os.sep, "embedding_size": 16, "stopping_min_epochs": 0},
        epochs=4,
    )
    grid = dict(in_process=True, progress=False, echo=lambda line: None)
    [whole] = runner.run_grid(specs, str(tmp_path / "whole.jsonl"), runs_dir=str(tmp_path / "a"), **grid)
    results, runs_dir = str(tmp_path / "r.jsonl"), str(tmp_path / "b")
    stop_at(monkeypatch, "_train_epoch", epoch=2)
    [stopped] = runner.run_grid(specs, results, runs_dir=runs_dir, **grid)
    run_dir = stopped["run_dir"]
    assert stopped["status"] == "failed" and os.path.isfile(runner.state_file(run_dir))
    # a worker process takes over from the state (as after a killed worker), to the same numbers
    continued = runner.execute(specs[0], run_dir)
    assert continued["status"] == "ok", continued.get("error")
    assert continued["metrics"] == whole["metrics"] and continued["valid_history"] == whole["valid_history"]
    assert [r["after_epoch"] for r in continued["resumed"]] == [2] and whole["resumed"] is None
    assert "continuing from" in open(os.path.join(run_dir, "run.log"), encoding="utf-8").read()
    assert not os.path.exists(runner.state_file(run_dir))
    # fresh: the state of a stopped run is dropped and the run starts over
    stop_at(monkeypatch, "_train_epoch", epoch=1)
    runner.run_grid(specs, str(tmp_path / "f.jsonl"), runs_dir=runs_dir, **grid)
    [over] = runner.run_grid(specs, str(tmp_path / "f.jsonl"), runs_dir=runs_dir, retry_failed=True, fresh=True, **grid)
    assert over["resumed"] is None and over["metrics"] == whole["metrics"]


def test_the_harness_finishes_stopped_runs_at_their_state_and_continues_them_later(
    synthetic_dir, tmp_path, monkeypatch
):
    from sieoug_recbole.benchmark import grid as G
    from sieoug_recbole.benchmark import runner

    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
    import convergence_table

    config = {"data_path": synthetic_dir + os.sep, "embedding_size": 16, "stopping_min_epochs": 0}
    specs = G.expand(["LightGCN"], [G.make_task("syn", 0.5, [SYNTHETIC_YAML])], [1, 2], config=config, epochs=4)
    grid = dict(in_process=True, progress=False)
    [capped] = runner.run_grid(
        G.expand(["LightGCN"], [G.make_task("syn", 0.5, [SYNTHETIC_YAML])], [1], config=config, epochs=2),
        str(tmp_path / "capped.jsonl"),
        runs_dir=str(tmp_path / "a"),
        echo=lambda line: None,
        **grid,
    )
    results, runs_dir, said = str(tmp_path / "r.jsonl"), str(tmp_path / "b"), []
    stop_at(monkeypatch, "_train_epoch", epoch=2)
    runner.run_grid(specs[:1], results, runs_dir=runs_dir, echo=said.append, **grid)  # seed 1 stopped
    [ended] = runner.run_grid(specs, results, runs_dir=runs_dir, finish=True, echo=said.append, **grid)
    assert "--finish: 1 run(s) have no training state to end at (left alone)" in said  # seed 2
    assert ended["status"] == "truncated" and ended["seed"] == 1
    assert ended["truncated"] == {"phase": "BOTH", "after_epoch": 2, "epochs": 4}
    assert ended["metrics"] == capped["metrics"] and ended["valid_history"] == capped["valid_history"]
    assert "ended at its training state, cap 4" in said[-1]
    rows = convergence_table.truncated_runs_of([results], "syn", 0.5)
    assert list(rows) == ["LightGCN, truncated"] and rows["LightGCN, truncated"][1]["n_epochs"] == 2
    # without --finish the run goes on from the kept state; seed 2 starts
    new = runner.run_grid(specs, results, runs_dir=runs_dir, echo=said.append, **grid)
    assert [(r["seed"], r["status"], r["resumed"] and r["resumed"][0]["after_epoch"]) for r in new] == [
        (1, "ok", 2),
        (2, "ok", None),
    ]
