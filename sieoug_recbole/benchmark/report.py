"""A results grid as tables (Table 1's layout by default): mean ± std over seeds, best per
column, the gains of ``ours`` and paired tests against the best baseline.

Rows are models; columns are (task, K_u, domain) x metric, as in the paper (one table per
task, K_u ascending, the target domain then the source domain). Statistics:

- mean and sample standard deviation (ddof = 1) over the seeds of a cell; a cell with one
  seed shows its mean only;
- best per column: the highest mean (ties all marked) among the cells of two seeds or more
  when the column has any, bold in Markdown, ``*`` in CSV;
- every comparison of ``ours`` (default SIEOUG) with another model uses the seeds both have:
  the relative gain ``100 * (ours - base) / base`` on the two models' means over those seeds,
  and the paired tests ``scipy.stats.ttest_rel`` (two-sided, needs 2 seeds) and
  ``scipy.stats.wilcoxon`` (from 6 seeds on). A baseline with fewer seeds is thus compared on
  its own seeds, never its one-seed value against ours' three-seed mean;
- best baseline per column: among models outside ours' family (``family_of``: SIEOUG and
  SIEOUG-* for ours in it, else ours and ``<ours>-*``), the one ours gains least over (the best
  mean, when every model has ours' seeds; the best mean outright when ours has no run in the
  column);
- gains over the reference (default LightGCN) and over the best baseline; where a column maps
  onto the paper's Table 1 the paper's own gains over the same models are shown beside them.
"""

import csv
import math
import os
import warnings

import numpy as np

from sieoug_recbole.benchmark.grid import FAMILY_PREFIX, GridError, family_of, is_family, norm_k_u
from sieoug_recbole.benchmark.paper import paper_value
from sieoug_recbole.benchmark.records import order_models

DOMAINS = ("target", "source")
METRIC_NAMES = {"hit": "HR", "ndcg": "NDCG", "recall": "Recall", "mrr": "MRR", "precision": "Precision"}
TIE = 1e-12


def metric_label(metric):
    name, _, k = metric.partition("@")
    return f"{METRIC_NAMES.get(name.lower(), name)}@{k}" if k else METRIC_NAMES.get(name, name)


def k_u_label(k_u):
    return "" if k_u is None else f"K_u={100 * k_u:g}%"


def value_of(record, domain, split, metric):
    block = ((record.get("metrics") or {}).get(domain) or {}).get(split) or {}
    value = block.get(metric)
    return None if value is None else float(value)


def cell_stats(values):
    """{n, mean, std} of a list of floats (std: ddof = 1, None for one value)."""
    array = np.asarray(values, dtype=float)
    n = len(array)
    if n == 0:
        return {"n": 0, "mean": None, "std": None}
    return {"n": n, "mean": float(array.mean()), "std": float(array.std(ddof=1)) if n > 1 else None}


DIFFERENCE_RESOLUTION = 1e-9  # per-seed differences closer than this count as equal (metrics have 4 decimals)


def differences_vary(differences):
    """Whether a t-test over these per-seed differences means anything: two or more of them, not
    all equal (to DIFFERENCE_RESOLUTION; equal ones give an infinite or undefined t statistic)."""
    return len(differences) >= 2 and float(np.ptp(differences)) > DIFFERENCE_RESOLUTION


def paired_tests(ours, base):
    """p-values of ours vs base over the seeds both have: {n, t_p, wilcoxon_p}.

    No t-test (t_p None) when the per-seed differences do not vary: the metrics are stored to four
    decimals, so two seeds can differ by the same amount to rounding, and the t statistic is then
    infinite or undefined, not evidence.
    """
    from scipy import stats

    seeds = sorted(set(ours) & set(base))
    a = np.array([ours[s] for s in seeds], dtype=float)
    b = np.array([base[s] for s in seeds], dtype=float)
    result = {"n": len(seeds), "t_p": None, "wilcoxon_p": None}
    if differences_vary(a - b):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result["t_p"] = float(stats.ttest_rel(a, b).pvalue)
    if len(seeds) >= 6:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
        except ValueError:  # every difference is zero
            result["wilcoxon_p"] = float("nan")
    return result


def gain(ours, base):
    if ours is None or base is None or base == 0:
        return None
    return 100.0 * (ours - base) / base


