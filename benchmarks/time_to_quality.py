"""Time to quality: the wall clock each model needs to reach its best validation.

    python benchmarks/time_to_quality.py --config_files properties/food_kitchen_ku10.yaml \
        --out benchmarks/results/time_to_quality_ku10.json

Every model of the Table 1 set (or ``--models``) is built on the pair and trained in this one
process, *taking turns* epoch by epoch (model 1 epoch 1, model 2 epoch 1, ..., model 1 epoch 2,
...), so that whatever else loads the machine falls on all models alike. Each trains as a run
would (per-domain selection, early stopping, the yaml's settings, ``--epochs`` at most). Per
model it prints: epochs trained, the best validation epoch of each domain, the wall clock to the
target's best validation and to both domains' (training plus evaluation up to and including that
epoch), the share of evaluation in that time, the best target validation NDCG@10 and the test
NDCG@10 of each domain at its selected epoch, and the peak resident memory of the process while
the model took its turns (all models stay in memory: the figure includes the others' state).

The seeds are those of a solo run, but the models draw from shared random streams in turn, so
the numbers are not those of a solo run with the same seed.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def reset_peak_memory():
    """Reset the process's peak resident set (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb():
    """The process's peak resident set size since the last reset, in MB (VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Contestant:
    """One model's run, advanced one epoch at a time."""

    def __init__(self, name, config_files, overrides):
        from sieoug_recbole.quick_start import build_run, make_config

        self.name = name
        self.config = make_config(name, config_files, overrides)
        self.dataset, self.train, self.valid, self.test, self.model, self.trainer = build_run(self.config)
        self.epochs = self.trainer.training_epochs(self.train, self.valid, verbose=False, saved=True)
        self.clock = {"train": 0.0, "valid": 0.0}
        self.best = {}  # domain -> (epoch, wall clock, evaluation seconds) when it last improved
        self.n_epochs = 0
        self.peak_mb = 0.0
        self.done = False

    def step(self):
        """Train one epoch (and evaluate it); False once the run has finished."""
        reset_peak_memory()
        try:
            report = next(self.epochs)
        except StopIteration:
            self.done = True
            return False
        finally:
            self.peak_mb = max(self.peak_mb, peak_memory_mb())
        self.n_epochs = report["epoch"]
        self.clock["train"] += report["train_s"]
        self.clock["valid"] += report["valid_s"]
        for domain in report["improved"]:
            self.best[domain] = (report["epoch"], self.clock["train"] + self.clock["valid"], self.clock["valid"])
        return True

    def results(self):
        """The row of the table (after the run): selection, clocks, validation and test."""
        from sieoug_recbole.quick_start import source_metrics

        test = {k: float(v) for k, v in self.trainer.evaluate(self.test, load_best_model=True).items()}
        source = source_metrics(self.trainer, self.model, self.dataset, self.config)
        selection = self.trainer.selection
        to_best = max(t for _, t, _ in self.best.values()) if self.best else None
        return {
            "model": self.name,
            "epochs": self.n_epochs,
            "best_epoch": {d: e for d, (e, _, _) in self.best.items()},
            "seconds_to_best": {d: round(t, 1) for d, (_, t, _) in self.best.items()},
            "seconds_to_best_both": None if to_best is None else round(to_best, 1),
            "evaluation_share_to_best": {d: round(v / t, 3) for d, (_, t, v) in self.best.items() if t},
            "seconds_total": round(self.clock["train"] + self.clock["valid"], 1),
            "evaluation_share_total": round(
                self.clock["valid"] / max(self.clock["train"] + self.clock["valid"], 1e-9), 3
            ),
            "best_valid_ndcg@10": {d: s.result.get("ndcg@10") for d, s in selection.items()},
            "test_ndcg@10": {"target": test.get("ndcg@10"), "source": source["test"].get("ndcg@10")},
            "test_hit@10": {"target": test.get("hit@10"), "source": source["test"].get("hit@10")},
            "peak_rss_mb": round(self.peak_mb, 1),
        }


def table(rows):
    head = (
        "| model | epochs | best epoch t / s | s to best target | s to best of both | eval share | "
        "valid NDCG@10 t | test NDCG@10 t / s | peak RSS MB |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in sorted(rows, key=lambda r: r["seconds_to_best"].get("target", float("inf"))):
        best = r["best_epoch"]
        lines.append(
            f"| {r['model']} | {r['epochs']} | {best.get('target')} / {best.get('source', '-')} | "
            f"{r['seconds_to_best'].get('target')} | {r['seconds_to_best_both']} | "
            f"{r['evaluation_share_to_best'].get('target', 0):.0%} | "
            f"{r['best_valid_ndcg@10'].get('target', float('nan')):.4f} | "
            f"{r['test_ndcg@10']['target']:.4f} / {r['test_ndcg@10']['source']:.4f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config_files", required=True, nargs="+", help="the pair's yaml file(s)")
    parser.add_argument("--models", help="comma-separated (default: the registered Table 1 models)")
    parser.add_argument("--epochs", type=int, default=200, help="at most this many epochs per model")
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every model (yaml value)"
    )
    parser.add_argument("--out", help="write the rows and the settings as JSON here")
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole reads '--key=value' words of sys.argv as config: give it none

    import torch

    import sieoug_recbole  # noqa: F401  (registers the models)
    from sieoug_recbole.benchmark.grid import parse_assignment
    from sieoug_recbole.registry import get_model_class, table1_models

    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",")] if args.models else table1_models()
    for name in models:
        try:
            get_model_class(name)
        except ValueError as error:
            parser.error(str(error))
    scratch = tempfile.mkdtemp(prefix="time_to_quality_")
    overrides = {
        "seed": args.seed,
        "dual_domain_eval": True,
        "train_epochs": [f"BOTH:{args.epochs}"],
        "show_progress": False,
        "state": "ERROR",
        "checkpoint_dir": scratch,
    }
    for text in args.set:
        key, value = parse_assignment(text)
        overrides[key] = value
    contestants = []
    for name in models:
        started = time.time()
        contestants.append(Contestant(name, args.config_files, dict(overrides)))
        print(f"built {name} in {time.time() - started:.1f}s", flush=True)
    started = time.time()
    while any(not c.done for c in contestants):
        for contestant in contestants:
            if not contestant.done and contestant.step() and contestant.n_epochs % 10 == 0:
                print(
                    f"{time.time() - started:8.0f}s {contestant.name} epoch {contestant.n_epochs} "
                    f"best {contestant.best and {d: e for d, (e, _, _) in contestant.best.items()}}",
                    flush=True,
                )
    rows = [c.results() for c in contestants]
    print(table(rows))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "config_files": args.config_files,
                    "epochs": args.epochs,
                    "seed": args.seed,
                    "threads": args.threads,
                    "overrides": {k: v for k, v in overrides.items() if k != "checkpoint_dir"},
                    "host": platform.node(),
                    "rows": rows,
                },
                f,
                indent=2,
            )
    return rows


if __name__ == "__main__":
    main()
