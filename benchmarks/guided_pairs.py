"""What SIEOUG's guidance adds to other models: every ``X+GOUM`` against its ``X``, paired over seeds.

    python benchmarks/guided_pairs.py --results benchmarks/results/table1/runs.jsonl
    python benchmarks/guided_pairs.py --results benchmarks/results/curves_demo/runs.jsonl

One row per (task, K_u, X) with finished runs of both X and X+GOUM (also SIEOUG against
SIEOUG-O, the same comparison inside SIEOUG): the seeds both have, the relative difference of
the means of test NDCG@10 and HR@10 on each domain with a two-sided paired t-test (a p-value
needs two seeds or more), the same difference on validation (what selection may look at), and
GOUM's rate of putting a de-linked user's true counterpart in its top 10 at the best epoch
against chance (batch plan), where the run recorded it.

A second table pools each pair over every K_u and seed it has (one (K_u, seed) cell is one
pair of runs): the change as the geometric mean of the per-cell ratios, a one-sample t-test of
the log ratios against zero, and how many cells the guided model lost. It answers "does the
guidance help this model anywhere" when each K_u alone has too few seeds for a test.

``--plot guided_pairs.png`` draws the same comparison: one dot per (K_u, seed) pair of runs,
the change of test NDCG@10 in %, target and source side by side.
"""

import argparse
import os

import numpy as np
from scipy import stats

from sieoug_recbole.benchmark.grid import guided_base, norm_k_u
from sieoug_recbole.benchmark.plots import agg_pyplot
from sieoug_recbole.benchmark.records import load_many, select
from sieoug_recbole.benchmark.report import differences_vary, k_u_label, paired_tests, same_seed_gain, value_of

#: pairs named outside the "X+GOUM" rule: (with guidance, without)
EXTRA_PAIRS = [("SIEOUG", "SIEOUG-O")]


def runs_by_cell(records):
    """{(task, K_u): {model: {seed: record}}} of the finished non-sweep runs (one override set a model)."""
    cells = {}
    for r in select(records):
        cells.setdefault((r["task"], norm_k_u(r.get("k_u"))), {}).setdefault(r["model"], {})[r["seed"]] = r
    return cells


def guided_pairs_of(models):
    """(guided, plain) pairs present among the model names."""
    pairs = [(m, guided_base(m, models)) for m in sorted(models) if guided_base(m, models)]
    return pairs + [(on, off) for on, off in EXTRA_PAIRS if on in models and off in models]


def paired_runs(records):
    """(task, K_u, guided, plain, guided runs by seed, plain runs by seed) per cell and pair, cells in order."""
    for (task, k_u), models in sorted(runs_by_cell(records).items(), key=lambda cell: cell[0]):
        for on, off in guided_pairs_of(models):
            yield task, k_u, on, off, models[on], models[off]


def common_values(on, off, domain, split, metric):
    """({seed: guided value}, {seed: plain value}) over the seeds where both runs have the metric."""
    a = {s: value_of(r, domain, split, metric) for s, r in on.items()}
    b = {s: value_of(r, domain, split, metric) for s, r in off.items()}
    seeds = [s for s in set(a) & set(b) if a[s] is not None and b[s] is not None]
    return {s: a[s] for s in seeds}, {s: b[s] for s in seeds}


def difference(on, off, domain, split, metric):
    """(relative difference of the means in %, paired t-test p or None, n) over the common seeds."""
    a, b = common_values(on, off, domain, split, metric)
    return same_seed_gain(a, b), paired_tests(a, b)["t_p"], len(a)


def _cell(diff, p):
    if diff is None:
        return "—"
    return f"{diff:+.1f}%" + ("" if p is None else f" (p {p:.2g})")


def hidden_link_rate(runs):
    """'top-10 rate (chance)' of the batch plan at the best epoch, averaged over the runs that have it."""
    best = [((r.get("link_diagnostics") or {}).get("best") or {}) for r in runs.values()]
    pairs = [(b["batch_top10"], b["batch_chance_top10"]) for b in best if "batch_top10" in b]
    if not pairs:
        return "—"
    top, chance = np.mean(pairs, axis=0)
    return f"{top:.3f} ({chance:.3f})"


COLUMNS = [("target", "ndcg@10"), ("target", "hit@10"), ("source", "ndcg@10"), ("source", "hit@10")]


def table(records):
    """The Markdown lines: one row per guided/plain pair and cell."""
    lines = [
        "| task | K_u | with guidance | without | seeds | "
        + " | ".join(f"test {d} {m.replace('hit', 'HR').replace('ndcg', 'NDCG')}" for d, m in COLUMNS)
        + " | valid target NDCG@10 | valid source NDCG@10 | top-10 of hidden links at best (chance) |",
        "|---|---:|---|---|---:|" + "---:|" * (len(COLUMNS) + 2) + "---|",
    ]
    for task, k_u, on, off, on_runs, off_runs in paired_runs(records):
        cells = [difference(on_runs, off_runs, d, "test", m) for d, m in COLUMNS]
        cells += [difference(on_runs, off_runs, d, "valid", "ndcg@10") for d in ("target", "source")]
        n = max(c[2] for c in cells)
        if n == 0:
            continue
        row = [task, f"{100 * k_u:g}%", on, off, str(n)] + [_cell(c[0], c[1]) for c in cells]
        lines.append("| " + " | ".join(row + [hidden_link_rate(on_runs)]) + " |")
    return lines


