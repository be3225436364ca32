"""The validation study behind SIEOUG.yaml's loss and view defaults (docs/sieoug_tuning.md).

    python benchmarks/sieoug_tuning.py --out benchmarks/results/sieoug_tuning.jsonl
    python benchmarks/sieoug_tuning.py --out benchmarks/results/sieoug_tuning.jsonl \
        --plot benchmarks/results/sieoug_tuning.png

One run per named configuration on the demo Food-Kitchen pair (K_u = 0.5, seed 2022), at most
25 epochs, early stopping after 6 evaluations without a better validation NDCG@10 (the
``_60ep`` rows: 60 epochs, patience 10). Each run
appends one JSON line (validation NDCG@10 per epoch, best validation, and for the record the
target test and source validation metrics); finished tags are skipped. Choose on the
``best_valid`` column only: the test numbers are there to be reported, not to choose by.
Both CPU cores: ``--jobs 2`` runs two configurations at a time, one torch thread each, through
the benchmark harness (``sieoug_recbole.benchmark``: a worker process per run, full run records
in ``--records``, finished runs kept).
"""

import argparse
import json
import os
import sys

# tag -> (model, overrides); the yaml's defaults at the time of the study were the first row's
STUDY = {
    "lgcn": ("LightGCN", {}),
    "O_default": ("SIEOUG-O", {"score": "cosine", "temperature": 0.2, "negatives": "both", "learn_hyper_weight": True}),
    "O_cos_both_noviews": (
        "SIEOUG-O",
        {"score": "cosine", "temperature": 0.2, "negatives": "both", "use_item_graph": False, "use_hypergraph": False},
    ),
    "O_cos_sampled_t02": (
        "SIEOUG-O",
        {"score": "cosine", "temperature": 0.2, "negatives": "sampled", "learn_hyper_weight": True},
    ),
    "O_cos_pool_t02": ("SIEOUG-O", {"score": "cosine", "temperature": 0.2, "learn_hyper_weight": True}),
    "O_cos_pool_t01": ("SIEOUG-O", {"score": "cosine", "temperature": 0.1, "learn_hyper_weight": True}),
    "O_cos_pool_t02_frozenW": ("SIEOUG-O", {"score": "cosine", "temperature": 0.2}),
    "O_dot_sampled_noviews": ("SIEOUG-O", {"negatives": "sampled", "use_item_graph": False, "use_hypergraph": False}),
    "O_dot_sampled": ("SIEOUG-O", {"negatives": "sampled", "learn_hyper_weight": True}),
    "O_dot_sampled_itemgraph_only": ("SIEOUG-O", {"negatives": "sampled", "use_hypergraph": False}),
    "O_dot_sampled_hyper_only": (
        "SIEOUG-O",
        {"negatives": "sampled", "use_item_graph": False, "learn_hyper_weight": True},
    ),
    "O_dot_sampled_hyper_only_frozenW": ("SIEOUG-O", {"negatives": "sampled", "use_item_graph": False}),
    "O_dot_sampled_frozenW": ("SIEOUG-O", {"negatives": "sampled"}),
    "O_dot_pool_frozenW": ("SIEOUG-O", {}),
    "S_dot_pool_frozenW_l06_cosguide": ("SIEOUG", {"guide_similarity": "cosine"}),
    "S_dot_pool_frozenW_l01_cosguide": ("SIEOUG", {"guide_similarity": "cosine", "guide_lambda": 0.1}),
    "S_newdefaults_dotguide_l06": ("SIEOUG", {}),
    "S_newdefaults_dotguide_l01": ("SIEOUG", {"guide_lambda": 0.1}),
    # does stronger L2 keep SIEOUG-O improving past epoch ~20, as FREEDOM does? (60 epochs)
    "O_defaults_60ep": ("SIEOUG-O", {"train_epochs": ["BOTH:60"], "stopping_step": 10}),
    "O_reg1e-4_60ep": ("SIEOUG-O", {"reg_weight": 1e-4, "train_epochs": ["BOTH:60"], "stopping_step": 10}),
    "O_reg1e-3_60ep": ("SIEOUG-O", {"reg_weight": 1e-3, "train_epochs": ["BOTH:60"], "stopping_step": 10}),
    "O_reg1e-2_60ep": ("SIEOUG-O", {"reg_weight": 1e-2, "train_epochs": ["BOTH:60"], "stopping_step": 10}),
    "O_reg1e-1_60ep": ("SIEOUG-O", {"reg_weight": 1e-1, "train_epochs": ["BOTH:60"], "stopping_step": 10}),
}
# every run: at most 25 epochs, early stopping after 6 evaluations without a better validation
# NDCG@10 (a tag may override both); the harness adds the seed, one torch thread and dual-domain evaluation
RUN_SETTINGS = {"train_epochs": ["BOTH:25"], "stopping_step": 6}
SEED = 2022
TASK = {"label": "food_kitchen_demo", "k_u": 0.5}  # the demo pair (K_u = 0.5)


