"""Every model's per-epoch validation curves of both domains, from a harness results file.

    python benchmarks/plot_curves.py benchmarks/results/curves_demo/runs.jsonl \
        --out benchmarks/results/curves_demo/all_models.png

One panel per domain (validation NDCG@10 of every run in the file, one line per model and seed),
with the epoch where the trainer's early-stopping rule (``--patience`` evaluations without a new
best in either domain, not before ``--min-epochs``) would have stopped each run and the epoch each
domain would then have selected, also printed: the figure behind the
protocol's patience and minimum epochs (docs/results.md, "Protocol").
"""

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def domain_curve(record, domain):
    """Validation NDCG@10 per epoch of one domain ('target' or 'source') of a run record."""
    history = record.get("valid_history") or []
    if domain == "target":
        return [h["ndcg@10"] for h in history]
    return [h["source"]["ndcg@10"] for h in history if "source" in h]


def last_improvements(curve):
    """1-based epoch of the best value so far, at each epoch of a curve."""
    best, best_epoch, out = float("-inf"), 0, []
    for epoch, value in enumerate(curve, start=1):
        if value > best:
            best, best_epoch = value, epoch
        out.append(best_epoch)
    return out


def stop_epoch(curves, patience, min_epochs):
    """The trainer's rule over both domains: stop at the first epoch (never before
    ``min_epochs``) where neither domain has improved for ``patience`` evaluations."""
    marks = [last_improvements(c) for c in curves if c]
    n = min(len(m) for m in marks)
    for epoch in range(1, n + 1):
        if epoch >= min_epochs and all(epoch - m[epoch - 1] >= patience for m in marks):
            return epoch
    return n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", help="JSON-lines results file of runs trained without early stopping")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--patience", type=int, default=30)
    parser.add_argument("--min-epochs", type=int, default=50)
    args = parser.parse_args(argv)
    with open(args.results, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for axis in axes:
        axis.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    stops = [
        stop_epoch([domain_curve(r, d) for d in ("target", "source")], args.patience, args.min_epochs) for r in records
    ]
    for axis, domain in zip(axes, ("target", "source")):
        for record, stop in zip(records, stops):
            curve = domain_curve(record, domain)
            if not curve:
                continue
            selected = last_improvements(curve)[stop - 1]
            (line,) = axis.plot(range(1, len(curve) + 1), curve, lw=1.1, label=record["model"])
            axis.plot([selected], [curve[selected - 1]], "o", color=line.get_color(), ms=4)
            print(
                f"{domain:6s} {record['model']:14s} seed {record['seed']}: best {max(curve):.4f} at "
                f"{curve.index(max(curve)) + 1}; the rule stops at {stop}, selects {selected} "
                f"({curve[selected - 1]:.4f})"
            )
        axis.set_title(f"{domain} (dots: epoch selected under patience {args.patience}, min {args.min_epochs})")
        axis.set_xlabel("epoch")
        axis.set_ylabel("validation NDCG@10")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
