"""How long the runs a grid still has to do will take, from the runs already in its results file.

A run to do is estimated by the median time of the finished runs of the same model and
overrides (the same protocol), on the same task and K_u when there are such runs, else on any
task of the file. Runs without such a record are counted apart, never guessed.
"""

import statistics

from sieoug_recbole.benchmark.grid import norm_k_u, overrides_hash
from sieoug_recbole.benchmark.runner import describe


def _seconds(record):
    """A finished run's time: the whole worker when recorded, else training and evaluation."""
    return record.get("process_time_s") or record.get("wall_time_s")


def run_seconds(spec, records):
    """(median seconds, how many runs it comes from, whether they share the spec's task and
    K_u) for one spec, or None when no finished run of its model and overrides has a time."""
    same_protocol = [
        r
        for r in records
        if r.get("status") == "ok"
        and r.get("model") == spec["model"]
        and r.get("overrides_hash", overrides_hash(r.get("overrides") or {})) == overrides_hash(spec["overrides"])
        and _seconds(r)
    ]
    same_task = [
        r
        for r in same_protocol
        if r.get("task") == spec["task"] and norm_k_u(r.get("k_u")) == norm_k_u(spec.get("k_u"))
    ]
    runs = same_task or same_protocol
    if not runs:
        return None
    return statistics.median(_seconds(r) for r in runs), len(runs), bool(same_task)


def duration_text(seconds):
    """'42 min' below two hours, else '3.4 h'."""
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def estimate_lines(todo, records, jobs=1):
    """One line per run to do (its estimate and where it comes from) and a total line: the sum,
    and the wall clock with ``jobs`` runs in parallel (the sum over ``jobs``: runs of unequal
    length make it a lower bound)."""
    lines, total, unknown = [], 0.0, []
    for spec in todo:
        found = run_seconds(spec, records)
        if found is None:
            unknown.append(spec["model"])
            continue
        seconds, n, same_task = found
        where = "this task and K_u" if same_task else "other tasks or K_u"
        source = f"median of {n} run(s), {where}"
        lines.append(f"  {describe(spec)}: ~{duration_text(seconds)} ({source})")
        total += seconds
    known = len(todo) - len(unknown)
    summary = f"estimated: {known} of {len(todo)} run(s), {duration_text(total)} of runs"
    if jobs > 1:
        summary += f", at least {duration_text(total / jobs)} with --jobs {jobs}"
    if unknown:
        summary += f"; no earlier run of {', '.join(sorted(set(unknown)))} with these overrides in the results file"
    return lines + [summary + " (the host's speed is not accounted for)"]
