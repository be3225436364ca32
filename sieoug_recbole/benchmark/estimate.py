"""How long the runs a grid still has to do will take, from the runs already in its results file.

A run to do is estimated by the median time of the finished runs of the same model and
overrides. Given the host the runs will run on (its ``host_id``), that host's runs are used
when there are any (hosts differ more than tasks do: the same model can take twice the time per
epoch on another machine), else every host's; among those, the runs on the same task and K_u
when there are such runs, else on any task of the file. Runs without such a record are counted
apart, never guessed.
"""

import statistics

from sieoug_recbole.benchmark.grid import run_key
from sieoug_recbole.benchmark.records import finished
from sieoug_recbole.benchmark.runner import describe


def _time_of(record):
    """A finished run's seconds: the whole worker when recorded, else training and evaluation."""
    return record.get("process_time_s") or record.get("wall_time_s")


def _timed_runs(records):
    """(run key, host id or None, seconds) of each finished run that has a time, keyed once for
    all specs."""
    return [(run_key(r), r.get("host_id"), _time_of(r)) for r in finished(records) if _time_of(r)]


def _median_of(spec, timed, host=None):
    model, task, k_u, _, overrides = run_key(spec)
    same_overrides = [(key, at, seconds) for key, at, seconds in timed if key[0] == model and key[4] == overrides]
    same_host = [run for run in same_overrides if host is not None and run[1] == host]
    runs = same_host or same_overrides
    same_task = [seconds for key, _, seconds in runs if key[1:3] == (task, k_u)]
    times = same_task or [seconds for _, _, seconds in runs]
    if not times:
        return None
    return statistics.median(times), len(times), bool(same_task), bool(same_host)


def run_seconds(spec, records, host=None):
    """(median seconds, how many runs it comes from, whether they share the spec's task and
    K_u, whether they ran on ``host``) for one spec, or None when no finished run of its model
    and overrides has a time. ``host``: the ``host_id`` of the machine the run will run on."""
    return _median_of(spec, _timed_runs(records), host)


def duration_text(seconds):
    """'42 min' below two hours, else '3.4 h'."""
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def estimate_lines(todo, records, jobs=None, host=None):
    """One line per run to do (its estimate and where it comes from) and a total line: the sum,
    and with ``jobs`` runs in parallel a lower bound of the wall clock (the sum over ``jobs``, at
    least the longest run). ``host``: the ``host_id`` of the machine the runs will run on (its
    own runs are preferred), or None for every host alike."""
    timed = _timed_runs(records)
    lines, times, unknown, on_host = [], [], [], 0
    for spec in todo:
        found = _median_of(spec, timed, host)
        if found is None:
            unknown.append(spec["model"])
            continue
        seconds, n, same_task, same_host = found
        where = "this task and K_u" if same_task else "other tasks or K_u"
        if host is not None:
            where = ("this host, " if same_host else "other hosts, ") + where
        lines.append(f"  {describe(spec)}: ~{duration_text(seconds)} (median of {n} run(s), {where})")
        times.append(seconds)
        on_host += same_host
    summary = f"estimated: {len(times)} of {len(todo)} run(s)"
    if times:
        summary += f", {duration_text(sum(times))} of runs"
        if jobs and jobs > 1:
            summary += f", at least {duration_text(max(sum(times) / jobs, max(times)))} with --jobs {jobs}"
        if host is None:
            summary += " (the host's speed is not accounted for)"
        else:
            summary += f" ({on_host} of {len(times)} from this host's own runs)"
    if unknown:
        summary += f"; no earlier run of {', '.join(sorted(set(unknown)))} with these overrides in the results file"
    return lines + [summary]
