"""PNG plots from the results file (matplotlib, Agg backend).

- :func:`plot_k_u`: metric vs K_u, one line per model, error bars = std over seeds; one figure
  per task, a row per domain and a column per metric (``ku_<task>.png``).
- :func:`plot_curves`: validation metrics per epoch of ours and the best baseline, mean over
  seeds with a ±std band (paper Fig. 6; ``curves_<task>_ku<K_u>.png``). The trainer validates
  the target domain only, so these are target-domain curves.
- :func:`plot_sensitivity`: metric vs one config key over runs that set it (paper Fig. 7-8,
  e.g. from ``run --sweep guide_lambda=...``; ``sensitivity_<key>.png``).
"""

import math
import os
import re

import numpy as np

from sieoug_recbole.benchmark.grid import FAMILY_PREFIX, family_of, guided_base, is_family, norm_k_u, overrides_hash
from sieoug_recbole.benchmark.records import finished, order_models
from sieoug_recbole.benchmark.report import DOMAINS, k_u_label, metric_label, value_of


def agg_pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _safe(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))


def _mean_std(values):
    array = np.asarray(values, dtype=float)
    return float(array.mean()), (float(array.std(ddof=1)) if len(array) > 1 else 0.0)


def model_styles(models):
    """{model: errorbar keywords}: a colour of its own for each model (tab20, then tab20b), and for
    ``X+GOUM`` X's colour with a hollow square marker and a dashed line, so that a guided model
    reads as its base model's twin."""
    from matplotlib import colormaps

    palette = list(colormaps["tab20"].colors) + list(colormaps["tab20b"].colors)
    bases = [m for m in models if guided_base(m, models) is None]
    colours = {m: palette[i % len(palette)] for i, m in enumerate(bases)}
    styles = {m: {"color": colours[m], "marker": "o", "linestyle": "-"} for m in bases}
    for m in models:
        if m not in styles:
            colour = colours[guided_base(m, models)]
            styles[m] = {"color": colour, "marker": "s", "markerfacecolor": "none", "linestyle": "--"}
    return styles