POOLED_COLUMNS = [("test", "target"), ("valid", "target"), ("test", "source"), ("valid", "source")]


def log_ratios(on, off, domain, split, metric="ndcg@10"):
    """log(guided / plain) of every seed both runs have a positive value for."""
    a, b = common_values(on, off, domain, split, metric)
    return [float(np.log(a[s] / b[s])) for s in a if a[s] > 0 and b[s] > 0]


def pooled_cell(ratios):
    """'change (p, lost k/n)' over the pooled cells: geometric-mean ratio, t-test of the log ratios."""
    if not ratios:
        return "—"
    text = f"{100 * np.expm1(np.mean(ratios)):+.1f}%"
    lost = sum(r < 0 for r in ratios)
    if differences_vary(np.asarray(ratios)):
        text += f" (p {stats.ttest_1samp(ratios, 0.0).pvalue:.2g}, lower in {lost}/{len(ratios)})"
    return text


def pooled_table(records):
    """The Markdown lines: one row per (task, guided/plain pair), pooled over its K_u and seeds."""
    lines = [
        "| task | with guidance | without | K_u | runs paired | "
        + " | ".join(f"{split} {domain} NDCG@10" for split, domain in POOLED_COLUMNS)
        + " |",
        "|---|---|---|---|---:|" + "---:|" * len(POOLED_COLUMNS),
    ]
    by_pair = {}
    for task, k_u, on, off, on_runs, off_runs in paired_runs(records):
        by_pair.setdefault((task, on, off), []).append((k_u, on_runs, off_runs))
    for (task, on, off), cells in sorted(by_pair.items()):
        ratios = {
            column: [x for _, a, b in cells for x in log_ratios(a, b, column[1], column[0])]
            for column in POOLED_COLUMNS
        }
        n = max(len(r) for r in ratios.values())
        if n == 0:
            continue
        k_us = ", ".join(f"{100 * k_u:g}%" for k_u in sorted(k for k, _, _ in cells))
        row = [task, on, off, k_us, str(n)] + [pooled_cell(ratios[c]) for c in POOLED_COLUMNS]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def percent_changes(records, domain, split="test", metric="ndcg@10"):
    """{(task, guided, plain): {K_u: [100 * (guided / plain - 1) per common seed, by seed]}}."""
    out = {}
    for task, k_u, on, off, on_runs, off_runs in paired_runs(records):
        a, b = common_values(on_runs, off_runs, domain, split, metric)
        changes = [100 * (a[s] / b[s] - 1) for s in sorted(a) if b[s] > 0]
        if changes:
            out.setdefault((task, on, off), {})[k_u] = changes
    return out


def plot(records, path):
    """A PNG: per pair and K_u, each seed's change of test NDCG@10, target and source panels."""
    plt = agg_pyplot()
    domains = ("target", "source")
    changes = {d: percent_changes(records, d) for d in domains}
    pairs = sorted(changes["target"].keys() | changes["source"].keys())
    k_us = sorted({k for d in domains for per_k in changes[d].values() for k in per_k})
    colours = dict(zip(k_us, plt.get_cmap("viridis")(np.linspace(0.1, 0.8, len(k_us)))))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.55 * len(pairs) + 1.6), sharey=True)
    width = 0.6 / max(len(k_us), 1)
    for ax, domain in zip(axes, domains):
        for row, pair in enumerate(pairs):
            for i, k_u in enumerate(k_us):
                values = changes[domain].get(pair, {}).get(k_u, [])
                y = row + (i - (len(k_us) - 1) / 2) * width
                label = k_u_label(k_u) if row == 0 else None
                ax.scatter(values, [y] * len(values), color=colours[k_u], s=22, label=label, zorder=3)
                if values:
                    ax.plot([np.mean(values)] * 2, [y - width / 2, y + width / 2], color=colours[k_u], lw=2)
        ax.axvline(0, color="grey", lw=1)
        ax.set_title(f"{domain}: test NDCG@10, guided vs plain")
        ax.set_xlabel("change (%); dot = one seed, bar = mean")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(pairs)), [f"{on} vs {off}" for _, on, off in pairs])
    axes[0].invert_yaxis()
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)  # outside: no dot hidden
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", nargs="+", required=True, help="JSON-lines results file(s)")
    parser.add_argument("--plot", metavar="PNG", help="also draw the per-seed changes to this PNG file")
    args = parser.parse_args(argv)
    missing = [path for path in args.results if not os.path.isfile(path)]
    if missing:
        parser.error(f"{', '.join(missing)}: no such results file")
    records = load_many(args.results)
    lines = table(records)
    if len(lines) == 2:
        parser.error(f"{' '.join(args.results)}: no model has finished runs both with and without guidance")
    print("\n".join(lines))
    print("\nPooled over K_u and seeds (geometric mean of the per-run ratios; t-test of the log ratios):\n")
    print("\n".join(pooled_table(records)))
    if args.plot:
        plot(records, args.plot)


if __name__ == "__main__":
    main()