def study_specs(tags, config_files):
    """One benchmark-harness run spec per tag (:mod:`sieoug_recbole.benchmark`)."""
    specs = []
    for tag in tags:
        model, overrides = STUDY[tag]
        specs.append(
            {
                "model": model,
                "task": TASK["label"],
                "k_u": TASK["k_u"],
                "config_files": list(config_files),
                "seed": SEED,
                "overrides": {**RUN_SETTINGS, **overrides},
                "sweep": None,
            }
        )
    return specs


def study_row(tag, record):
    """The study's line of a finished harness record: best validation NDCG@10 and its
    per-epoch history (what to choose by), the target test and source validation metrics of
    the best epoch (for the record)."""
    model, overrides = STUDY[tag]
    metrics = record["metrics"]
    return {
        "tag": tag,
        "model": model,
        "ov": overrides,
        "best_valid": record["best_valid_score"],
        "test": metrics["target"]["test"],
        "src_valid": metrics["source"]["valid"],
        "hist": [round(h["ndcg@10"], 4) for h in record["valid_history"]],
        "secs": round(record["wall_time_s"]),
    }


def plot(results, png):
    """Validation NDCG@10 per epoch of every configuration, LightGCN dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(results) if line.strip()]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for ax, family in zip(axes, ("cos", "dot")):
        for row in rows:
            score = STUDY[row["tag"]][1].get("score", "dot" if row["tag"] != "lgcn" else None)
            if score in (None, {"cos": "cosine", "dot": "dot"}[family]):
                style = "--" if row["tag"] == "lgcn" else "-"
                ax.plot(range(1, len(row["hist"]) + 1), row["hist"], style, label=row["tag"], linewidth=1.2)
        ax.set_title(f"score = {'cosine' if family == 'cos' else 'dot'} (and LightGCN)")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("validation NDCG@10 (target: food)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/sieoug_tuning.jsonl")
    parser.add_argument(
        "--records",
        default="results/sieoug_tuning_records.jsonl",
        help="the benchmark harness's results file (full run records; finished runs are kept)",
    )
    parser.add_argument("--config_files", nargs="+", default=["properties/food_kitchen_demo.yaml"])
    parser.add_argument("--tags", default=",".join(STUDY), help="comma-separated tags to run")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--plot", help="write the validation curves of --out to this PNG and stop")
    args = parser.parse_args(argv)
    if args.plot:
        plot(args.out, args.plot)
        return
    done = set()
    if os.path.exists(args.out):
        done = {json.loads(line)["tag"] for line in open(args.out) if line.strip()}
    todo = [t for t in args.tags.split(",") if t not in done]
    unknown = [t for t in todo if t not in STUDY]
    if unknown:
        parser.error(f"unknown tags {unknown}; known: {list(STUDY)}")
    from sieoug_recbole.benchmark.grid import run_key
    from sieoug_recbole.benchmark.records import finished, load_records
    from sieoug_recbole.benchmark.runner import run_grid

    specs = study_specs(todo, args.config_files)
    os.makedirs(os.path.dirname(args.records) or ".", exist_ok=True)
    run_grid(specs, args.records, jobs=args.jobs, threads=1)
    done_runs = {run_key(r): r for r in finished(load_records(args.records))}
    for tag, spec in zip(todo, specs):
        record = done_runs.get(run_key(spec))
        if record is None:
            print(f"{tag}: no finished run (see {args.records})", file=sys.stderr)
            continue
        row = study_row(tag, record)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{tag:34s} best valid NDCG@10 {row['best_valid']:.4f} ({row['secs']} s)", flush=True)


if __name__ == "__main__":
    main()