def plot_k_u(runs, out, metrics=("hit@10", "ndcg@10"), split="test", prefix=FAMILY_PREFIX):
    """Metric vs K_u per model (error bars: std over seeds); one PNG per task."""
    plt = agg_pyplot()
    written = []
    tasks = list(dict.fromkeys(r["task"] for r in runs if r.get("k_u") is not None))
    for task in tasks:
        task_runs = [r for r in runs if r["task"] == task and r.get("k_u") is not None]
        domains = [d for d in DOMAINS if any(value_of(r, d, split, m) is not None for r in task_runs for m in metrics)]
        if not domains:
            continue
        models = order_models([r["model"] for r in task_runs], prefix)
        styles = model_styles(models)
        fig, axes = plt.subplots(
            len(domains), len(metrics), squeeze=False, figsize=(5 * len(metrics), 3.6 * len(domains))
        )
        for row, domain in enumerate(domains):
            for col, metric in enumerate(metrics):
                ax = axes[row][col]
                for index, model in enumerate(models):
                    dodge = (index - (len(models) - 1) / 2) * 0.004  # keep error bars apart
                    points = {}
                    for r in task_runs:
                        v = value_of(r, domain, split, metric)
                        if r["model"] == model and v is not None:
                            points.setdefault(norm_k_u(r["k_u"]), []).append(v)
                    if not points:
                        continue
                    xs = sorted(points)
                    stats = [_mean_std(points[x]) for x in xs]
                    ax.errorbar(
                        [x + dodge for x in xs],
                        [s[0] for s in stats],
                        yerr=[s[1] for s in stats],
                        capsize=3,
                        label=model,
                        **styles[model],
                        linewidth=2.2 if model == prefix else 1.2,
                    )
                ax.set_xlabel("K_u (overlapped user ratio)")
                ax.set_ylabel(f"{metric_label(metric)} ({split})")
                name = next(
                    (r.get("domains", {}).get(domain) for r in task_runs if (r.get("domains") or {}).get(domain)), None
                )
                short = str(name).rsplit("_", 1)[-1] if name else domain
                ax.set_title(f"{task}: {domain} domain" + (f" ({short})" if short != domain else ""))
                ax.grid(alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="center right", fontsize=8)
            fig.tight_layout(rect=(0, 0, 0.85, 1))
        path = os.path.join(out, f"ku_{_safe(task)}.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def _histories(runs, model, metric):
    """Per seed the list (epoch, value) of the validation history of ``metric``."""
    curves = []
    for r in runs:
        if r["model"] != model:
            continue
        step = int(r.get("eval_step") or 1)
        points = [
            ((i + 1) * step, entry[metric]) for i, entry in enumerate(r.get("valid_history") or []) if metric in entry
        ]
        if points:
            curves.append(points)
    return curves


def plot_curves(
    runs,
    out,
    ours=FAMILY_PREFIX,
    metrics=("hit@10", "ndcg@10"),
    select_metric="ndcg@10",
    split="test",
    models=None,
    prefix=None,
):
    """Validation metrics per epoch of ``ours`` and the best baseline (by mean target-domain
    ``select_metric`` on ``split``; baselines: the models outside the family ``prefix``, by
    default :func:`~sieoug_recbole.benchmark.grid.family_of` ``ours``) for each (task, K_u);
    ``models`` replaces that choice."""
    prefix = family_of(ours) if prefix is None else prefix
    plt = agg_pyplot()
    from matplotlib.ticker import MaxNLocator

    written = []
    groups = {}
    for r in runs:
        groups.setdefault((r["task"], norm_k_u(r.get("k_u"))), []).append(r)
    for (task, k_u), group in groups.items():
        chosen = list(models or [])
        if not chosen:
            means = {}
            for r in group:
                v = value_of(r, "target", split, select_metric)
                if v is not None and not is_family(r["model"], prefix):
                    means.setdefault(r["model"], []).append(v)
            if means:
                chosen.append(max(means, key=lambda m: np.mean(means[m])))
            chosen.append(ours)
        chosen = [m for m in chosen if _histories(group, m, metrics[0])]
        if not chosen:
            continue
        fig, axes = plt.subplots(1, len(metrics), squeeze=False, figsize=(5 * len(metrics), 3.6))
        for col, metric in enumerate(metrics):
            ax = axes[0][col]
            for model in chosen:
                curves = _histories(group, model, metric)
                by_epoch = {}
                for curve in curves:
                    for epoch, value in curve:
                        by_epoch.setdefault(epoch, []).append(value)
                epochs = sorted(by_epoch)
                stats = [_mean_std(by_epoch[e]) for e in epochs]
                mean = np.array([s[0] for s in stats])
                std = np.array([s[1] for s in stats])
                (line,) = ax.plot(epochs, mean, label=f"{model} ({len(curves)} seed(s))")
                ax.fill_between(epochs, mean - std, mean + std, alpha=0.2, color=line.get_color())
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(f"validation {metric_label(metric)} (target)")
            ax.set_title(f"{task} {k_u_label(k_u)}".strip())
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        suffix = "" if k_u is None else f"_ku{k_u:g}"
        path = os.path.join(out, f"curves_{_safe(task)}{suffix}.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sensitivity_series(records, key, metrics=("hit@10", "ndcg@10"), split="test", models=None):
    """{(model, task, k_u, rest hash): {value: {(domain, metric): [per-seed values]}}} over the
    finished runs whose overrides set ``key`` (sweeps included); ``rest hash`` is the hash of
    the other overrides, so runs differing elsewhere are separate series."""
    series = {}
    for r in finished(records):
        overrides = r.get("overrides") or {}
        if key not in overrides or (models and r["model"] not in models):
            continue
        rest = {k: v for k, v in overrides.items() if k != key}
        name = (r["model"], r["task"], norm_k_u(r.get("k_u")), overrides_hash(rest))
        value = overrides[key]
        value = value if _is_number(value) else str(value)
        points = series.setdefault(name, {}).setdefault(value, {})
        for domain in DOMAINS:
            for metric in metrics:
                v = value_of(r, domain, split, metric)
                if v is not None:
                    points.setdefault((domain, metric), []).append(v)
    return series


def plot_sensitivity(records, key, out, metrics=("hit@10", "ndcg@10"), split="test", models=None):
    """Metric vs ``key``: a row per (task, K_u), a column per metric, a line per model and
    domain (error bars: std over seeds). Log x axis for positive values spanning >= 100x."""
    plt = agg_pyplot()
    series = sensitivity_series(records, key, metrics, split, models)
    if not series:
        return []
    panels = list(dict.fromkeys((task, k_u) for _, task, k_u, _ in series))
    rests = {}
    for model, task, k_u, rest in series:
        rests.setdefault((model, task, k_u), []).append(rest)
    all_values = [v for points in series.values() for v in points]
    numeric = all(_is_number(v) for v in all_values)
    categories = sorted({str(v) for v in all_values}) if not numeric else None
    fig, axes = plt.subplots(len(panels), len(metrics), squeeze=False, figsize=(5 * len(metrics), 3.6 * len(panels)))
    for row, (task, k_u) in enumerate(panels):
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            for (model, s_task, s_k_u, rest), points in series.items():
                if (s_task, s_k_u) != (task, k_u):
                    continue
                tag = f" [{rest[:6]}]" if len(rests[(model, task, k_u)]) > 1 else ""
                for domain in DOMAINS:
                    xs = [x for x in points if (domain, metric) in points[x]]
                    if not xs:
                        continue
                    xs = sorted(xs) if numeric else sorted(xs, key=lambda v: categories.index(str(v)))
                    stats = [_mean_std(points[x][(domain, metric)]) for x in xs]
                    positions = xs if numeric else [categories.index(str(x)) for x in xs]
                    ax.errorbar(
                        positions,
                        [s[0] for s in stats],
                        yerr=[s[1] for s in stats],
                        marker="o",
                        capsize=3,
                        linestyle="-" if domain == "target" else "--",
                        label=f"{model} {domain}{tag}",
                    )
            if numeric:
                xs_all = [v for v in all_values if v > 0]
                if xs_all and len(xs_all) == len(all_values) and max(xs_all) / min(xs_all) >= 100:
                    ax.set_xscale("log")
            else:
                ax.set_xticks(range(len(categories)))
                ax.set_xticklabels(categories)
            ax.set_xlabel(key)
            ax.set_ylabel(f"{metric_label(metric)} ({split})")
            ax.set_title(f"{task} {k_u_label(k_u)}".strip())
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out, f"sensitivity_{_safe(key)}.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
