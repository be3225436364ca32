"""Benchmark harness: grids run and resume, workers in parallel, Table 1 report, plots.

Training runs are tiny (synthetic pair, 2 epochs); the report and plot logic is checked on
hand-made result lines with known numbers.
"""

import csv
import json
import math
import os
import re
import sys
import time

import numpy as np
import pytest
from conftest import REPO, SYNTHETIC_YAML
from scipy import stats

import sieoug_recbole
from sieoug_recbole.benchmark import grid as G
from sieoug_recbole.benchmark import hostinfo, runner
from sieoug_recbole.benchmark import records as R
from sieoug_recbole.benchmark.cli import main
from sieoug_recbole.benchmark.report import build_report

TASK = f"syn:0.5={SYNTHETIC_YAML}"


def _lines(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _grid_args(synthetic_dir, results, models="Pop,LightGCN", seeds="1,2"):
    return [
        "run",
        "--models",
        models,
        "--task",
        TASK,
        "--seeds",
        seeds,
        "--epochs",
        "2",
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


@pytest.fixture(scope="module")
def inline_grid(tmp_path_factory, synthetic_dir):
    """The tiny grid (Pop, LightGCN x 2 seeds) run in this process once."""
    folder = tmp_path_factory.mktemp("grid")
    results = folder / "table.jsonl"
    code = main(_grid_args(synthetic_dir, results) + ["--in-process"])
    return code, results


# ------------------------------------------------------------------------------ running grids


def test_grid_writes_one_line_per_run_and_resumes(inline_grid, synthetic_dir, capsys):
    code, results = inline_grid
    assert code == 0
    lines = _lines(results)
    assert len(lines) == 4
    assert sorted((r["model"], r["seed"]) for r in lines) == [("LightGCN", 1), ("LightGCN", 2), ("Pop", 1), ("Pop", 2)]
    for r in lines:
        assert r["status"] == "ok" and r["task"] == "syn" and r["k_u"] == 0.5
        assert r["overrides"] == {
            "data_path": synthetic_dir + os.sep,
            "embedding_size": 16,
            "learning_rate": 0.01,
            "train_epochs": ["BOTH:2"],
        }
        assert r["overrides_hash"] == G.overrides_hash(r["overrides"])
        for domain in ("target", "source"):
            for split in ("valid", "test"):
                assert set(r["metrics"][domain][split]) == {"hit@10", "ndcg@10"}
        assert r["n_epochs"] == 2 and r["best_epoch"] in (1, 2) and len(r["valid_history"]) == 2
        assert r["metrics"]["target"]["valid"]["ndcg@10"] == r["best_valid_score"]
        assert r["domains"] == {"source": "synthetic_source", "target": "synthetic_target"}
        assert r["resolved_config"]["embedding_size"] == 16 and r["wall_time_s"] > 0
        assert r["settings_hash"] == runner.settings_hash(r)  # the task and model yaml values
        assert r["versions"]["sieoug_recbole"] and r["versions"]["torch"]
        assert not os.path.exists(os.path.join(r["run_dir"], "saved"))  # checkpoint deleted
    # rerun: everything is done, nothing is appended, no training happens
    before = results.read_text()
    started = time.time()
    assert main(_grid_args(synthetic_dir, results) + ["--in-process"]) == 0
    assert time.time() - started < 5
    assert results.read_text() == before
    assert "4 already done" in capsys.readouterr().out


def test_harness_numbers_are_the_quick_start_numbers(inline_grid, synthetic_dir, tmp_path):
    _, results = inline_grid
    record = next(r for r in _lines(results) if r["model"] == "LightGCN" and r["seed"] == 2)
    config = {
        **record["overrides"],
        "seed": 2,
        "dual_domain_eval": True,
        "state": "ERROR",
        "checkpoint_dir": str(tmp_path / "saved"),
        "show_progress": False,
    }
    direct = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], config, verbose=False)
    assert direct["metrics_by_domain"] == record["metrics"]
    assert direct["valid_history"] == record["valid_history"]


def test_parallel_workers_match_in_process(inline_grid, synthetic_dir, tmp_path):
    _, inline_results = inline_grid
    results = tmp_path / "jobs.jsonl"
    assert main(_grid_args(synthetic_dir, results, models="Pop") + ["--jobs", "2"]) == 0
    lines = _lines(results)
    assert len(lines) == 2 and all(r["status"] == "ok" for r in lines)
    inline = {r["seed"]: r["metrics"] for r in _lines(inline_results) if r["model"] == "Pop"}
    for r in lines:
        assert r["metrics"] == inline[r["seed"]]
        log = os.path.join(r["run_dir"], "run.log")
        assert os.path.isfile(log)
        assert sorted(os.listdir(r["run_dir"])) == ["run.log"]  # checkpoint and events deleted


def test_crashed_worker_is_recorded_and_retried_only_on_request(monkeypatch, synthetic_dir, tmp_path):
    def crashing(spec, run_dir, result_file, verbose, threads):
        return [sys.executable, "-c", "import sys; print('boom: out of luck'); sys.exit(3)"]

    monkeypatch.setattr(runner, "worker_command", crashing)
    results = tmp_path / "crash.jsonl"
    args = _grid_args(synthetic_dir, results, models="Pop", seeds="1")
    assert main(args) == 1
    [record] = _lines(results)
    assert record["status"] == "failed"
    assert "exited with status 3" in record["error"] and "boom: out of luck" in record["error"]
    assert main(args) == 0 and len(_lines(results)) == 1  # skipped, not retried
    assert main(args + ["--retry-failed"]) == 1
    assert [r["status"] for r in _lines(results)] == ["failed", "failed"]


def test_failed_run_in_process_keeps_its_error(synthetic_dir, tmp_path, capsys):
    results = tmp_path / "missing.jsonl"
    args = [
        "run",
        "--models",
        "Pop",
        "--task",
        TASK,
        "--seeds",
        "1",
        "--results",
        str(results),
        "--set",
        f"data_path={tmp_path}{os.sep}",
        "--no-progress",
        "--in-process",
    ]
    assert main(args) == 2  # the data check skips the task and says how to make the data
    assert "python -m sieoug_recbole.synthetic" in capsys.readouterr().err
    assert main(args + ["--no-data-check"]) == 1
    [record] = _lines(results)
    assert record["status"] == "failed" and record["error"].startswith("DatasetMissingError")


def test_a_missing_shipped_pair_is_built_before_the_grid(tmp_path, capsys, monkeypatch):
    # food_kitchen_demo is made from the data in the repository: the harness builds it (once,
    # before the workers start) instead of skipping the task; --dry-run only says so
    from sieoug_recbole import quick_start
    from sieoug_recbole.benchmark import runner as runner_module

    monkeypatch.chdir(tmp_path)  # the yaml's data_path, dataset/, is then empty
    task = f"fk:0.5={os.path.join(REPO, 'properties', 'food_kitchen_demo.yaml')}"
    args = [
        "run",
        "--models",
        "Pop",
        "--task",
        task,
        "--seeds",
        "1",
        "--results",
        str(tmp_path / "r.jsonl"),
        "--no-progress",
    ]
    built, planned = [], []

    def fake_build(source, target, out_dir, progress=False):
        built.append((source, target, out_dir))
        for name in (source, target):
            os.makedirs(os.path.join(out_dir, name), exist_ok=True)
            open(os.path.join(out_dir, name, f"{name}.inter"), "w").close()
        return True

    monkeypatch.setattr(quick_start, "build_shipped_pair", fake_build)
    monkeypatch.setattr(runner_module, "run_grid", lambda specs, *a, **k: planned.extend(specs) or [])
    assert main(args + ["--dry-run"]) == 0
    assert not built and "is built from the shipped data when the grid runs" in capsys.readouterr().out
    assert main(args) == 0
    assert built == [("food_kitchen_demo_kitchen", "food_kitchen_demo_food", "dataset/")]
    assert [(s["model"], s["task"]) for s in planned] == [("Pop", "fk")]