def same_seed_gain(ours, base):
    """The gain of ours over base on the means over the seeds both have ({seed: value} each);
    None without a common seed."""
    seeds = set(ours) & set(base)
    if not seeds:
        return None
    return gain(float(np.mean([ours[s] for s in seeds])), float(np.mean([base[s] for s in seeds])))


def build_report(
    runs,
    metrics=("hit@10", "ndcg@10"),
    split="test",
    ours=FAMILY_PREFIX,
    reference="LightGCN",
    models=None,
    prefix=None,
):
    """The report as data: {'models', 'columns', 'cells', 'compare', 'domains'}.

    ``ours`` is the model the gains and paired tests are about, ``reference`` the other model
    its gain is given over; the baselines are the models outside the family ``prefix`` (that
    model and its ``<prefix>-*`` variants; default: :func:`family_of` ``ours``).
    ``columns``: [(task, k_u, domain, metric)]; ``cells[(model, column)]``: {n, mean, std,
    values {seed: value}, best}; ``compare[column]``: best baseline, tests and gains.
    """
    prefix = family_of(ours) if prefix is None else prefix
    tasks, values, domain_names, columns = _collect(runs, metrics, split)
    found = list(dict.fromkeys(m for m, _ in values))
    ordered = [m for m in models if m in found] if models else order_models(found, prefix)
    cells = _cells(columns, ordered, values)
    compare = {column: _compare(column, cells, ordered, ours, reference, prefix, domain_names) for column in columns}
    return {
        "models": ordered,
        "columns": columns,
        "cells": cells,
        "compare": compare,
        "domain_names": domain_names,
        "ours": ours,
        "reference": reference,
        "split": split,
        "metrics": list(metrics),
        "tasks": tasks,
        "family": prefix,
    }


def _collect(runs, metrics, split):
    """The runs' values: (tasks in order, {(model, column): {seed: value}}, {(task, k_u,
    domain): dataset name}, columns). Columns: per task, K_u ascending (None first), the
    domains with values, then the metrics."""
    tasks, k_us, present = [], {}, {}
    domain_names = {}
    values = {}
    for r in runs:
        task, k_u = r["task"], norm_k_u(r.get("k_u"))
        if task not in tasks:
            tasks.append(task)
        k_us.setdefault(task, set()).add(k_u)
        for domain in DOMAINS:
            name = (r.get("domains") or {}).get(domain)
            if name:
                domain_names.setdefault((task, k_u, domain), name)
            for metric in metrics:
                v = value_of(r, domain, split, metric)
                if v is None:
                    continue
                present.setdefault(task, set()).add(domain)
                cell = values.setdefault((r["model"], (task, k_u, domain, metric)), {})
                if int(r["seed"]) in cell:
                    raise GridError(
                        f"two runs of {r['model']} on {task} K_u={k_u} seed {r['seed']} (other "
                        "overrides or sweep values): a table cell takes one run per seed; choose "
                        "the runs with --grid / --task, or leave sweeps out"
                    )
                cell[int(r["seed"])] = v
    columns = []
    for task in tasks:
        for k_u in sorted(k_us[task], key=lambda k: (k is not None, k or 0)):
            for domain in DOMAINS:
                if domain in present.get(task, ()):
                    columns.extend((task, k_u, domain, m) for m in metrics)
    return tasks, values, domain_names, columns


def _cells(columns, ordered, values):
    """{(model, column): {n, mean, std, values, best}}; best: the highest mean of the column
    (ties all marked) among its cells of two seeds or more, when it has any (a single run is
    not set against means over seeds)."""
    cells = {}
    for column in columns:
        for model in ordered:
            vals = values.get((model, column), {})
            cells[(model, column)] = {**cell_stats(list(vals.values())), "values": vals, "best": False}
        column_cells = [cells[(m, column)] for m in ordered if cells[(m, column)]["mean"] is not None]
        contenders = [c for c in column_cells if c["n"] > 1] or column_cells
        if contenders:
            top = max(c["mean"] for c in contenders)
            for cell in contenders:
                cell["best"] = cell["mean"] >= top - TIE
    return cells


