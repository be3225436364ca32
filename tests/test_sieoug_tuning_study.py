"""benchmarks/sieoug_tuning.py: its runs are benchmark-harness specs, its lines come from the
harness's records, and finished tags are not run again."""

import importlib.util
import json
import os

import pytest

from sieoug_recbole.benchmark.grid import run_key
from sieoug_recbole.benchmark.runner import check_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("sieoug_tuning", os.path.join(ROOT, "benchmarks", "sieoug_tuning.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_record(spec, best=0.08):
    return {
        **spec,
        "status": "ok",
        "best_valid_score": best,
        "wall_time_s": 61.4,
        "valid_history": [{"phase": "BOTH", "ndcg@10": 0.07123}, {"phase": "BOTH", "ndcg@10": best}],
        "metrics": {
            "target": {"valid": {"ndcg@10": best}, "test": {"hit@10": 0.15, "ndcg@10": 0.081}},
            "source": {"valid": {"hit@10": 0.05, "ndcg@10": 0.026}, "test": {}},
        },
    }


def test_every_tag_is_one_distinct_harness_run(study):
    specs = study.study_specs(list(study.STUDY), ["properties/food_kitchen_demo.yaml"])
    for spec in specs:
        check_spec(spec)
    assert len({run_key(s) for s in specs}) == len(study.STUDY)
    by_tag = dict(zip(study.STUDY, specs))
    assert by_tag["lgcn"]["model"] == "LightGCN"
    assert by_tag["lgcn"]["overrides"] == {"train_epochs": ["BOTH:25"], "stopping_step": 6}
    assert by_tag["O_reg1e-3_60ep"]["overrides"] == {  # a tag's own settings win
        "train_epochs": ["BOTH:60"],
        "stopping_step": 10,
        "reg_weight": 1e-3,
    }
    assert {s["seed"] for s in specs} == {2022} and {s["k_u"] for s in specs} == {0.5}


def test_study_line_of_a_record(study):
    spec = study.study_specs(["O_dot_pool_frozenW"], ["a.yaml"])[0]
    row = study.study_row("O_dot_pool_frozenW", fake_record(spec))
    assert row == {
        "tag": "O_dot_pool_frozenW",
        "model": "SIEOUG-O",
        "ov": {},
        "best_valid": 0.08,
        "test": {"hit@10": 0.15, "ndcg@10": 0.081},
        "src_valid": {"hit@10": 0.05, "ndcg@10": 0.026},
        "hist": [0.0712, 0.08],
        "secs": 61,
    }


def test_main_runs_the_missing_tags_through_the_harness(study, monkeypatch, tmp_path):
    out, records = tmp_path / "study.jsonl", tmp_path / "records.jsonl"
    out.write_text(json.dumps({"tag": "lgcn"}) + "\n")  # finished earlier
    asked = []

    def fake_run_grid(specs, results, jobs, threads):
        asked.append(([s["model"] for s in specs], jobs, threads))
        with open(results, "a") as f:
            for spec in specs:
                if spec["overrides"].get("reg_weight") != 1e-1:  # that run fails: no line
                    f.write(json.dumps(fake_record(spec)) + "\n")

    import sieoug_recbole.benchmark.runner as runner

    monkeypatch.setattr(runner, "run_grid", fake_run_grid)
    study.main(
        [
            "--out",
            str(out),
            "--records",
            str(records),
            "--tags",
            "lgcn,O_dot_pool_frozenW,O_reg1e-1_60ep",
            "--jobs",
            "2",
        ]
    )
    assert asked == [(["SIEOUG-O", "SIEOUG-O"], 2, 1)]  # lgcn was done
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["tag"] for line in lines] == ["lgcn", "O_dot_pool_frozenW"]
    with pytest.raises(SystemExit):
        study.main(["--out", str(out), "--records", str(records), "--tags", "no_such_tag"])