def test_unregistered_models_are_skipped_loudly(synthetic_dir, tmp_path, capsys):
    results = tmp_path / "r.jsonl"
    args = [
        "run",
        "--models",
        "Pop,NoSuchModel",
        "--task",
        TASK,
        "--results",
        str(results),
        "--set",
        f"data_path={synthetic_dir}{os.sep}",
        "--dry-run",
    ]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "not registered: NoSuchModel" in err and "registered models: " in err
    planned = [line for line in out.splitlines() if line.startswith("to run")]
    assert len(planned) == 3 and "NoSuchModel" not in out  # 3 default seeds
    assert "estimated: 0 of 3 run(s); no earlier run of Pop with these overrides in the results file" in out
    assert main(args + ["--strict"]) == 2
    assert main(["run", "--models", "NoSuchModel", "--task", TASK, "--results", str(results)]) == 2


def test_estimate_of_the_runs_to_do_comes_from_finished_runs_of_the_same_protocol():
    from sieoug_recbole.benchmark.estimate import estimate_lines, run_seconds

    capped = {"train_epochs": ["BOTH:200"]}
    records = [
        dict(_record("SIEOUG", seed, 0.2, k_u=0.1, overrides=capped), process_time_s=seconds)
        for seed, seconds in ((1, 600), (2, 1800), (3, 1200))
    ]
    records += [
        dict(_record("SIEOUG", 1, 0.2, k_u=0.5, overrides=capped), wall_time_s=9000),  # another K_u
        dict(_record("FREEDOM", 1, 0.2, k_u=0.5, overrides=capped), process_time_s=300),
        dict(_record("FREEDOM", 2, 0.2, k_u=0.5, overrides=capped), status="failed", process_time_s=5),
        dict(_record("LightGCN", 1, 0.2, overrides={"train_epochs": ["BOTH:40"]}), process_time_s=60),
    ]

    def spec(model, k_u, seed=9):
        return {"model": model, "task": "food_kitchen", "k_u": k_u, "seed": seed, "overrides": capped}

    assert run_seconds(spec("SIEOUG", 0.1), records) == (1200, 3, True, False)  # this K_u's runs only
    assert run_seconds(spec("SIEOUG", 0.9), records) == (1500, 4, False, False)  # every K_u of the protocol
    assert run_seconds(spec("FREEDOM", 0.1), records) == (300, 1, False, False)  # the failed run is no evidence
    assert run_seconds(spec("LightGCN", 0.1), records) is None  # only under another epoch cap
    records.append(dict(_record("FREEDOM", 3, 0.2, k_u=0.5, overrides=capped), process_time_s=100, overrides_hash=None))
    assert run_seconds(spec("FREEDOM", 0.5), records) == (200, 2, True, False)  # a record without its hash matches
    todo = [spec("SIEOUG", 0.1), spec("FREEDOM", 0.5), spec("LightGCN", 0.1)]
    lines = estimate_lines(todo, records, jobs=2)
    assert lines[0] == "  SIEOUG food_kitchen K_u=0.1 seed=9: ~20 min (median of 3 run(s), this task and K_u)"
    assert lines[1].endswith("~3 min (median of 2 run(s), this task and K_u)")
    # 23 min of runs; two at a time take at least the longest run (20 min), not 23 / 2
    assert lines[2].startswith("estimated: 2 of 3 run(s), 23 min of runs, at least 20 min with --jobs 2 ")
    assert lines[2].endswith("; no earlier run of LightGCN with these overrides in the results file")
    assert estimate_lines([spec("SIEOUG", 0.1)] * 10, records)[-1] == (
        "estimated: 10 of 10 run(s), 3.3 h of runs (the host's speed is not accounted for)"
    )


def test_estimate_prefers_the_runs_of_the_host_it_will_run_on():
    from sieoug_recbole.benchmark.estimate import estimate_lines, run_seconds

    capped = {"train_epochs": ["BOTH:200"]}

    def record(seed, k_u, seconds, host):
        return dict(_record("DisenCDR", seed, 0.2, k_u=k_u, overrides=capped), process_time_s=seconds, host_id=host)

    # a fast host ran every K_u; the slow one (twice the time) only K_u = 0.5
    records = [record(seed, k_u, 1800, "fast") for seed in (1, 2) for k_u in (0.1, 0.5, 0.9)]
    records += [record(1, 0.5, 3600, "slow"), record(2, 0.5, 4000, "slow")]

    def spec(k_u):
        return {"model": "DisenCDR", "task": "food_kitchen", "k_u": k_u, "seed": 9, "overrides": capped}

    # the slow host's own runs win over another host's runs on the same K_u
    assert run_seconds(spec(0.9), records, host="slow") == (3800, 2, False, True)
    assert run_seconds(spec(0.5), records, host="slow") == (3800, 2, True, True)
    assert run_seconds(spec(0.9), records, host="fast") == (1800, 2, True, True)
    # a host with no run of the model: every host's runs, the same K_u first
    assert run_seconds(spec(0.9), records, host="new") == (1800, 2, True, False)
    assert run_seconds(spec(0.9), records) == (1800, 2, True, False)  # no host given: as "new"
    lines = estimate_lines([spec(0.9), spec(0.5)], records, jobs=1, host="slow")
    assert lines[0].endswith("~63 min (median of 2 run(s), this host, other tasks or K_u)")
    assert lines[1].endswith("~63 min (median of 2 run(s), this host, this task and K_u)")
    assert lines[2] == "estimated: 2 of 2 run(s), 2.1 h of runs (2 of 2 from this host's own runs)"
    lines = estimate_lines([spec(0.9)], records, host="new")
    assert lines == [
        "  DisenCDR food_kitchen K_u=0.9 seed=9: ~30 min (median of 2 run(s), other hosts, this task and K_u)",
        "estimated: 1 of 1 run(s), 30 min of runs (0 of 1 from this host's own runs)",
    ]


# ------------------------------------------------------------------------------- grid pieces


def test_task_seed_and_sweep_parsing():
    assert G.parse_task("food_kitchen:0.1=a.yaml") == {"label": "food_kitchen", "k_u": 0.1, "config_files": ["a.yaml"]}
    assert G.parse_task("fk:10%=a.yaml,b.yaml")["config_files"] == ["a.yaml", "b.yaml"]
    assert G.parse_task("fk:10%=a.yaml")["k_u"] == 0.1
    assert G.parse_task("fk=a.yaml")["k_u"] is None
    with pytest.raises(G.GridError):
        G.parse_task("fk:1.5=a.yaml")
    assert G.parse_sweep("lambda=0,0.2,1.0") == ("guide_lambda", [0, 0.2, 1.0])
    # exponents without a dot are numbers too (PyYAML alone reads '1e-3' as a string)
    assert G.parse_sweep("eps=1e-3,1E2,2.5e-1") == ("ot_eps", [0.001, 100.0, 0.25])
    assert G.parse_assignment("reg_weight=1e-4") == ("reg_weight", 1e-4)
    assert G.parse_assignment("name=e5") == ("name", "e5")
    assert G.load_yaml("sweep: {ot_eps: [1e-3, 0.1]}") == {"sweep": {"ot_eps": [0.001, 0.1]}}  # grid files
    assert G.parse_assignment("train_epochs=['BOTH:3']") == ("train_epochs", ["BOTH:3"])
    # key order and 1 vs 1.0 do not change a run's identity; a value does
    assert G.overrides_hash({"a": 1, "b": [2]}) == G.overrides_hash({"b": [2.0], "a": 1.0})
    assert G.overrides_hash({"a": 1}) != G.overrides_hash({"a": 2})