def _compare(column, cells, ordered, ours, reference, prefix, domain_names):
    """One column's comparison of ``ours``: the best baseline, the paired tests against it,
    the gains over it and over ``reference``, and the paper's gains over the same models."""
    task, k_u, domain, metric = column
    baselines = [
        (cells[(m, column)]["mean"], m)
        for m in ordered
        if not is_family(m, prefix) and cells[(m, column)]["mean"] is not None
    ]
    ours_cell = cells.get((ours, column))
    entry = {
        "best_baseline": None,
        "best_baseline_mean": None,
        "gain_best": None,
        "gain_reference": None,
        "tests": {"n": 0, "t_p": None, "wilcoxon_p": None},
        "paper_gain_reference": None,
        "paper_gain_best": None,
    }
    has_ours = bool(ours_cell and ours_cell["values"])
    gains = (
        {m: same_seed_gain(ours_cell["values"], cells[(m, column)]["values"]) for _, m in baselines} if has_ours else {}
    )
    comparable = [m for _, m in baselines if gains.get(m) is not None]
    if comparable:  # the baseline ours gains least over; first listed wins ties
        best_model = min(comparable, key=gains.get)
    elif baselines:
        best_model = max(baselines, key=lambda x: x[0])[1]  # first listed wins ties
    if baselines:
        entry["best_baseline"] = best_model
        entry["best_baseline_mean"] = cells[(best_model, column)]["mean"]
    if has_ours:
        if entry["best_baseline"]:
            entry["gain_best"] = gains.get(entry["best_baseline"])
            entry["tests"] = paired_tests(ours_cell["values"], cells[(entry["best_baseline"], column)]["values"])
        ref = cells.get((reference, column))
        if ref and ref["values"]:
            entry["gain_reference"] = same_seed_gain(ours_cell["values"], ref["values"])
    dataset = domain_names.get((task, k_u, domain))
    paper_ours = paper_value(task, dataset, k_u, ours, metric)
    entry["paper_gain_reference"] = gain(paper_ours, paper_value(task, dataset, k_u, reference, metric))
    if entry["best_baseline"]:
        entry["paper_gain_best"] = gain(paper_ours, paper_value(task, dataset, k_u, entry["best_baseline"], metric))
    return entry


# --------------------------------------------------------------------------------- rendering


def domain_label(table, task, k_u, domain):
    name = table["domain_names"].get((task, k_u, domain))
    short = str(name).rsplit("_", 1)[-1] if name else domain
    return domain if short == domain else f"{short} ({domain})"


def column_label(table, column):
    task, k_u, domain, metric = column
    parts = [domain_label(table, task, k_u, domain), k_u_label(k_u), metric_label(metric)]
    return " ".join(p for p in parts if p)


def _fmt(value, digits=4):
    return "—" if value is None else f"{value:.{digits}f}"


def mean_std_text(stats):
    """``mean ± std`` of a :func:`cell_stats` dict (the mean alone for one value, — for none)."""
    if stats["mean"] is None:
        return "—"
    return _fmt(stats["mean"]) + ("" if stats["std"] is None else f" ± {_fmt(stats['std'])}")


def _fmt_p(value):
    if value is None:
        return "—"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.3g}"


def _fmt_gain(value):
    return "—" if value is None else f"{value:+.1f}%"


def render_markdown(table, title="Table 1"):
    ours, reference = table["ours"], table["reference"]
    lines = [
        f"# {title}",
        "",
        f"Mean ± std over seeds ({table['split']} split; std with ddof=1), best per column "
        f"in **bold**. Models outside the {table['family']} family are the baselines.",
        "",
    ]
    for task in table["tasks"]:
        columns = [c for c in table["columns"] if c[0] == task]
        if not columns:
            continue
        max_n = max((table["cells"][(m, c)]["n"] for m in table["models"] for c in columns), default=0)
        lines += [
            f"## {task}",
            "",
            "| Model | " + " | ".join(column_label(table, c) for c in columns) + " |",
            "|---|" + "---:|" * len(columns),
        ]
        for model in table["models"]:
            row = []
            for column in columns:
                cell = table["cells"][(model, column)]
                if cell["mean"] is None:
                    row.append("—")
                    continue
                text = mean_std_text(cell)
                if cell["n"] != max_n:
                    text += f" (n={cell['n']})"
                row.append(f"**{text}**" if cell["best"] else text)
            if any(r != "—" for r in row):
                lines.append(f"| {model} | " + " | ".join(row) + " |")
        if ours not in table["models"]:
            lines += ["", f"({ours} has no runs here: no comparison with the baselines.)", ""]
            continue
        lines += [
            "",
            f"{ours} against the baselines ({task}):",
            "",
            "| | " + " | ".join(column_label(table, c) for c in columns) + " |",
            "|---|" + "---:|" * len(columns),
        ]
        for label, fmt in _compare_rows(ours, reference):
            lines.append(f"| {label} | " + " | ".join(fmt(table["compare"][c]) for c in columns) + " |")
        lines.append("")
    lines += [
        "p-values: paired over the seeds both models have; t = scipy.stats.ttest_rel "
        "(two-sided), Wilcoxon = scipy.stats.wilcoxon (only with 6 or more seeds). "
        "Gains are 100·(ours − base)/base on the two models' means over the seeds both have, and "
        "the best baseline is the one ours gains least over; the paper's gains use its Table 1.",
        "",
    ]
    return "\n".join(lines)


