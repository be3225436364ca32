"""Benchmark harness: grids of models x tasks x seeds, Table 1 reports and plots.

``python -m sieoug_recbole.benchmark run | report | plot`` (docs/benchmark.md). Modules:
:mod:`.grid` (specs and run identity), :mod:`.runner` (one worker process per run, results
as JSON lines), :mod:`.records` (reading and selecting results), :mod:`.report` (Table 1),
:mod:`.plots` (K_u, per-epoch and sensitivity plots), :mod:`.paper` (the paper's Table 1).
"""

from sieoug_recbole.benchmark.grid import expand, load_grid, overrides_hash, run_key, table1_models
from sieoug_recbole.benchmark.records import load_records, select
from sieoug_recbole.benchmark.report import build_report, write_report
from sieoug_recbole.benchmark.runner import run_grid, run_one

__all__ = [
    "table1_models",
    "expand",
    "load_grid",
    "overrides_hash",
    "run_key",
    "load_records",
    "select",
    "build_report",
    "write_report",
    "run_grid",
    "run_one",
]