def test_expand_applies_model_config_epochs_and_sweep():
    task = G.make_task("t", 0.5, ["x.yaml"])
    specs = G.expand(
        ["A", "B"],
        [task],
        [1, 2],
        config={"lr": 1},
        model_config={"B": {"lr": 2}},
        epochs=3,
        sweep={"guide_lambda": [0.2, 0.6]},
    )
    assert len(specs) == 2 * 2 * 2
    assert specs[0]["seed"] == 1 and specs[-1]["seed"] == 2  # seed-major
    b = [s for s in specs if s["model"] == "B"][0]
    assert b["overrides"] == {"lr": 2, "train_epochs": ["BOTH:3"], "guide_lambda": 0.2}
    assert b["sweep"] == {"guide_lambda": 0.2}
    assert len({G.run_key(s) for s in specs}) == 8
    with pytest.raises(G.GridError, match="harness"):
        G.expand(["A"], [task], [1], config={"seed": 3})


def test_a_sweep_runs_only_the_models_it_changes(synthetic_dir, tmp_path, capsys):
    # LightGCN has no guide_lambda and SIEOUG-O forces it to 0: one run each; SIEOUG one per value
    args = [
        "run",
        "--models",
        "LightGCN,SIEOUG-O,SIEOUG",
        "--task",
        TASK,
        "--seeds",
        "1",
        "--results",
        str(tmp_path / "r.jsonl"),
        "--set",
        f"data_path={synthetic_dir}{os.sep}",
        "--sweep",
        "lambda=0.2,1.0",
        "--sweep",
        "learning_rate=0.01,0.1",
        "--dry-run",
    ]
    assert main(args) == 0
    planned = sorted(
        line.split(" overrides=")[0].split(None, 2)[2]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("to run")
    )
    assert planned == sorted(
        [f"LightGCN syn K_u=0.5 seed=1 learning_rate={lr}" for lr in (0.01, 0.1)]
        + [f"SIEOUG-O syn K_u=0.5 seed=1 learning_rate={lr}" for lr in (0.01, 0.1)]
        + [f"SIEOUG syn K_u=0.5 seed=1 guide_lambda={g} learning_rate={lr}" for g in (0.2, 1.0) for lr in (0.01, 0.1)]
    )


def test_report_takes_one_run_per_cell_and_seed():
    task = G.make_task("food_kitchen", 0.1, ["y.yaml"])
    specs = G.expand(["SIEOUG"], [task], [1], sweep={"guide_lambda": [0.2, 1.0]})
    runs = [_record("SIEOUG", 1, 0.2, overrides=s["overrides"], sweep=s["sweep"]) for s in specs]
    runs.append(_record("SIEOUG", 1, 0.3))
    # with the grid of the sweep, Table 1 still leaves sweep runs out
    assert R.select(runs, grid_specs=specs) == []
    both = R.select(runs, grid_specs=specs, include_sweeps=True)
    with pytest.raises(G.GridError, match="two runs of SIEOUG on food_kitchen K_u=0.1 seed 1"):
        build_report(both, metrics=("hit@10",))


def test_table1_grid_file():
    grid = G.load_grid(os.path.join(REPO, "benchmarks", "table1.yaml"))
    assert "models" not in grid  # every registered Table 1 model, in registration order
    assert {"SIEOUG", "SIEOUG-O", "FREEDOM", "LightGCN+GOUM"} <= set(G.table1_models())
    assert [(t["label"], t["k_u"]) for t in grid["tasks"]] == [
        ("food_kitchen", 0.1),
        ("food_kitchen", 0.5),
        ("food_kitchen", 0.9),
    ]
    assert [os.path.basename(t["config_files"][0]) for t in grid["tasks"]] == [
        "food_kitchen_ku10.yaml",
        "food_kitchen_ku50.yaml",
        "food_kitchen_ku90.yaml",
    ]
    assert len(grid["seeds"]) == 3


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "grid file .*missing.yaml: No such file"),
        ("models: [A]\nepochs: abc\n", "epochs is a positive integer"),
        ("epochs: 0\n", "epochs is a positive integer"),
        ("models: [A\n", "not valid yaml"),
        ("models: [A]\nmodel_config: {B: {x: 1}}\n", "model_config.B: B is not in the grid's models"),
    ],
)
def test_bad_grid_file_names_the_file_and_key(text, message, tmp_path):
    path = tmp_path / "missing.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(G.GridError, match=message):
        G.load_grid(str(path))


def test_model_set_for_a_model_not_run_is_an_error(synthetic_dir, tmp_path, capsys):
    args = [
        "run",
        "--models",
        "Pop",
        "--task",
        TASK,
        "--results",
        str(tmp_path / "r.jsonl"),
        "--set",
        f"data_path={synthetic_dir}{os.sep}",
        "--dry-run",
    ]
    assert main(args + ["--model-set", "Pop:x=1"]) == 0
    assert main(args + ["--model-set", "SIEUG:ot_eps=0.1"]) == 2
    assert "SIEUG is not among the models run (Pop)" in capsys.readouterr().err


def test_dry_run_reports_a_bad_results_line_once(synthetic_dir, tmp_path, recwarn):
    results = tmp_path / "r.jsonl"
    results.write_text('{"model": "Pop", "status": "ok"\n')  # cut short by a crash
    args = ["run", "--models", "Pop", "--task", TASK, "--results", str(results)]
    assert main(args + ["--set", f"data_path={synthetic_dir}{os.sep}", "--dry-run"]) == 0
    assert [str(w.message) for w in recwarn].count(f"{results}: skipped 1 unreadable line(s)") == 1


def test_dry_run_estimates_from_this_machines_runs(synthetic_dir, tmp_path, capsys):
    from sieoug_recbole.benchmark.hostinfo import host_id

    results = tmp_path / "r.jsonl"
    args = ["run", "--models", "Pop", "--task", TASK, "--seeds", "1,2,3", "--results", str(results)]
    args += ["--set", f"data_path={synthetic_dir}{os.sep}", "--dry-run"]
    assert main(args) == 0
    overrides = json.loads(capsys.readouterr().out.splitlines()[0].split("overrides=", 1)[1])
    for seed, host, seconds in ((1, host_id(), 600), (2, "elsewhere", 60)):
        record = {"model": "Pop", "task": "syn", "k_u": 0.5, "seed": seed, "overrides": overrides, "status": "ok"}
        R.append_record(str(results), dict(record, host_id=host, process_time_s=seconds))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Pop syn K_u=0.5 seed=3: ~10 min (median of 1 run(s), this host, this task and K_u)" in out
    assert "(1 of 1 from this host's own runs)" in out