def _compare_rows(ours, reference):
    return [
        ("best baseline", lambda e: e["best_baseline"] or "—"),
        (f"{ours} gain over best baseline", lambda e: _fmt_gain(e["gain_best"])),
        (
            "p, paired t-test vs best baseline",
            lambda e: _fmt_p(e["tests"]["t_p"]) + (f" (n={e['tests']['n']})" if e["tests"]["t_p"] is not None else ""),
        ),
        ("p, Wilcoxon vs best baseline", lambda e: _fmt_p(e["tests"]["wilcoxon_p"])),
        (f"{ours} gain over {reference}", lambda e: _fmt_gain(e["gain_reference"])),
        (f"paper: {ours} gain over {reference}", lambda e: _fmt_gain(e["paper_gain_reference"])),
        (f"paper: {ours} gain over that baseline", lambda e: _fmt_gain(e["paper_gain_best"])),
    ]


def _csv_num(value, digits=6):
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.{digits}f}"


def render_csv_rows(table):
    """CSV rows: per column a ``mean`` (``*`` marks the best) and a ``std`` field; models, then
    the comparison rows (their value in the ``mean`` field)."""
    columns = table["columns"]
    header = ["model"]
    for column in columns:
        task, k_u, domain, metric = column
        base = f"{task} {k_u_label(k_u)} {domain} {metric_label(metric)}".replace("  ", " ")
        header += [f"{base} mean", f"{base} std"]
    rows = [header]
    for model in table["models"]:
        row = [model]
        for column in columns:
            cell = table["cells"][(model, column)]
            mean = _csv_num(cell["mean"])
            row += [mean + ("*" if cell["best"] and mean else ""), _csv_num(cell["std"])]
        rows.append(row)
    ours, reference = table["ours"], table["reference"]
    extra = [
        ("best baseline", lambda e: e["best_baseline"] or ""),
        (f"{ours} gain over best baseline (%)", lambda e: _csv_num(e["gain_best"], 3)),
        ("p paired t-test vs best baseline", lambda e: "" if e["tests"]["t_p"] is None else f"{e['tests']['t_p']:.6g}"),
        (
            "p Wilcoxon vs best baseline",
            lambda e: "" if e["tests"]["wilcoxon_p"] is None else f"{e['tests']['wilcoxon_p']:.6g}",
        ),
        ("paired seeds", lambda e: str(e["tests"]["n"])),
        (f"{ours} gain over {reference} (%)", lambda e: _csv_num(e["gain_reference"], 3)),
        (f"paper {ours} gain over {reference} (%)", lambda e: _csv_num(e["paper_gain_reference"], 3)),
        (f"paper {ours} gain over that baseline (%)", lambda e: _csv_num(e["paper_gain_best"], 3)),
    ]
    for label, fmt in extra:
        row = [label]
        for column in columns:
            row += [fmt(table["compare"][column]), ""]
        rows.append(row)
    return rows


def write_report(runs, out, title="Table 1", **kwargs):
    """Write ``report.md`` and ``report.csv`` under ``out``; return (table, markdown text)."""
    table = build_report(runs, **kwargs)
    os.makedirs(out, exist_ok=True)
    markdown = render_markdown(table, title)
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    with open(os.path.join(out, "report.csv"), "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(render_csv_rows(table))
    return table, markdown
