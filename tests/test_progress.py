"""What a person reads while a model trains: a few progress lines on the console by default
(run_sieoug.py), everything with --verbose and always in RecBole's log file."""

import glob
import io
import logging
import os
import subprocess
import sys

from conftest import REPO, SYNTHETIC_YAML

from sieoug_recbole.progress import PROGRESS, EpochProgress, show_progress_only


def test_show_progress_only_filters_the_console_not_the_log_file(tmp_path):
    root = logging.getLogger()
    console, log_file = io.StringIO(), tmp_path / "run.log"
    handlers = [logging.StreamHandler(console), logging.FileHandler(log_file)]
    old_level = root.level
    root.setLevel(logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    try:
        show_progress_only()
        show_progress_only()  # once is enough; twice changes nothing
        root.info("the whole config dump")
        PROGRESS.info("epoch 1/2 (BOTH): valid NDCG@10 = 0.1000")
        root.warning("a warning")
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(old_level)
    assert console.getvalue().splitlines() == ["epoch 1/2 (BOTH): valid NDCG@10 = 0.1000", "a warning"]
    assert "the whole config dump" in log_file.read_text()


class FakeTrainer:
    def __init__(self):
        self.epochs, self.cur_step = 3, 0
        self.model = type("Model", (), {"phase": "BOTH"})()


def test_epoch_progress_reports_each_validation_and_the_best(caplog):
    trainer = FakeTrainer()
    report = EpochProgress(trainer, "NDCG@10")
    with caplog.at_level(logging.INFO, logger=PROGRESS.name):
        for epoch, score, stale in [(0, 0.10, 0), (1, 0.20, 0), (2, 0.15, 1)]:
            trainer.cur_step = stale
            report(epoch, score)
        report.report_best()
    assert [r.getMessage() for r in caplog.records] == [
        "epoch 1/3 (BOTH): valid NDCG@10 = 0.1000 (best so far)",
        "epoch 2/3 (BOTH): valid NDCG@10 = 0.2000 (best so far)",
        "epoch 3/3 (BOTH): valid NDCG@10 = 0.1500",
        "best epoch: 2 (BOTH), valid NDCG@10 = 0.2000; testing its weights",
    ]


def run_cli(synthetic_dir, cwd, *extra):
    # the synthetic yaml's own state (INFO) and progress bars (show_progress: True)
    args = [
        f"--config_files={SYNTHETIC_YAML}",
        "--model=SIEOUG",
        f"--data_path={synthetic_dir}{os.sep}",
        "--train_epochs=['BOTH:2']",
        "--embedding_size=16",
        "--n_clusters=8",
        *extra,
    ]
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "run_sieoug.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1"),
    )


def test_the_cli_output_is_short_by_default_and_full_with_verbose(synthetic_dir, tmp_path):
    quiet = run_cli(synthetic_dir, tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stdout.startswith("target-domain test: hit@10 = ") and len(quiet.stdout.splitlines()) == 1
    assert len(quiet.stdout) + len(quiet.stderr) < 4000
    for line in (
        "data ready in",
        "model SIEOUG built in",
        "epoch 1/2 (BOTH): valid NDCG@10 = ",
        "epoch 2/2 (BOTH): valid NDCG@10 = ",
        "best epoch: ",
    ):
        assert line in quiet.stderr, line
    assert "learning_rate" not in quiet.stderr and "Train     1" not in quiet.stderr  # no config dump, no bars
    log_files = glob.glob(str(tmp_path / "log" / "SIEOUG" / "*.log"))
    assert len(log_files) == 1
    with open(log_files[0], encoding="utf-8") as f:
        logged = f.read()
    assert "learning_rate" in logged and "epoch 1 training" in logged  # RecBole's log file has everything

    verbose = run_cli(synthetic_dir, tmp_path, "--verbose")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert verbose.stdout == quiet.stdout  # the same result line
    assert "learning_rate" in verbose.stderr and "epoch 1 training" in verbose.stderr
    assert len(verbose.stderr) > 5 * len(quiet.stderr)
