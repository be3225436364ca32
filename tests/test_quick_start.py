"""Entry points: run_sieoug.py, run_hyper.py, reloading checkpoints, determinism, bad config."""

import glob
import json
import os
import subprocess
import sys
import warnings

import pytest
from conftest import REPO, SYNTHETIC_YAML

import sieoug_recbole
from sieoug_recbole.quick_start import DatasetMissingError


def _cli_overrides(cfg):
    return [f"--{k}={v}" for k, v in cfg.items()]


def test_run_sieoug_writes_result_json(fast_config, tmp_path):
    result_file = tmp_path / "r.json"
    cmd = [
        sys.executable,
        os.path.join(REPO, "run_sieoug.py"),
        "--model=LightGCN",
        f"--config_files={SYNTHETIC_YAML}",
        "--result_file",
        str(result_file),
        *_cli_overrides(fast_config),
        "--learning_rate=0.01",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "target-domain test: hit@10 = " in done.stdout
    result = json.loads(result_file.read_text())
    assert result["model"] == "LightGCN"
    for key in ("best_valid_result", "test_result"):
        assert set(result[key]) == {"hit@10", "ndcg@10"}
        assert all(isinstance(v, float) for v in result[key].values())
    # the same run through the Python API, with the same seed, gives the same numbers
    fast_config["learning_rate"] = 0.01
    api = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], fast_config, verbose=False)
    assert api["test_result"] == result["test_result"]


def test_run_sieoug_rejects_malformed_override():
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "run_sieoug.py"), "--model=LightGCN", "--config_files=x.yaml", "stray"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "--key=value" in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--model=SIEOUGX", f"--config_files={SYNTHETIC_YAML}"],
            "--model: unknown model 'SIEOUGX'; registered models: ",
        ),
        (["--model=LightGCN", "--config_files=no_such.yaml"], "--config_files: no_such.yaml does not exist"),
    ],
)
def test_run_sieoug_names_a_bad_model_or_file(args, message):
    done = subprocess.run([sys.executable, os.path.join(REPO, "run_sieoug.py"), *args], capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


HYPER_FILE = os.path.join(REPO, "properties", "hyper", "sieoug.hyper")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model=SIEOUGX", f"--params_file={HYPER_FILE}"], "--model: unknown model 'SIEOUGX'"),
        (["--model=LightGCN", "--params_file=no_such.hyper"], "no_such.hyper does not exist"),
        (
            [
                "--model=LightGCN",
                f"--config_files={os.path.join(REPO, 'properties', 'clothes_sports.yaml')}",
                f"--params_file={HYPER_FILE}",
            ],
            "error: source_domain dataset 'clothes_sports_clothes' not found",
        ),
    ],
)
def test_run_hyper_names_a_bad_model_file_or_missing_data(args, message, tmp_path):
    # from an empty folder: the task's data (dataset/ relative to it) is not there
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "run_hyper.py"), *args],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_same_seed_same_metrics_other_seed_differs(fast_config):
    first = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], dict(fast_config), verbose=False)
    second = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], dict(fast_config), verbose=False)
    assert first["test_result"] == second["test_result"]
    assert first["best_valid_result"] == second["best_valid_result"]
    other = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], {**fast_config, "seed": 7}, verbose=False)
    assert other["test_result"] != first["test_result"]


def test_checkpoint_reloads_and_reproduces_test_metrics(fast_config):
    result = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], fast_config, verbose=False)
    config, model, dataset, train_data, valid_data, test_data = sieoug_recbole.load_data_and_model(
        result["saved_model_file"]
    )
    from recbole_cdr.utils import get_trainer

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    reloaded = trainer.evaluate(test_data, load_best_model=False)
    assert {k: float(v) for k, v in reloaded.items()} == result["test_result"]


def test_unsaved_run_tests_the_best_epoch_and_keeps_no_checkpoint(fast_config):
    # learning rate 0.05 makes the last epoch worse than the best one on validation
    fast_config.update(learning_rate=0.05, train_epochs=["BOTH:6"])
    kept = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], dict(fast_config), verbose=False)
    unsaved = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], dict(fast_config), saved=False, verbose=False)
    assert unsaved["test_result"] == kept["test_result"] and unsaved["saved_model_file"] is None
    assert os.listdir(fast_config["checkpoint_dir"]) == [os.path.basename(kept["saved_model_file"])]


def test_resume_continues_after_the_checkpoint_epoch(fast_config):
    from sieoug_recbole.checkpoint import load_checkpoint
    from sieoug_recbole.quick_start import build_run, make_config

    fast_config.update(learning_rate=0.01, train_epochs=["BOTH:3"])
    first = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], dict(fast_config), verbose=False)
    checkpoint = load_checkpoint(first["saved_model_file"])
    config = make_config("LightGCN", [SYNTHETIC_YAML], dict(fast_config, train_epochs=["BOTH:5"]))
    _, train_data, valid_data, _, _, trainer = build_run(config)
    trainer.resume_checkpoint(first["saved_model_file"])
    trainer.fit(train_data, valid_data, verbose=False, saved=True)
    # only the epochs after the checkpoint's ran, and its best score was the one to beat
    assert len(trainer.valid_history) == 5 - (checkpoint["epoch"] + 1) > 0
    assert trainer.best_valid_score >= checkpoint["best_valid_score"]
    two_phases = make_config("LightGCN", [SYNTHETIC_YAML], dict(fast_config, train_epochs=["SOURCE:1", "TARGET:2"]))
    with pytest.raises(NotImplementedError, match="one-phase train_epochs schedule"):
        build_run(two_phases)[-1].resume_checkpoint(first["saved_model_file"])


