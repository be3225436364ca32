"""One model's runs from two results files, seed by seed: the same grid cells run by two code
versions (e.g. Table 1's SIEOUG runs and a rerun after the fix of GOUM's line search).

    python benchmarks/rerun_compare.py --old benchmarks/results/table1_full/runs.jsonl \
        --new benchmarks/results/table1_full/sieoug_goum_fix.jsonl --model SIEOUG --task food_kitchen

Per K_u of the new file: mean ± std over the seeds both files have of the test metrics of
both domains, the mean GOUM iterations per batch (from the runs' epoch statistics) and the
best epochs; below the table, the largest change of any metric over those seeds.
"""
import argparse

from sieoug_recbole.benchmark.grid import norm_k_u
from sieoug_recbole.benchmark.records import finished, load_records
from sieoug_recbole.benchmark.report import cell_stats, mean_std_text, value_of

COLUMNS = [("target", "hit@10"), ("target", "ndcg@10"), ("source", "hit@10"), ("source", "ndcg@10")]


def by_cell(path, model, task):
    """{(K_u, seed): record} of a model's finished runs of a task."""
    return {(norm_k_u(r.get("k_u")), r["seed"]): r for r in finished(load_records(path))
            if r["model"] == model and r["task"] == task}


def mean_goum_iterations(record):
    stats = record.get("epoch_stats") or []
    return sum(s.get("goum_iterations", 0.0) for s in stats) / max(len(stats), 1)


def table(old, new, old_label="old", new_label="new"):
    lines = ["| K_u | runs | seeds | " + " | ".join(f"{d} {m.replace('hit', 'HR').replace('ndcg', 'NDCG')}"
                                                   for d, m in COLUMNS)
             + " | mean GOUM iterations a batch | best epochs |",
             "|---|---|---:|" + "---:|" * (len(COLUMNS) + 2)]
    changes = []
    for k_u in sorted({k for k, _ in new}):
        seeds = sorted(s for k, s in new if k == k_u and (k, s) in old)
        for label, runs in ((old_label, old), (new_label, new)):
            cells = [mean_std_text(cell_stats([value_of(runs[(k_u, s)], d, "test", m) for s in seeds]))
                     for d, m in COLUMNS]
            iterations = sum(mean_goum_iterations(runs[(k_u, s)]) for s in seeds) / len(seeds)
            epochs = ", ".join(str(runs[(k_u, s)]["best_epoch"]) for s in seeds)
            lines.append(f"| {k_u:.0%} | {label} | {len(seeds)} | " + " | ".join(cells)
                         + f" | {iterations:.1f} | {epochs} |")
        largest = max(abs(value_of(new[(k_u, s)], d, "test", m) - value_of(old[(k_u, s)], d, "test", m))
                      for s in seeds for d, m in COLUMNS)
        changes.append(f"- K_u = {k_u:.0%}: largest change of a test metric of one seed {largest:.4f}")
    return lines + [""] + changes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", required=True)
    parser.add_argument("--new", required=True)
    parser.add_argument("--model", default="SIEOUG")
    parser.add_argument("--task", default="food_kitchen")
    parser.add_argument("--old_label", default="Table 1 (before the fix)")
    parser.add_argument("--new_label", default="rerun (with the fix)")
    args = parser.parse_args(argv)
    old, new = by_cell(args.old, args.model, args.task), by_cell(args.new, args.model, args.task)
    print("\n".join(table(old, new, args.old_label, args.new_label)))


if __name__ == "__main__":
    main()