def test_a_run_made_with_other_yaml_values_is_flagged(tmp_path):
    task_yaml = tmp_path / "task.yaml"
    original = open(SYNTHETIC_YAML, encoding="utf-8").read()
    task_yaml.write_text(original)
    [spec] = G.expand(["LightGCN"], [G.make_task("syn", 0.5, [str(task_yaml)])], [1])
    results = tmp_path / "r.jsonl"
    R.append_record(
        str(results),
        {
            **spec,
            "overrides_hash": G.overrides_hash(spec["overrides"]),
            "status": "ok",
            "settings_hash": runner.settings_hash(spec),
        },
    )
    assert [len(part) for part in runner.plan([dict(spec)], str(results))] == [0, 1, 0, 0]
    task_yaml.write_text("# a comment changes nothing\n" + original)
    assert [len(part) for part in runner.plan([dict(spec)], str(results))] == [0, 1, 0, 0]
    # nor does a key that never changes a run's numbers (where its files go, what it runs on)
    task_yaml.write_text(original + "\nkeep_checkpoints: all\ntraining_state_file: state.pth\n")
    assert [len(part) for part in runner.plan([dict(spec)], str(results))] == [0, 1, 0, 0]
    task_yaml.write_text(original + "\nlearning_rate: 0.5\n")  # a value does
    todo, done, _, changed = runner.plan([dict(spec)], str(results))
    assert (len(todo), len(done), len(changed)) == (0, 1, 1)
    todo, done, _, changed = runner.plan([dict(spec)], str(results), rerun_changed=True)
    assert (len(todo), len(done), len(changed)) == (1, 0, 1)
    assert "1 finished run(s) were made with other values" in runner.changed_warning(changed, False)
    # so does a value in the model's own yaml (here: a different model with other defaults)
    other = dict(spec, model="BiTGCF")
    assert runner.settings_hash(other) != runner.settings_hash(spec)
    # records from before the hash existed are never flagged
    R.append_record(str(results), {**spec, "overrides_hash": G.overrides_hash(spec["overrides"]), "status": "ok"})
    assert [len(part) for part in runner.plan([dict(spec)], str(results))] == [0, 1, 0, 0]


def test_a_run_another_process_holds_is_left_alone(synthetic_dir, tmp_path):
    import subprocess

    run_dir = str(tmp_path / "runs" / "x")
    with runner.claimed(run_dir) as first:
        with runner.claimed(run_dir) as second:
            assert first and not second
    with runner.claimed(run_dir) as again:  # released
        assert again
    # a lock left by a process that has ended is taken over
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    (tmp_path / "runs" / "x.lock").write_text(f"{runner.socket.gethostname()} {ended.pid}")
    with runner.claimed(run_dir) as taken:
        assert taken
    # a grid skips (records nothing for) a run whose lock is held, and does not touch its folder
    specs = G.expand(
        ["Pop"],
        [G.make_task("syn", 0.5, [SYNTHETIC_YAML])],
        [1],
        config={"data_path": synthetic_dir + os.sep, "embedding_size": 16},
        epochs=1,
    )
    results, runs_dir, said = tmp_path / "r.jsonl", tmp_path / "grid_runs", []
    held = os.path.join(str(runs_dir), G.run_id(specs[0]))
    os.makedirs(held)
    with runner.claimed(held):
        new = runner.run_grid(
            specs, str(results), runs_dir=str(runs_dir), in_process=True, progress=False, echo=said.append
        )
    assert new == [] and not results.exists() and os.path.isdir(held)
    assert any(line.startswith("skipped Pop syn K_u=0.5 seed=1: another process") for line in said)
    # free, it runs; a run finished with other yaml values runs again with --rerun-changed only
    [first] = runner.run_grid(
        specs, str(results), runs_dir=str(runs_dir), in_process=True, progress=False, echo=said.append
    )
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    lines[0]["settings_hash"] = "made-with-other-values"
    results.write_text(json.dumps(lines[0]) + "\n")
    assert (
        runner.run_grid(specs, str(results), runs_dir=str(runs_dir), in_process=True, progress=False, echo=said.append)
        == []
    )
    [again] = runner.run_grid(
        specs,
        str(results),
        runs_dir=str(runs_dir),
        in_process=True,
        progress=False,
        echo=said.append,
        rerun_changed=True,
    )
    assert again["status"] == "ok" and again["settings_hash"] == first["settings_hash"]


def test_epoch_summary_counts_early_stopping_and_ties():
    history = [{"phase": "BOTH", "ndcg@10": v} for v in (0.1, 0.3, 0.3, 0.2)]
    # eval every 2 epochs, 20 planned, stopped after 4 evaluations; the tie keeps the later one
    summary = runner.epoch_summary(history, 0.3, "NDCG@10", ["BOTH"], ["20"], 2)
    assert summary["best_epoch"] == 6 and summary["n_epochs"] == 8 and summary["n_evals"] == 4
    full = runner.epoch_summary(history, 0.3, "NDCG@10", ["BOTH"], ["4"], 1)
    assert full["n_epochs"] == 4 and full["best_epoch"] == 3


def test_results_file_survives_a_cut_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"model": "A", "task": "t", "k_u": null, "seed": 1, "overrides_hash": "x", "status": "ok"}\n{"model": "B", "ta'
    )
    with pytest.warns(UserWarning, match="unreadable"):
        assert len(R.load_records(str(path))) == 1
    R.append_record(
        str(path), {"model": "C", "task": "t", "k_u": None, "seed": 1, "overrides_hash": "y", "status": "ok"}
    )
    with pytest.warns(UserWarning):
        assert [r["model"] for r in R.load_records(str(path))] == ["A", "C"]


@pytest.mark.parametrize(
    "model, key, value",
    [
        ("SIEOUG-O", "guide_lambda", 0.0),
        ("SIEOUG-M", "guidance", "overlap_only"),
        ("SIEOUG-G", "guidance", "fgw"),
        ("SIEOUG", "guide_lambda", 0.6),
    ],
)
def test_resolved_config_holds_what_a_variant_forces(model, key, value, fast_config):
    from sieoug_recbole.benchmark.runner import _resolved
    from sieoug_recbole.quick_start import make_config

    config = make_config(model, [SYNTHETIC_YAML], dict(fast_config, guide_lambda=0.6))
    resolved = _resolved(config, model)
    assert resolved[key] == value and resolved["embedding_size"] == 16


# ------------------------------------------------------------------- report on hand-made lines


def _record(
    model, seed, target_hr, source_hr=None, task="food_kitchen", k_u=0.1, overrides=None, sweep=None, history=None
):
    metrics = {
        "target": {
            "valid": {"hit@10": target_hr, "ndcg@10": target_hr / 2},
            "test": {"hit@10": target_hr, "ndcg@10": target_hr / 2},
        }
    }
    if source_hr is not None:
        metrics["source"] = {
            "valid": {"hit@10": source_hr, "ndcg@10": source_hr / 2},
            "test": {"hit@10": source_hr, "ndcg@10": source_hr / 2},
        }
    overrides = overrides or {}
    return {
        "model": model,
        "task": task,
        "k_u": k_u,
        "seed": seed,
        "overrides": overrides,
        "overrides_hash": G.overrides_hash(overrides),
        "sweep": sweep,
        "status": "ok",
        "metrics": metrics,
        "eval_step": 1,
        "valid_history": history
        or [{"phase": "BOTH", "hit@10": target_hr * f, "ndcg@10": target_hr * f / 2} for f in (0.5, 0.8, 1.0)],
        "domains": {"target": f"{task}_ku10_food", "source": f"{task}_ku10_kitchen"},
    }