def test_an_override_key_nothing_reads_is_warned_about(fast_config, monkeypatch):
    from sieoug_recbole.quick_start import make_config

    with pytest.warns(UserWarning, match=r"config key\(s\) learning_rat, ot_epss are not declared"):
        make_config("SIEOUG", [SYNTHETIC_YAML], dict(fast_config, learning_rat=0.1, ot_epss=0.1))
    monkeypatch.setattr(sys, "argv", ["run_sieoug.py", "--guide_lamda=0.3"])  # RecBole reads argv
    with pytest.warns(UserWarning, match="guide_lamda"):
        make_config("SIEOUG", [SYNTHETIC_YAML], dict(fast_config))
    monkeypatch.setattr(
        sys, "argv", ["run_sieoug.py", "--guide_lambda=0.3", f"--source_data_path={fast_config['data_path']}"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # declared keys (a domain prefix included) pass quietly
        make_config("SIEOUG", [SYNTHETIC_YAML], dict(fast_config, ot_eps=0.05, torch_num_threads=1))


def test_a_yaml_file_key_nothing_reads_is_warned_about(fast_config, tmp_path):
    from sieoug_recbole.quick_start import make_config, unknown_file_keys

    typo = tmp_path / "typo.yaml"
    typo.write_text("learning_rat: 0.1\ntarget_domain:\n  modalities: [text]\n  USER_ID_FEILD: user_id\n")
    with pytest.warns(UserWarning, match=r"typo.yaml: learning_rat; .*typo.yaml: target_domain.USER_ID_FEILD"):
        make_config("SIEOUG", [SYNTHETIC_YAML, str(typo)], dict(fast_config))
    shipped = glob.glob(os.path.join(REPO, "properties", "*.yaml"))
    assert len(shipped) >= 10 and unknown_file_keys(shipped) == []  # every key of ours is read
    # read although no packaged yaml declares them: domain-prefixed keys (RecBole-CDR moves
    # them into the domain's section) and keys the framework's code reads
    valid = tmp_path / "valid.yaml"
    valid.write_text(
        f"target_data_path: {fast_config['data_path']}\nsource_modalities: [text]\n"
        "encoding: utf-8\ntail_ratio: 0.1\nsource_domain:\n  encoding: utf-8\n"
    )
    assert unknown_file_keys([str(valid)]) == []
    valid.write_text("source_datset: x\n")
    assert unknown_file_keys([str(valid)]) == [f"{valid}: source_datset"]


def test_missing_dataset_says_how_to_make_it(fast_config, tmp_path):
    fast_config["data_path"] = str(tmp_path) + os.sep
    with pytest.raises(DatasetMissingError, match="python -m sieoug_recbole.synthetic"):
        sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], fast_config, verbose=False)


def test_run_hyper_two_trials(fast_config, tmp_path):
    params = tmp_path / "space.hyper"
    params.write_text("learning_rate choice [0.001,0.01]\n")
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in fast_config.items()))
    out = tmp_path / "hyper.jsonl"
    cmd = [
        sys.executable,
        os.path.join(REPO, "run_hyper.py"),
        "--model=LightGCN",
        f"--config_files={SYNTHETIC_YAML} {fixed}",
        f"--params_file={params}",
        f"--output_file={out}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best params: {'learning_rate':" in done.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]  # one per trial (docs/tuning.md)
    assert sorted(line["params"]["learning_rate"] for line in lines) == [0.001, 0.01]
    assert all(line["status"] == "ok" and line["test_result"] for line in lines)


@pytest.mark.parametrize("keep, left", [("latest", 1), ("all", 2), ("none", 0)])
def test_runs_leave_the_checkpoints_asked_for(keep, left, fast_config, tmp_path):
    import time

    config = {**fast_config, "train_epochs": ["BOTH:1"], "keep_checkpoints": keep}
    for _ in range(2):
        result = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], dict(config), verbose=False)
        time.sleep(1.1)  # (RecBole names a checkpoint by the second it was made in)
    files = glob.glob(os.path.join(config["checkpoint_dir"], "*.pth"))
    assert len(files) == left
    assert (result["saved_model_file"] is None) == (keep == "none")
    if keep != "none":
        assert result["saved_model_file"] in files


def test_a_checkpoint_loads_from_another_working_directory(fast_config, tmp_path, monkeypatch):
    run_dir = tmp_path / "project"
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)  # a run with relative data and checkpoint paths
    data = os.path.relpath(fast_config["data_path"], run_dir)
    config = {**fast_config, "data_path": data + os.sep, "checkpoint_dir": "saved", "train_epochs": ["BOTH:1"]}
    result = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], config, verbose=False)
    checkpoint = os.path.abspath(result["saved_model_file"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config, model, _, _, _, test_data = sieoug_recbole.load_data_and_model(checkpoint)
    assert os.path.isabs(config["data_path"]) and config["data_path"].startswith(str(run_dir))
    from recbole_cdr.utils import get_trainer

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    reloaded = trainer.evaluate(test_data, load_best_model=False)
    assert {k: float(v) for k, v in reloaded.items()} == result["test_result"]
