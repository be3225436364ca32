"""The convergence check as a Markdown table: runs with a long epoch cap against the same
models and seeds at the grid's short cap.

    python benchmarks/convergence_table.py --long results/conv_full.jsonl \
        --capped benchmarks/results/table1_full/runs.jsonl --task food_kitchen --k_u 0.1

Per model: the seeds, each run's best epoch and epochs run, mean ± std of the test metrics
of both domains, target NDCG@10 of the capped runs of the same seeds, and the wall-clock seconds
per epoch (the run's time over its epochs, validation of both domains included; the range follows
when the runs differ by more than a quarter, e.g. when they ran on hosts of different speed, which
a record's ``host_id`` and ``cpu_probe_ms`` tell apart). Below it, for the
first model (default SIEOUG) against each other one, the relative difference of the means
and a paired t-test over the seeds both have, at the long cap.

``--truncated FILE``: runs that were tested where their training state stopped, before their
epoch cap (records with status ``truncated``, ``benchmark run --finish``) join the table as
``<model>, truncated``: a lower cap than the others', so a lower bound for a model still rising.
"""

import argparse

from sieoug_recbole.benchmark.grid import norm_k_u
from sieoug_recbole.benchmark.records import finished, load_many, order_models
from sieoug_recbole.benchmark.report import cell_stats, gain, mean_std_text, paired_tests, value_of

COLUMNS = [("target", "hit@10"), ("target", "ndcg@10"), ("source", "hit@10"), ("source", "ndcg@10")]


def by_model_and_seed(records, task, k_u, suffix=""):
    """{model + suffix: {seed: record}} of the records of one task and K_u (a later record of
    a seed replaces an earlier one)."""
    out = {}
    for r in records:
        if r["task"] == task and norm_k_u(r.get("k_u")) == norm_k_u(k_u):
            out.setdefault(r["model"] + suffix, {})[r["seed"]] = r
    return out


def runs_of(paths, task, k_u):
    """{model: {seed: record}} of the finished runs of one task and K_u in results files."""
    return by_model_and_seed(finished(load_many(paths)), task, k_u)


TRUNCATED = ", truncated"


def truncated_runs_of(paths, task, k_u):
    """{"<model>, truncated": {seed: record}} of the runs tested before their epoch cap (the
    last such line of each run)."""
    records = [r for r in load_many(paths) if r.get("status") == "truncated"]
    return by_model_and_seed(records, task, k_u, suffix=TRUNCATED)


# Above this ratio of the slowest run's seconds per epoch to the fastest's, the cell shows the
# range: a mean over runs made on hosts of different speed would hide it.
SPREAD_SHOWN = 1.25


def seconds_per_epoch(runs):
    """Mean over the runs of wall-clock seconds / epochs run (training and both domains'
    validation), with the range in brackets when the runs differ by more than SPREAD_SHOWN."""
    values = [r["wall_time_s"] / r["n_epochs"] for r in runs.values() if r.get("wall_time_s") and r.get("n_epochs")]
    if not values:
        return "—"
    text = f"{sum(values) / len(values):.1f}"
    if max(values) > SPREAD_SHOWN * min(values):
        text += f" ({min(values):.1f}-{max(values):.1f})"
    return text


def table(long_runs, capped_runs, ours="SIEOUG", split="test"):
    """The Markdown lines of the table and of the comparison."""
    models = order_models(list(long_runs))
    lines = [
        "| Model | seeds | best epoch / epochs run | "
        + " | ".join(f"{d} {m.replace('hit', 'HR').replace('ndcg', 'NDCG')}" for d, m in COLUMNS)
        + " | target NDCG@10 at the short cap (same seeds) | s per epoch |",
        "|---|---:|---|" + "---:|" * (len(COLUMNS) + 2),
    ]
    for model in models:
        runs = long_runs[model]
        seeds = sorted(runs)
        epochs = ", ".join(f"{runs[s]['best_epoch']}/{runs[s]['n_epochs']}" for s in seeds)
        cells = [mean_std_text(cell_stats([value_of(runs[s], d, split, m) for s in seeds])) for d, m in COLUMNS]
        capped = capped_runs.get(model, {})
        short = [value_of(capped[s], "target", split, "ndcg@10") for s in seeds if s in capped]
        short_cell = mean_std_text(cell_stats(short)) + (
            "" if len(short) == len(seeds) else f" ({len(short)} of the seeds)"
        )
        lines.append(
            f"| {model} | {len(seeds)} | {epochs} | "
            + " | ".join(cells)
            + f" | {short_cell} | {seconds_per_epoch(runs)} |"
        )
    comparison = []
    if ours in long_runs:
        for model in models:
            if model == ours:
                continue
            parts = []
            for d, m in COLUMNS:
                a = {s: value_of(r, d, split, m) for s, r in long_runs[ours].items()}
                b = {s: value_of(r, d, split, m) for s, r in long_runs[model].items()}
                both = sorted(set(a) & set(b))
                if not both:
                    continue
                mean_a = sum(a[s] for s in both) / len(both)
                mean_b = sum(b[s] for s in both) / len(both)
                test = paired_tests(a, b)
                t_p = test["t_p"]
                p = "" if t_p is None else ", p < 0.001" if t_p < 0.001 else f", p = {t_p:.3f}"
                parts.append(f"{d} {m} {gain(mean_a, mean_b):+.1f}% (n = {len(both)}{p})")
            if parts:
                comparison.append(f"- {ours} vs {model}: " + "; ".join(parts))
    return lines, comparison


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--long", nargs="+", required=True, help="results file(s) of the long-cap runs")
    parser.add_argument("--capped", nargs="+", required=True, help="results file(s) of the short-cap (grid) runs")
    parser.add_argument("--task", required=True)
    parser.add_argument("--k_u", type=float, required=True)
    parser.add_argument("--ours", default="SIEOUG", help="the model compared with the others")
    parser.add_argument("--truncated", nargs="+", default=[], help="results file(s) of runs ended before their cap")
    args = parser.parse_args(argv)
    long_runs = runs_of(args.long, args.task, args.k_u)
    long_runs.update(truncated_runs_of(args.truncated, args.task, args.k_u))
    if not long_runs:
        parser.error(f"{' '.join(args.long)}: no finished runs of task {args.task!r} at K_u = {args.k_u}")
    lines, comparison = table(long_runs, runs_of(args.capped, args.task, args.k_u), ours=args.ours)
    print("\n".join(lines))
    if comparison:
        print()
        print("\n".join(comparison))


if __name__ == "__main__":
    main()