HAND = {  # target-domain test HR@10 per seed (1, 2, 3); source HR@10 = 0.5 x target + 0.01 x seed
    "LightGCN": [0.10, 0.12, 0.14],
    "FREEDOM": [0.15, 0.16, 0.20],
    "SIEOUG-O": [0.20, 0.21, 0.22],
    "SIEOUG": [0.18, 0.185, 0.21],
}


def _hand_records():
    lines = []
    for model, values in HAND.items():
        for seed, v in zip((1, 2, 3), values):
            lines.append(_record(model, seed, v, 0.5 * v + 0.01 * seed))
    return lines


def _write(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


def test_report_mean_std_best_and_paired_test(tmp_path):
    lines = _hand_records()
    lines.append(_record("SIEOUG", 1, 0.9, overrides={"guide_lambda": 0.2}, sweep={"guide_lambda": 0.2}))
    lines.append({**_record("FREEDOM", 1, 0.0), "status": "failed"})  # failed runs never count
    results = tmp_path / "hand.jsonl"
    _write(results, lines)
    out = tmp_path / "report"
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    # rows in Table 1 order, the family last; mean ± std (ddof=1); best (SIEOUG-O) in bold
    assert (
        markdown.index("| LightGCN |")
        < markdown.index("| FREEDOM |")
        < markdown.index("| SIEOUG-O |")
        < markdown.index("| SIEOUG |")
    )
    assert "| LightGCN | 0.1200 ± 0.0200 |" in markdown
    assert "**0.2100 ± 0.0100**" in markdown
    assert "food (target) K_u=10% HR@10" in markdown and "kitchen (source) K_u=10% HR@10" in markdown

    with open(out / "report.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, by_name = rows[0], {row[0]: row for row in rows[1:]}
    col = header.index("food_kitchen K_u=10% target HR@10 mean")
    assert by_name["LightGCN"][col] == "0.120000" and by_name["LightGCN"][col + 1] == "0.020000"
    assert by_name["FREEDOM"][col] == "0.170000"  # the failed line is ignored
    assert by_name["FREEDOM"][col + 1] == f"{np.std([0.15, 0.16, 0.20], ddof=1):.6f}"
    assert by_name["SIEOUG-O"][col] == "0.210000*" and "*" not in by_name["SIEOUG"][col]
    assert by_name["SIEOUG"][col] == f"{np.mean([0.18, 0.185, 0.21]):.6f}"  # the sweep run is left out
    assert by_name["best baseline"][col] == "FREEDOM"  # the family is never the baseline
    expected_p = stats.ttest_rel(HAND["SIEOUG"], HAND["FREEDOM"]).pvalue
    assert float(by_name["p paired t-test vs best baseline"][col]) == pytest.approx(expected_p, rel=1e-5)
    assert by_name["p Wilcoxon vs best baseline"][col] == ""  # fewer than 6 seeds
    ours = np.mean(HAND["SIEOUG"])
    assert float(by_name["SIEOUG gain over best baseline (%)"][col]) == pytest.approx(
        100 * (ours - 0.17) / 0.17, abs=1e-3
    )
    assert float(by_name["SIEOUG gain over LightGCN (%)"][col]) == pytest.approx(100 * (ours - 0.12) / 0.12, abs=1e-3)
    # the paper's Food (K_u = 10%) HR@10: SIEOUG 0.1279, LightGCN 0.0770, FREEDOM 0.1045
    assert float(by_name["paper SIEOUG gain over LightGCN (%)"][col]) == pytest.approx(
        100 * (0.1279 - 0.0770) / 0.0770, abs=1e-3
    )
    assert float(by_name["paper SIEOUG gain over that baseline (%)"][col]) == pytest.approx(
        100 * (0.1279 - 0.1045) / 0.1045, abs=1e-3
    )
    assert f"{expected_p:.3g} (n=3)" in markdown


def test_report_wilcoxon_from_six_seeds_and_single_seed_cells():
    ours = [0.30, 0.31, 0.29, 0.35, 0.33, 0.32]
    base = [0.28, 0.30, 0.30, 0.31, 0.30, 0.27]
    runs = [_record("SIEOUG", s, v) for s, v in enumerate(ours)]
    runs += [_record("FREEDOM", s, v) for s, v in enumerate(base)]
    runs += [_record("LightGCN", 0, 0.2)]
    table = build_report(runs, metrics=("hit@10",))
    column = ("food_kitchen", 0.1, "target", "hit@10")
    tests = table["compare"][column]["tests"]
    assert tests["n"] == 6
    assert tests["t_p"] == pytest.approx(stats.ttest_rel(ours, base).pvalue, rel=1e-12)
    assert tests["wilcoxon_p"] == pytest.approx(stats.wilcoxon(ours, base).pvalue, rel=1e-12)
    assert table["cells"][("LightGCN", column)]["std"] is None  # one seed: mean only
    assert table["cells"][("SIEOUG", column)]["best"]
    from sieoug_recbole.benchmark.report import render_markdown

    assert "| LightGCN | 0.2000 (n=1) |" in render_markdown(table)
    # a single run above every mean over seeds is not marked best; alone in a column it is
    table = build_report(runs + [_record("LATTICE", 0, 0.9), _record("LATTICE", 0, 0.9, k_u=0.5)], metrics=("hit@10",))
    assert not table["cells"][("LATTICE", column)]["best"] and table["cells"][("SIEOUG", column)]["best"]
    assert table["cells"][("LATTICE", ("food_kitchen", 0.5, "target", "hit@10"))]["best"]


def test_paired_tests_give_no_p_when_the_seed_differences_do_not_vary():
    from sieoug_recbole.benchmark.report import paired_tests

    # metrics are stored to 4 decimals: two seeds that differ by the same 0.0003 would give a
    # t statistic of about 1e14 (p ~ 1e-15) from float rounding alone
    assert paired_tests({1: 0.0224, 2: 0.0229}, {1: 0.0221, 2: 0.0226})["t_p"] is None
    assert paired_tests({1: 0.2, 2: 0.3}, {1: 0.2, 2: 0.3})["t_p"] is None  # no difference at all
    ours, base = {1: 0.0224, 2: 0.0231}, {1: 0.0221, 2: 0.0226}
    assert paired_tests(ours, base)["t_p"] == pytest.approx(
        stats.ttest_rel([0.0224, 0.0231], [0.0221, 0.0226]).pvalue, rel=1e-12
    )


def test_report_compares_on_the_seeds_both_models_have():
    # LATTICE ran seed 3 only: its one value (0.18) beats FREEDOM's three-seed mean (0.17), but on
    # seed 3 SIEOUG (0.21) gains more over it (+16.7%) than over FREEDOM on seeds 1-3 (+12.7%)
    runs = [_record(model, seed, v) for model in ("SIEOUG", "FREEDOM") for seed, v in zip((1, 2, 3), HAND[model])]
    runs += [_record("LATTICE", 3, 0.18), _record("LightGCN", 1, 0.10), _record("LightGCN", 2, 0.12)]
    table = build_report(runs, metrics=("hit@10",))
    column = ("food_kitchen", 0.1, "target", "hit@10")
    assert table["cells"][("LATTICE", column)]["mean"] > table["cells"][("FREEDOM", column)]["mean"]
    entry = table["compare"][column]
    assert entry["best_baseline"] == "FREEDOM"
    assert entry["gain_best"] == pytest.approx(100 * (np.mean(HAND["SIEOUG"]) - 0.17) / 0.17)
    # LightGCN has seeds 1 and 2: the gain over it uses SIEOUG's seeds 1 and 2 only
    assert entry["gain_reference"] == pytest.approx(100 * (0.1825 - 0.11) / 0.11)
    # with every baseline on ours' seeds the best baseline is simply the best mean
    table = build_report([r for r in runs if r["model"] != "LATTICE"], metrics=("hit@10",))
    assert table["compare"][column]["best_baseline"] == "FREEDOM"
    # without ours in a column the best mean is the best baseline
    table = build_report([r for r in runs if r["model"] != "SIEOUG"], metrics=("hit@10",))
    assert table["compare"][column]["best_baseline"] == "LATTICE"
    assert table["compare"][column]["gain_best"] is None


OTHERS = {
    "NeuMF": [0.05, 0.06, 0.07],
    "LightGCN": [0.10, 0.12, 0.14],
    "LATTICE": [0.16, 0.15, 0.17],
    "FREEDOM": [0.20, 0.22, 0.21],
}  # target HR@10 per seed (1, 2, 3); no SIEOUG


def test_report_of_a_grid_without_sieoug_compares_the_chosen_ours(tmp_path):
    lines = [
        _record(model, seed, v, task="mytask", k_u=None)
        for model, values in OTHERS.items()
        for seed, v in zip((1, 2, 3), values)
    ]
    results = tmp_path / "others.jsonl"
    _write(results, lines)
    out = tmp_path / "report"
    assert (
        main(
            [
                "report",
                "--results",
                str(results),
                "--out",
                str(out),
                "--ours",
                "FREEDOM",
                "--reference",
                "NeuMF",
                "--title",
                "Other models",
            ]
        )
        == 0
    )
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# Other models\n") and "## mytask" in markdown
    assert "| Model | food (target) HR@10 | food (target) NDCG@10 |" in markdown  # no K_u
    assert "Models outside the FREEDOM family are the baselines." in markdown
    # ours is the last row, and never its own baseline although it has the best mean
    assert markdown.index("| LATTICE |") < markdown.index("| FREEDOM |")
    assert "FREEDOM against the baselines (mytask)" in markdown
    with open(out / "report.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, by_name = rows[0], {row[0]: row for row in rows[1:]}
    col = header.index("mytask target HR@10 mean")
    assert by_name["FREEDOM"][col] == "0.210000*"
    assert by_name["best baseline"][col] == "LATTICE"
    assert float(by_name["FREEDOM gain over best baseline (%)"][col]) == pytest.approx(
        100 * (0.21 - 0.16) / 0.16, abs=1e-3
    )
    assert float(by_name["FREEDOM gain over NeuMF (%)"][col]) == pytest.approx(100 * (0.21 - 0.06) / 0.06, abs=1e-3)
    assert float(by_name["p paired t-test vs best baseline"][col]) == pytest.approx(
        stats.ttest_rel(OTHERS["FREEDOM"], OTHERS["LATTICE"]).pvalue, rel=1e-5
    )
    assert by_name["paper FREEDOM gain over NeuMF (%)"][col] == ""  # not a paper task
    # with the default ours (SIEOUG, absent) every model is a baseline and nothing is compared
    table = build_report(lines, metrics=("hit@10",))
    column = ("mytask", None, "target", "hit@10")
    assert table["compare"][column]["best_baseline"] == "FREEDOM"
    assert table["compare"][column]["gain_best"] is None
    from sieoug_recbole.benchmark.report import render_markdown

    assert "(SIEOUG has no runs here: no comparison with the baselines.)" in render_markdown(table)


def test_report_of_a_sweep_grid_leaves_the_sweep_runs_out(tmp_path, capsys):
    grid = tmp_path / "sweep.yaml"
    grid.write_text(
        "models: [LightGCN, SIEOUG]\ntasks: [{label: syn, k_u: 0.5, yaml: y.yaml}]\n"
        "seeds: [1, 2]\nsweep: {guide_lambda: [0.2, 1.0]}\n"
    )
    lines = [_record("LightGCN", seed, v, task="syn", k_u=0.5) for seed, v in ((1, 0.1), (2, 0.2))]
    lines += [
        _record("SIEOUG", seed, 0.3, task="syn", k_u=0.5, overrides={"guide_lambda": lam}, sweep={"guide_lambda": lam})
        for seed in (1, 2)
        for lam in (0.2, 1.0)
    ]
    results = tmp_path / "sweep.jsonl"
    _write(results, lines)
    args = ["report", "--results", str(results), "--out", str(tmp_path / "r"), "--grid", str(grid)]
    assert main(args) == 0  # LightGCN ran once per seed, unswept: its row renders
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "| LightGCN | **0.1500 ± 0.0707** |" in markdown and "| SIEOUG |" not in markdown
    assert main(args + ["--include-sweeps"]) == 2  # two runs of SIEOUG per seed in a cell
    assert "two runs of SIEOUG on syn K_u=0.5 seed 1" in capsys.readouterr().err
    assert main(args + ["--models", "SIEOUG"]) == 2
    assert "sweep runs are left out of tables" in capsys.readouterr().err


def test_select_prefers_grid_specs_and_warns_on_mixed_overrides(capsys):
    runs = [_record("A", 1, 0.1), _record("A", 2, 0.1), _record("A", 1, 0.5, overrides={"x": 1})]
    chosen = R.select(runs)
    assert [r["overrides"] for r in chosen] == [{}, {}]
    assert "2 different override sets" in capsys.readouterr().err
    task = G.make_task("food_kitchen", 0.1, ["y.yaml"])
    specs = G.expand(["A"], [task], [1], config={"x": 1})
    assert [r["metrics"]["target"]["test"]["hit@10"] for r in R.select(runs, grid_specs=specs)] == [0.5]


# --------------------------------------------------------------------- plots on hand-made lines


def test_plots_write_pngs(tmp_path):
    lines = []
    for k_u, shift in ((0.1, 0.0), (0.5, 0.02), (0.9, 0.04)):
        for model, values in HAND.items():
            for seed, v in zip((1, 2, 3), values):
                lines.append(_record(model, seed, v + shift, 0.5 * v, k_u=k_u))
    for value in (0.2, 0.6, 1.0):
        for seed in (1, 2):
            lines.append(
                _record(
                    "SIEOUG",
                    seed,
                    0.2 + value / 10 + seed / 100,
                    0.1,
                    overrides={"guide_lambda": value},
                    sweep={"guide_lambda": value},
                )
            )
    results = tmp_path / "plot.jsonl"
    _write(results, lines)
    out = tmp_path / "plots"
    assert main(["plot", "--results", str(results), "--out", str(out), "--sensitivity", "lambda"]) == 0
    names = sorted(os.listdir(out))
    assert names == [
        "curves_food_kitchen_ku0.1.png",
        "curves_food_kitchen_ku0.5.png",
        "curves_food_kitchen_ku0.9.png",
        "ku_food_kitchen.png",
        "sensitivity_guide_lambda.png",
    ]
    for name in names:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # nothing sets ot_eps: no sensitivity plot, a warning
    assert (
        main(
            [
                "plot",
                "--results",
                str(results),
                "--out",
                str(tmp_path / "p2"),
                "--no-ku",
                "--no-curves",
                "--sensitivity",
                "eps",
            ]
        )
        == 1
    )


def test_sensitivity_series_groups_by_value():
    from sieoug_recbole.benchmark.plots import sensitivity_series

    runs = [_record("SIEOUG", s, 0.1 * v + s, overrides={"ot_eps": v}) for v in (0.01, 0.1) for s in (1, 2)]
    series = sensitivity_series(runs, "ot_eps", metrics=("hit@10",))
    [(name, points)] = series.items()
    assert name[0] == "SIEOUG" and sorted(points) == [0.01, 0.1]
    assert points[0.1][("target", "hit@10")] == [pytest.approx(1.01), pytest.approx(2.01)]
    assert math.isclose(np.mean(points[0.01][("target", "hit@10")]), 1.501)


def _one_epoch_pop_spec(synthetic_dir):
    """A spec that trains Pop for one epoch on the synthetic pair."""
    return {
        "model": "Pop",
        "task": "syn",
        "k_u": 0.5,
        "config_files": [SYNTHETIC_YAML],
        "seed": 1,
        "overrides": {"train_epochs": ["BOTH:1"], "data_path": f"{synthetic_dir}{os.sep}"},
        "sweep": None,
    }


def test_record_names_the_commit_the_run_started_from(monkeypatch, synthetic_dir, tmp_path):
    checkout = {"head": "commit-at-start"}
    monkeypatch.setattr(runner, "_git_commit", lambda: checkout["head"])
    real_run = sieoug_recbole.run

    def run_then_move_checkout(*args, **kwargs):
        result = real_run(*args, **kwargs)
        checkout["head"] = "commit-after-training"  # the checkout moves on while the run trains
        return result

    monkeypatch.setattr(sieoug_recbole, "run", run_then_move_checkout)
    spec = _one_epoch_pop_spec(synthetic_dir)
    record = runner.run_one(spec, run_dir=str(tmp_path / "run"))
    assert record["versions"]["git"] == "commit-at-start"


def test_records_say_which_host_ran_them_and_how_fast_it_was(monkeypatch, synthetic_dir, tmp_path):
    monkeypatch.setattr(runner, "host_id", lambda: "machine-a")
    monkeypatch.setattr(runner, "cpu_probe_ms", lambda: 1.25)
    spec = _one_epoch_pop_spec(synthetic_dir)
    record = runner.run_one(spec, run_dir=str(tmp_path / "run"))
    assert (record["host_id"], record["cpu_probe_ms"]) == ("machine-a", 1.25)
    assert runner.failed_record(spec, "RuntimeError: x")["host_id"] == "machine-a"
    assert hostinfo.cpu_probe_ms(size=64, repeats=3) > 0


def test_host_id_tells_machines_with_one_host_name_apart(tmp_path):
    first, second, empty, missing = tmp_path / "a", tmp_path / "b", tmp_path / "empty", tmp_path / "none"
    first.write_text("uuid-of-machine-a\n")
    second.write_text("uuid-of-machine-b\n")
    empty.write_text("\n")
    ids = {hostinfo.host_id((str(path),)) for path in (first, second)}
    assert len(ids) == 2 and all(re.fullmatch("[0-9a-f]{12}", i) for i in ids)
    assert hostinfo.host_id((str(first),)) == hostinfo.host_id((str(first),))  # stable
    # the first readable, non-empty file counts
    assert hostinfo.host_id((str(missing), str(empty), str(first), str(second))) == hostinfo.host_id((str(first),))
    assert hostinfo.host_id((str(missing),)) != hostinfo.host_id((str(first),))  # the host name alone


def test_seconds_per_epoch_shows_the_range_of_runs_from_hosts_of_different_speed(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
    import convergence_table as C

    def runs(*seconds):
        return {i: {"wall_time_s": 10 * s, "n_epochs": 10} for i, s in enumerate(seconds)}

    assert C.seconds_per_epoch(runs(12.0, 13.0, 14.0)) == "13.0"  # within a quarter: the mean alone
    assert C.seconds_per_epoch(runs(29.0, 48.0, 53.0)) == "43.3 (29.0-53.0)"
    assert C.seconds_per_epoch({1: {"n_epochs": 3}}) == "—"


def test_versions_of_a_checkout_that_is_not_installed(monkeypatch):
    # run from a checkout on PYTHONPATH (no installed distribution): the package's __version__
    from importlib import metadata

    from sieoug_recbole.benchmark import runner

    real = metadata.version

    def version(dist):
        if dist == "sieoug-recbole":
            raise metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(metadata, "version", version)
    found = runner.versions()
    assert found["sieoug_recbole"] == sieoug_recbole.__version__ and found["torch"]


def test_convergence_table_compares_long_runs_with_the_capped_ones(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
    import convergence_table as C

    long_path, capped_path = tmp_path / "long.jsonl", tmp_path / "capped.jsonl"
    for seed, (ours, base) in enumerate([(0.20, 0.24), (0.22, 0.25), (0.21, 0.27)], start=1):
        for model, hr, best in (("SIEOUG", ours, 20 + seed), ("FREEDOM", base, 100 + seed)):
            timing = {"wall_time_s": 12.5 * (best + 10)} if model == "FREEDOM" else {}  # 12.5 s an epoch
            R.append_record(
                str(long_path), dict(_record(model, seed, hr, hr / 4), best_epoch=best, n_epochs=best + 10, **timing)
            )
        R.append_record(str(capped_path), _record("FREEDOM", seed, base - 0.04))
    R.append_record(str(capped_path), _record("SIEOUG", 1, 0.20))  # one seed only
    R.append_record(str(long_path), _record("SIEOUG", 9, 0.9, k_u=0.5))  # another K_u: ignored
    lines, comparison = C.table(
        C.runs_of([str(long_path)], "food_kitchen", 0.1), C.runs_of([str(capped_path)], "food_kitchen", 0.1)
    )
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| FREEDOM", "| SIEOUG"]
    freedom = lines[2].split(" | ")
    assert freedom[1:3] == ["3", "101/111, 102/112, 103/113"]
    assert freedom[3] == f"0.2533 ± {np.std([0.24, 0.25, 0.27], ddof=1):.4f}"
    capped_ndcg = [0.10, 0.105, 0.115]  # NDCG = HR / 2 of the capped runs (0.20, 0.21, 0.23)
    assert freedom[-2] == f"{np.mean(capped_ndcg):.4f} ± {np.std(capped_ndcg, ddof=1):.4f}"
    assert freedom[-1] == "12.5 |"
    assert lines[3].split(" | ")[-2:] == ["0.1000 (1 of the seeds)", "— |"]
    (line,) = comparison
    p = stats.ttest_rel([0.20, 0.22, 0.21], [0.24, 0.25, 0.27]).pvalue
    assert line.startswith(
        f"- SIEOUG vs FREEDOM: target hit@10 {100 * (0.21 / 0.2533333 - 1):+.1f}% (n = 3, p = {p:.3f})"
    )


def test_model_epoch_variant_rows_parse_label_model_and_overrides(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
    import model_epoch as E

    label, model, overrides = E.parse_variant(
        "SIEOUG, Eq 11 only=SIEOUG:use_item_graph=False,guide_lambda=0,ot_eps=1e-2"
    )
    assert (label, model) == ("SIEOUG, Eq 11 only", "SIEOUG")
    assert overrides == {"use_item_graph": False, "guide_lambda": 0, "ot_eps": 0.01}
    assert E.parse_variant("plain=LightGCN") == ("plain", "LightGCN", {})
    assert E.parse_variant("SIEOUG, D = 64=SIEOUG:embedding_size=64") == (
        "SIEOUG, D = 64",
        "SIEOUG",
        {"embedding_size": 64},
    )
    for bad in ("no label or model", "=SIEOUG:guide_lambda=0", "label=:guide_lambda=0", "x=SIEOUG:oops"):
        with pytest.raises(G.GridError):
            E.parse_variant(bad)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variant", "no model"], "--variant: expected LABEL=MODEL"),
        (["--variant", "x=SIEOUGG:embedding_size=64"], "unknown model 'SIEOUGG'; registered models: "),
        (["--models", "LightGCN", "--variant", "LightGCN=LightGCN:embedding_size=8"], "its own label"),
    ],
)
def test_model_epoch_rejects_bad_rows_before_building_anything(argv, message, monkeypatch, capsys):
    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
    import model_epoch as E
    import torch

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep this process's threads
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main() trims it
    monkeypatch.setattr(E, "build_model", lambda *a: pytest.fail("built a model"))
    with pytest.raises(SystemExit) as exit_info:
        E.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_guided_pairs_pair_every_goum_model_with_its_plain_model(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
    import guided_pairs as P

    path = str(tmp_path / "runs.jsonl")
    for seed, (on, off) in enumerate([(0.20, 0.24), (0.22, 0.25), (0.21, 0.27)], start=1):
        R.append_record(path, _record("LightGCN+GOUM", seed, on, on / 2))
        R.append_record(path, _record("LightGCN", seed, off, off / 2))
    R.append_record(path, _record("FREEDOM+GOUM", 1, 0.3))  # no plain FREEDOM: no row
    R.append_record(path, _record("LightGCN", 9, 0.5))  # a seed without its guided run: not paired
    R.append_record(
        path, _record("LightGCN+GOUM", 1, 0.9, overrides={"guide_lambda": 0.1}, sweep={"study": "x"})
    )  # a sweep run: ignored
    lines = P.table(R.load_records(path))
    (row,) = lines[2:]
    cells = row.strip("| ").split(" | ")
    assert cells[:5] == ["food_kitchen", "10%", "LightGCN+GOUM", "LightGCN", "3"]
    p = stats.ttest_rel([0.10, 0.11, 0.105], [0.12, 0.125, 0.135]).pvalue
    assert cells[5] == f"{100 * (0.21 / np.mean([0.24, 0.25, 0.27]) - 1):+.1f}% (p {p:.2g})"
    assert cells[-1] == "—"  # no link diagnostics in these records
    for argv, message in (
        ([path, str(tmp_path / "missing.jsonl")], "missing.jsonl: no such results file"),
        ([str(tmp_path / "only_plain.jsonl")], "no model has finished runs both with and without guidance"),
    ):
        R.append_record(str(tmp_path / "only_plain.jsonl"), _record("LightGCN", 1, 0.2))
        with pytest.raises(SystemExit) as exit_info:
            P.main(["--results", *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_guided_pairs_pool_each_pair_over_its_k_u_and_seeds(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
    import guided_pairs as P

    path = str(tmp_path / "runs.jsonl")
    cells = [(0.1, 1, 0.20, 0.25), (0.1, 2, 0.22, 0.24), (0.5, 1, 0.30, 0.27)]
    for k_u, seed, on, off in cells:
        R.append_record(path, _record("LightGCN+GOUM", seed, on, k_u=k_u))
        R.append_record(path, _record("LightGCN", seed, off, k_u=k_u))
    (row,) = P.pooled_table(R.load_records(path))[2:]
    got = row.strip("| ").split(" | ")
    assert got[:5] == ["food_kitchen", "LightGCN+GOUM", "LightGCN", "10%, 50%", "3"]
    logs = [np.log(on / off) for _, _, on, off in cells]  # NDCG is HR / 2 in _record: the ratio is the same
    p = stats.ttest_1samp(logs, 0.0).pvalue
    assert got[5] == f"{100 * np.expm1(np.mean(logs)):+.1f}% (p {p:.2g}, lower in 2/3)"
    assert got[7] == "—"  # no source metrics in these records
    assert P.pooled_cell([0.1]) == f"{100 * np.expm1(0.1):+.1f}%"  # one cell: no test


def test_guided_pairs_plot_shows_each_seeds_change(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
    import guided_pairs as P

    path = str(tmp_path / "runs.jsonl")
    for k_u, seed, on, off in [(0.1, 2, 0.22, 0.20), (0.1, 1, 0.18, 0.20), (0.5, 1, 0.30, 0.25)]:
        R.append_record(path, _record("LightGCN+GOUM", seed, on, k_u=k_u))
        R.append_record(path, _record("LightGCN", seed, off, k_u=k_u))
    records = R.load_records(path)
    changes = P.percent_changes(records, "target")
    assert list(changes) == [("food_kitchen", "LightGCN+GOUM", "LightGCN")]
    got = changes[("food_kitchen", "LightGCN+GOUM", "LightGCN")]
    assert got.keys() == {0.1, 0.5}
    np.testing.assert_allclose(got[0.1], [-10.0, 10.0])  # seed 1, then seed 2
    np.testing.assert_allclose(got[0.5], [20.0])
    assert P.percent_changes(records, "source") == {}  # these records have no source metrics
    png = tmp_path / "guided.png"
    P.main(["--results", path, "--plot", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_styles_give_every_model_its_colour_and_a_guided_model_its_base_colour():
    from sieoug_recbole.benchmark.plots import model_styles

    models = [f"M{i}" for i in range(17)] + ["M3+GOUM", "Other+GOUM"]
    styles = model_styles(models)
    plain = [m for m in models if m != "M3+GOUM"]
    assert len({styles[m]["color"] for m in plain}) == len(plain)  # more models than tab10's ten colours
    assert styles["M3+GOUM"]["color"] == styles["M3"]["color"]
    assert (styles["M3+GOUM"]["marker"], styles["M3+GOUM"]["linestyle"]) == ("s", "--")
    assert styles["Other+GOUM"]["linestyle"] == "-"  # no base model in the plot: a model of its own


def test_profile_summary_counts_each_function_once_per_sample(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
    import profile_summary as P

    raw = [
        "main (/a/run.py:3);solve (/a/ot.py:10);solve (/a/ot.py:12);emd (/b/ns.py:5) 3\n",  # recursion: once
        "main (/a/run.py:3);backward (/c/t.py:7) 1\n",
        "\n",
    ]
    total, shares = P.inclusive_shares(raw)
    assert total == 4
    assert dict((name, share) for share, name in shares) == {
        "main (run.py)": 1.0,
        "solve (ot.py)": 0.75,
        "emd (ns.py)": 0.75,
        "backward (t.py)": 0.25,
    }


def test_a_grid_cannot_set_what_the_harness_sets_for_every_run(tmp_path, capsys):
    task = [G.make_task("syn", 0.5, [SYNTHETIC_YAML])]
    for key in ("training_state_file", "end_at_training_state", "dual_domain_eval"):
        with pytest.raises(G.GridError, match=f"config: '{key}' is set by the harness"):
            G.expand(["LightGCN"], task, [1], config={key: True})
        with pytest.raises(G.GridError, match=f"model_config.LightGCN: '{key}' is set by the harness"):
            G.expand(["LightGCN"], task, [1], model_config={"LightGCN": {key: True}})
    # --fresh deletes the state --finish would end at: the two together are refused
    results = str(tmp_path / "r.jsonl")
    with pytest.raises(SystemExit) as stop:
        main(["run", "--models", "LightGCN", "--results", results, "--fresh", "--finish"])
    assert stop.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
