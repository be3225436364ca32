"""The validation study of SIEOUG's cross-domain guidance (docs/sieoug_tuning.md, "Guidance").

    python benchmarks/guidance_study.py run --stage A --seeds 2022 --jobs 1
    python benchmarks/guidance_study.py summary > benchmarks/results/guidance_study/summary.md

Named configurations (a tag each: a model and its overrides) run through the benchmark harness on
a pair (default: the demo Food-Kitchen pair at K_u = 10%, where the paper reports guidance's
largest gain), each with the hidden-link diagnostics on (link_file: auto, every 10 epochs).
Every run: at most 200 epochs, per-domain selection, early stopping after 10 evaluations without
improvement in either domain, not before epoch 30 (stage D: Table 1's 30 and 50: the BPR baselines
peak late). ``summary`` prints, per tag and over the seeds
run, the validation NDCG@10 of both domains (what a choice goes by), its paired difference from
SIEOUG-O with the p-value, the best epochs, and the link statistics at the target's best epoch
(the plan's top-10 rate of a de-linked user's true counterpart against chance, for batch and
whole-population matching); then, for each pair of settings that differ only in guidance
(GUIDANCE_PAIRS), the paired difference guidance on minus off. Test metrics are left out on purpose.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

COMMON = {
    "train_epochs": ["BOTH:200"],
    "stopping_step": 10,
    "stopping_min_epochs": 30,
    "link_file": "auto",
    "link_diagnostics_every": 10,
}
GLOBAL = {"ot_scope": "global"}
TABLE_PROTOCOL = {"stopping_step": 30, "stopping_min_epochs": 50}  # (benchmarks/table1.yaml's)

# stage -> {tag: (model, overrides)}; B and C vary one thing at a time from SIEOUG's defaults
STAGES = {
    "A": {  # where the gain comes from, and whether any matching finds hidden people
        "O": ("SIEOUG-O", {}),
        "S_batch": ("SIEOUG", {}),
        "S_global": ("SIEOUG", GLOBAL),
        "M": ("SIEOUG-M", {}),
        "G": ("SIEOUG-G", {}),
    },
    "B": {  # the matching: eps, lambda, temperature, when guidance starts, anchors first, a map
        "S_batch_eps0.03": ("SIEOUG", {"ot_eps": 0.03}),
        "S_batch_eps0.3": ("SIEOUG", {"ot_eps": 0.3}),
        "S_batch_lambda0.2": ("SIEOUG", {"guide_lambda": 0.2}),
        "S_batch_lambda1.5": ("SIEOUG", {"guide_lambda": 1.5}),
        "S_batch_temp0.2": ("SIEOUG", {"guide_temperature": 0.2}),
        "S_batch_temp1": ("SIEOUG", {"guide_temperature": 1.0}),
        "S_batch_start10": ("SIEOUG", {"guide_start_epoch": 10}),
        "S_batch_anchor10": ("SIEOUG", {"guide_anchor_epochs": 10}),
        "S_batch_map_orth": ("SIEOUG", {"ot_map": "orthogonal"}),
        "S_batch_map_lin": ("SIEOUG", {"ot_map": "linear"}),
        "S_global_eps0.03": ("SIEOUG", {**GLOBAL, "ot_eps": 0.03}),
        "S_global_anchor10": ("SIEOUG", {**GLOBAL, "guide_anchor_epochs": 10}),
        "S_global_map_orth": ("SIEOUG", {**GLOBAL, "ot_map": "orthogonal"}),
    },
    "C": {  # the late-epoch decline, with and without guidance
        "O_prune0.5": ("SIEOUG-O", {"prune_ratio": 0.5}),
        "S_prune0.5": ("SIEOUG", {"prune_ratio": 0.5}),
        "O_lrdecay0.97": ("SIEOUG-O", {"learning_rate_decay": 0.97}),
        "S_lrdecay0.97": ("SIEOUG", {"learning_rate_decay": 0.97}),
        "O_srclr0.3": ("SIEOUG-O", {"lr_scale_source": 0.3}),
        "S_srclr0.3": ("SIEOUG", {"lr_scale_source": 0.3}),
        "O_reg1e-4": ("SIEOUG-O", {"reg_weight": 1e-4}),
        "O_prune0.8": ("SIEOUG-O", {"prune_ratio": 0.8}),
        "O_lr5e-4": ("SIEOUG-O", {"learning_rate": 5e-4}),
        "O_temp0.5": ("SIEOUG-O", {"temperature": 0.5}),
    },
    "E": {  # three seeds under Table 1's protocol: edge pruning (C's winner) with and without guidance
        "O_table": ("SIEOUG-O", TABLE_PROTOCOL),
        "S_table": ("SIEOUG", TABLE_PROTOCOL),
        "S_eps0.3_table": ("SIEOUG", {**TABLE_PROTOCOL, "ot_eps": 0.3}),
        "O_prune0.8_table": ("SIEOUG-O", {**TABLE_PROTOCOL, "prune_ratio": 0.8}),
        "S_prune0.8_table": ("SIEOUG", {**TABLE_PROTOCOL, "prune_ratio": 0.8}),
        "S_prune0.8_eps0.3_table": ("SIEOUG", {**TABLE_PROTOCOL, "prune_ratio": 0.8, "ot_eps": 0.3}),
        "S_prune0.8_lambda0.2_table": ("SIEOUG", {**TABLE_PROTOCOL, "prune_ratio": 0.8, "guide_lambda": 0.2}),
        "O_prune0.9_table": ("SIEOUG-O", {**TABLE_PROTOCOL, "prune_ratio": 0.9}),
        "S_prune0.9_table": ("SIEOUG", {**TABLE_PROTOCOL, "prune_ratio": 0.9}),
    },
    "D": {  # guidance on the BPR baselines (LightGCN+GOUM): its weight and similarity, Table 1's protocol
        "L": ("LightGCN", TABLE_PROTOCOL),
        "L_goum": ("LightGCN+GOUM", TABLE_PROTOCOL),
        "L_goum_lambda0.1": ("LightGCN+GOUM", {**TABLE_PROTOCOL, "guide_lambda": 0.1}),
        "L_goum_cos": ("LightGCN+GOUM", {**TABLE_PROTOCOL, "guide_similarity": "cosine"}),
        "L_goum_cos_lambda0.1": (
            "LightGCN+GOUM",
            {**TABLE_PROTOCOL, "guide_similarity": "cosine", "guide_lambda": 0.1},
        ),
    },
}
CONFIGS = {tag: entry for stage in STAGES.values() for tag, entry in stage.items()}
TASK = {"label": "food_kitchen_demo", "k_u": 0.1, "config_files": ["properties/food_kitchen_demo_ku10.yaml"]}


def specs_of(tags, seeds, task):
    """One harness spec per (tag, seed); tagged as a sweep so that Table 1 reports skip them."""
    return [
        {
            "model": CONFIGS[tag][0],
            "task": task["label"],
            "k_u": task["k_u"],
            "config_files": list(task["config_files"]),
            "seed": int(seed),
            "overrides": {**COMMON, **CONFIGS[tag][1]},
            "sweep": {"study": tag},
        }
        for seed in seeds
        for tag in tags
    ]


def _paired(values, baseline):
    """(mean difference, two-sided paired t-test p) over the seeds both have; p is nan where
    ``report.paired_tests`` gives none (under two seeds, or differences that do not vary)."""
    from sieoug_recbole.benchmark.report import paired_tests

    seeds = sorted(set(values) & set(baseline))
    mean = float(np.mean([values[s] - baseline[s] for s in seeds])) if seeds else float("nan")
    p = paired_tests(values, baseline)["t_p"]
    return mean, float("nan") if p is None else p


#: guidance on against off under the same settings (paired over the seeds both ran)
GUIDANCE_PAIRS = [
    ("S_batch", "O"),
    ("S_table", "O_table"),
    ("S_prune0.8_table", "O_prune0.8_table"),
    ("S_prune0.9_table", "O_prune0.9_table"),
    ("L_goum", "L"),
]


def guidance_pairs(records):
    """Markdown table: validation NDCG@10 with guidance minus without, per pair of GUIDANCE_PAIRS."""
    valid = {}
    for record in records:
        tag = (record.get("sweep") or {}).get("study")
        if tag and record.get("status") == "ok":
            valid.setdefault(tag, {})[record["seed"]] = {
                d: record["metrics"][d]["valid"]["ndcg@10"] for d in ("target", "source")
            }
    lines = [
        "| with guidance | without | seeds | target: difference (p) | source: difference (p) |",
        "|---|---|---|---|---|",
    ]
    for on, off in GUIDANCE_PAIRS:
        if on not in valid or off not in valid:
            continue
        seeds = sorted(set(valid[on]) & set(valid[off]))
        cells = [on, off, str(len(seeds))]
        for domain in ("target", "source"):
            diff, p = _paired({s: valid[on][s][domain] for s in seeds}, {s: valid[off][s][domain] for s in seeds})
            cells.append(f"{diff:+.4f} ({p:.2g})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(records, baseline_tag="O"):
    """Markdown table, one row per tag (see the module doc)."""
    by_tag = {}
    for record in records:
        tag = (record.get("sweep") or {}).get("study")
        if tag and record.get("status") == "ok":
            by_tag.setdefault(tag, {})[record["seed"]] = record
    valid = {
        tag: {seed: {d: r["metrics"][d]["valid"]["ndcg@10"] for d in ("target", "source")} for seed, r in runs.items()}
        for tag, runs in by_tag.items()
    }
    lines = [
        f"| tag | seeds | valid NDCG@10 target | vs {baseline_tag} (p) | "
        f"valid NDCG@10 source | vs {baseline_tag} (p) | "
        "best epoch t / s | "
        "top-10 of hidden links: batch (chance) | global (chance) |",
        "|" + "---|" * 9,
    ]
    for tag in [t for t in CONFIGS if t in by_tag]:
        runs = by_tag[tag]
        cells = [tag, str(len(runs))]
        for domain in ("target", "source"):
            vals = {s: v[domain] for s, v in valid[tag].items()}
            cells.append(f"{np.mean(list(vals.values())):.4f}")
            if tag != baseline_tag and baseline_tag in valid:
                diff, p = _paired(vals, {s: v[domain] for s, v in valid[baseline_tag].items()})
                cells.append(f"{diff:+.4f} ({p:.2g})")
            else:
                cells.append("")
        cells.append(
            ", ".join(
                f"{r.get('best_epoch_by_domain', {}).get('target')}/{r.get('best_epoch_by_domain', {}).get('source')}"
                for r in runs.values()
            )
        )
        best = [((r.get("link_diagnostics") or {}).get("best") or {}) for r in runs.values()]
        for scope in ("batch", "global"):
            top, chance = [b.get(f"{scope}_top10") for b in best], [b.get(f"{scope}_chance_top10") for b in best]
            if all(v is not None for v in top + chance) and top:
                cells.append(f"{np.mean(top):.3f} ({np.mean(chance):.3f})")
            else:
                cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["run", "summary"])
    parser.add_argument("--stage", action="append", choices=sorted(STAGES), help="stages to run (repeatable)")
    parser.add_argument("--tags", help="comma-separated tags to run (instead of stages)")
    parser.add_argument("--seeds", default="2022", help="comma-separated seeds")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--results", default="benchmarks/results/guidance_study/runs.jsonl")
    parser.add_argument("--task", help="label:K_u=yaml (default: the demo pair at K_u = 10%%)")
    parser.add_argument("--baseline", default="O", help="summary: the tag the others are paired against (default O)")
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]
    from sieoug_recbole.benchmark.grid import parse_task
    from sieoug_recbole.benchmark.records import load_records

    if args.command == "summary":
        records = load_records(args.results)
        print(summary(records, args.baseline))
        print()
        print(guidance_pairs(records))
        return
    tags = (
        [t.strip() for t in args.tags.split(",")]
        if args.tags
        else [t for s in (args.stage or ["A"]) for t in STAGES[s]]
    )
    unknown = [t for t in tags if t not in CONFIGS]
    if unknown:
        parser.error(f"unknown tags {unknown}; known: {list(CONFIGS)}")
    task = parse_task(args.task) if args.task else TASK
    from sieoug_recbole.benchmark.runner import run_grid

    os.makedirs(os.path.dirname(args.results) or ".", exist_ok=True)
    run_grid(specs_of(tags, [int(s) for s in args.seeds.split(",")], task), args.results, jobs=args.jobs, threads=1)
    print(summary(load_records(args.results)))


if __name__ == "__main__":
    main()
