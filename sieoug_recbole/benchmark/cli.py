"""``python -m sieoug_recbole.benchmark {run,one,report,plot}`` (see docs/benchmark.md)."""

import argparse
import contextlib
import json
import os
import signal
import sys
import threading

import yaml

from sieoug_recbole.benchmark import grid as G
from sieoug_recbole.benchmark import ray_backend
from sieoug_recbole.benchmark.records import load_many, load_records, select


def _comma_list(values):
    out = []
    for value in values or []:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


def add_grid_options(parser, for_run):
    group = parser.add_argument_group("grid (a grid yaml and/or these options; options win)")
    group.add_argument("--grid", help="grid yaml: models, tasks, seeds, epochs, config, model_config, sweep")
    group.add_argument(
        "--models",
        action="append",
        metavar="A,B",
        help="models (comma-separated or repeated); default: the grid's, else " + "the registered Table 1 models"
        if for_run
        else "models to show, in this order (default: all, in Table 1 order)",
    )
    group.add_argument(
        "--task",
        action="append",
        metavar="LABEL:K_U=YAML[,YAML]",
        help="a task (repeatable), e.g. food_kitchen:0.1=properties/food_kitchen_ku10.yaml; replaces the grid's tasks",
    )
    group.add_argument(
        "--seeds",
        metavar="S1,S2",
        help=f"seeds (config key 'seed'); default: the grid's, else {','.join(map(str, G.DEFAULT_SEEDS))}",
    )
    group.add_argument("--epochs", type=int, help="train_epochs: ['BOTH:N'] for every run")
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run (yaml value; repeatable)",
    )
    group.add_argument(
        "--model-set",
        action="append",
        default=[],
        metavar="MODEL:KEY=VALUE",
        help="config override for one model (repeatable)",
    )
    group.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="one run per value (repeatable: all combinations); paper symbols "
        "lambda, eps, K, z, mu, eta stand for their config keys",
    )


def grid_from_args(args, require_tasks=True, default_models=None):
    """The grid of the command line (on top of --grid): dict with models, tasks, seeds, ..."""
    grid = G.load_grid(args.grid) if args.grid else {}
    models = (
        _comma_list(args.models)
        or grid.get("models")
        or list(default_models if default_models is not None else G.table1_models())
    )
    tasks = [G.parse_task(t) for t in args.task] if args.task else grid.get("tasks", [])
    if require_tasks and not tasks:
        raise G.GridError("no tasks: give --task LABEL:K_U=YAML or a --grid file with tasks")
    seeds = G.parse_seeds(args.seeds) if args.seeds else grid.get("seeds") or list(G.DEFAULT_SEEDS)
    config = dict(grid.get("config", {}))
    for text in args.set:
        key, value = G.parse_assignment(text)
        config[key] = value
    model_config = {m: dict(b) for m, b in grid.get("model_config", {}).items()}
    for text in args.model_set:
        model, sep, assignment = text.partition(":")
        if not sep:
            raise G.GridError(f"--model-set is MODEL:KEY=VALUE, got '{text}'")
        if model.strip() not in models:
            raise G.GridError(
                f"--model-set '{text}': {model.strip()} is not among the models run ({', '.join(models)})"
            )
        key, value = G.parse_assignment(assignment)
        model_config.setdefault(model.strip(), {})[key] = value
    sweep = dict(grid.get("sweep", {}))
    for text in args.sweep:
        key, values = G.parse_sweep(text)
        sweep[key] = values
    epochs = args.epochs if args.epochs is not None else grid.get("epochs")
    return {
        "models": models,
        "tasks": tasks,
        "seeds": seeds,
        "config": config,
        "model_config": model_config,
        "sweep": sweep,
        "epochs": epochs,
    }


def specs_of(grid):
    from sieoug_recbole.benchmark.runner import model_takes_key

    return G.expand(
        grid["models"],
        grid["tasks"],
        grid["seeds"],
        grid["config"],
        grid["model_config"],
        grid["epochs"],
        grid["sweep"],
        takes=model_takes_key if grid["sweep"] else None,
    )


def missing_data(task, overrides):
    """The first dataset file a task's yaml files point at that does not exist, with the
    yaml's prepare_command and, for a pair made from the shipped Food-Kitchen data, (source,
    target, folder) to build it: (path, command, shipped or None); None when all exist (also
    when it cannot tell)."""
    merged = {}
    for file in task["config_files"]:
        try:
            with open(file, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            return None
        for key, value in data.items():
            if key in ("source_domain", "target_domain") and isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            else:
                merged[key] = value
    for key, value in overrides.items():
        if key in ("source_domain", "target_domain") and isinstance(value, dict):
            merged.setdefault(key, {}).update(value)
        else:
            merged[key] = value
    places = {}  # domain -> (folder, dataset)
    for domain in ("source_domain", "target_domain"):
        block = merged.get(domain) or {}
        dataset = block.get("dataset")
        data_path = merged.get(f"{domain.split('_')[0]}_data_path", block.get("data_path", merged.get("data_path")))
        if not dataset or not data_path:
            return None
        places[domain] = (str(data_path), str(dataset))
    for folder, dataset in places.values():
        path = os.path.join(folder, dataset, f"{dataset}.inter")
        if not os.path.isfile(path):
            return path, merged.get("prepare_command"), _shipped_pair(places)
    return None


def _shipped_pair(places):
    """(source, target, folder) of a pair made from the shipped Food-Kitchen data, else None."""
    from sieoug_recbole.quick_start import shipped_pair_name

    (source_folder, source), (target_folder, target) = places["source_domain"], places["target_domain"]
    if source_folder != target_folder or not shipped_pair_name(source, target):
        return None
    return source, target, target_folder


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (a scheduler's stop) ends the grid like Ctrl-C: running workers are ended and
    left unrecorded, finished runs stay in the results file."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_run(args):
    if args.backend == "ray" and not args.dry_run:
        from sieoug_recbole.benchmark.ray_backend import connected

        with connected(args) as remote:  # before anything is built or run: errors come first
            return _run_grid_command(args, remote)
    return _run_grid_command(args, None)


def _run_grid_command(args, remote):
    grid = grid_from_args(args)
    for task in grid["tasks"]:
        for file in task["config_files"]:
            if not os.path.isfile(file):
                raise G.GridError(f"task '{task['label']}': config file {file} does not exist")
    import sieoug_recbole  # registers the models

    registered = sieoug_recbole.model_names()
    unknown = [m for m in grid["models"] if m not in registered]
    if unknown:
        message = f"not registered: {', '.join(unknown)} (registered models: {', '.join(registered)})"
        if args.strict:
            print(f"error: {message}", file=sys.stderr)
            return 2
        print(f"warning: {message}; skipping them", file=sys.stderr)
        grid["models"] = [m for m in grid["models"] if m in registered]
    if not grid["models"]:
        print("error: no registered model to run", file=sys.stderr)
        return 2
    kept = []
    for task in grid["tasks"]:
        missing = None if args.no_data_check else missing_data(task, grid["config"])
        if missing and missing[2]:  # a shipped pair: built here once (a single run builds it too)
            if args.dry_run:
                print(
                    f"task '{task['label']}' (K_u={task['k_u']}): {missing[0]} is built from the "
                    "shipped data when the grid runs"
                )
                missing = None
            else:
                from sieoug_recbole.quick_start import build_shipped_pair

                build_shipped_pair(*missing[2], progress=not args.no_progress)
                missing = missing_data(task, grid["config"])
        if missing:
            hint = f"; make it with: {missing[1]}" if missing[1] else ""
            print(
                f"warning: task '{task['label']}' (K_u={task['k_u']}) skipped: {missing[0]} does not exist{hint}",
                file=sys.stderr,
            )
        else:
            kept.append(task)
    grid["tasks"] = kept
    if not kept:
        print("error: no task has its data", file=sys.stderr)
        return 2
    specs = specs_of(grid)
    from sieoug_recbole.benchmark.runner import changed_warning, describe, plan, run_grid

    if args.dry_run:
        records = load_records(args.results)  # read once: a bad line is reported once
        todo, done, failed, changed = plan(specs, args.results, args.retry_failed, args.rerun_changed, records)
        if changed:
            print(changed_warning(changed, args.rerun_changed), file=sys.stderr)
        for label, group in (("done", done), ("failed (skipped)", failed), ("to run", todo)):
            for spec in group:
                print(f"{label:16s} {describe(spec)} overrides={json.dumps(spec['overrides'], sort_keys=True)}")
        print(f"{len(done)} done, {len(failed)} failed, {len(todo)} to run")
        if todo:
            from sieoug_recbole.benchmark.estimate import estimate_lines
            from sieoug_recbole.benchmark.hostinfo import host_id

            # Ray's parallelism and hosts are the cluster's
            local = args.backend == "local"
            jobs, host = (args.jobs, host_id()) if local else (None, None)
            print("\n".join(estimate_lines(todo, records, jobs=jobs, host=host)))
        return 0
    with _sigterm_interrupts():
        new = run_grid(
            specs,
            args.results,
            runs_dir=args.runs_dir,
            jobs=args.jobs,
            remote=remote,
            retry_failed=args.retry_failed,
            rerun_changed=args.rerun_changed,
            keep_checkpoints=args.keep_checkpoints,
            verbose=args.verbose,
            threads=args.threads,
            timeout=args.timeout,
            in_process=args.in_process,
            progress=not args.no_progress,
            fresh=args.fresh,
            finish=args.finish,
        )
    failed = [r for r in new if r.get("status") == "failed"]
    ended = [r for r in new if r.get("status") == "truncated"]
    if new:
        print(
            f"{len(new) - len(failed) - len(ended)} run(s) finished, {len(ended)} ended at their training state, "
            f"{len(failed)} failed -> {args.results}"
        )
    return 1 if failed else 0


def cmd_one(args):
    from sieoug_recbole.benchmark.lifeline import die_with_parent
    from sieoug_recbole.benchmark.runner import worker_main

    die_with_parent()  # a harness killed outright leaves no worker training on

    text = args.spec
    if args.spec_file:
        with open(args.spec_file, encoding="utf-8") as f:
            text = f.read()
    if not text:
        print("error: give --spec JSON or --spec-file", file=sys.stderr)
        return 2
    return worker_main(text, out=args.out, run_dir=args.run_dir, verbose=args.verbose, threads=args.threads)


def _selected_runs(args):
    records = load_many(args.results)
    if not records:
        raise G.GridError(f"no results in {', '.join(args.results)}")
    grid_specs = None
    if args.grid or args.task:
        found = list(dict.fromkeys(r["model"] for r in records))
        grid_specs = specs_of(grid_from_args(args, default_models=found))
    models = _comma_list(args.models) or None
    return records, select(records, grid_specs=grid_specs, include_sweeps=args.include_sweeps, models=models), models


def cmd_report(args):
    from sieoug_recbole.benchmark.report import write_report

    records, runs, models = _selected_runs(args)
    if not runs:
        sweeps = not args.include_sweeps and any(r.get("sweep") for r in records)
        raise G.GridError(
            "no finished run matches"
            + (" (sweep runs are left out of tables: plot them with 'plot --sensitivity KEY')" if sweeps else "")
        )
    _, markdown = write_report(
        runs,
        args.out,
        title=args.title,
        metrics=tuple(_comma_list([args.metrics])),
        split=args.split,
        ours=args.ours,
        reference=args.reference,
        models=models,
    )
    print(markdown)
    print(f"wrote {os.path.join(args.out, 'report.md')} and {os.path.join(args.out, 'report.csv')}")
    return 0


def cmd_plot(args):
    from sieoug_recbole.benchmark import plots

    records, runs, models = _selected_runs(args)
    metrics = tuple(_comma_list([args.metrics]))
    os.makedirs(args.out, exist_ok=True)
    written = []
    if not args.no_ku:
        written += plots.plot_k_u(runs, args.out, metrics, args.split, prefix=G.family_of(args.ours))
    if not args.no_curves:
        written += plots.plot_curves(
            runs,
            args.out,
            ours=args.ours,
            metrics=metrics,
            select_metric=args.curve_metric,
            split=args.split,
            models=_comma_list(args.curve_models) or None,
        )
    for key in args.sensitivity:
        key = G.resolve_key(key)
        paths = plots.plot_sensitivity(records, key, args.out, metrics, args.split, models)
        if not paths:
            print(
                f"warning: no finished run sets '{key}' in its overrides (make some with: run --sweep {key}=v1,v2,...)",
                file=sys.stderr,
            )
        written += paths
    for path in written:
        print(path)
    if not written:
        print("warning: nothing to plot", file=sys.stderr)
        return 1
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m sieoug_recbole.benchmark",
        description="Benchmark grids (paper Table 1, Fig. 6-8): run, report, plot.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a grid of models x tasks x seeds (resumable)")
    add_grid_options(run, for_run=True)
    run.add_argument("--results", required=True, help="JSON-lines results file (appended)")
    run.add_argument("--runs-dir", help="per-run folders (default: <results without .jsonl>_runs)")
    run.add_argument("--jobs", type=int, default=1, help="runs in parallel (one process each; local backend)")
    run.add_argument("--threads", type=int, default=1, help="torch / BLAS threads per run")
    run.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    restart = run.add_mutually_exclusive_group()  # --fresh would delete the state --finish ends at
    restart.add_argument(
        "--fresh",
        action="store_true",
        help="start stopped or failed runs over (by default one continues after its last finished epoch)",
    )
    restart.add_argument(
        "--finish",
        action="store_true",
        help="test every stopped run (killed or failed ones too) at the epoch its training state reached, "
        "training no further "
        "(a record with status 'truncated'; the state is kept, so the command without --finish "
        "continues the run); runs without a state are left alone",
    )
    run.add_argument(
        "--rerun-changed",
        action="store_true",
        help="rerun finished runs whose task or model yaml values changed since (the new record replaces the old)",
    )
    run.add_argument("--keep-checkpoints", action="store_true", help="keep each run's saved/ and tensorboard/")
    run.add_argument("--timeout", type=float, help="seconds before a run is killed (recorded as failed)")
    run.add_argument("--verbose", action="store_true", help="RecBole's training log into each run.log")
    run.add_argument("--in-process", action="store_true", help="run here, not in workers (debugging)")
    run.add_argument("--dry-run", action="store_true", help="list done / failed / to-run runs and stop")
    run.add_argument("--strict", action="store_true", help="fail on unregistered models instead of skipping them")
    run.add_argument("--no-data-check", action="store_true", help="do not skip tasks whose dataset files are missing")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray_backend.add_arguments(run)
    run.set_defaults(func=cmd_run)

    one = sub.add_parser("one", help="run one spec (the worker of 'run')")
    one.add_argument("--spec", help="the run as JSON: model, task, k_u, config_files, seed, overrides")
    one.add_argument("--spec-file", help="read the spec from this file")
    one.add_argument("--run-dir", help="folder of the run's checkpoint and logs")
    one.add_argument("--out", help="write the record here (default: stdout)")
    one.add_argument("--threads", type=int, default=1)
    one.add_argument("--verbose", action="store_true")
    one.set_defaults(func=cmd_one)

    for name, helptext in (("report", "Table 1 as Markdown and CSV"), ("plot", "PNG plots")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--results", nargs="+", required=True, help="JSON-lines results file(s)")
        p.add_argument("--out", required=True, help="output folder")
        add_grid_options(p, for_run=False)
        p.add_argument("--metrics", default="hit@10,ndcg@10")
        p.add_argument("--split", default="test", choices=["test", "valid"])
        p.add_argument(
            "--ours",
            default=G.FAMILY_PREFIX,
            help="the model compared with the best baseline; the baselines are the "
            f"models outside its family (default: {G.FAMILY_PREFIX}; see docs/benchmark.md)",
        )
        p.add_argument("--include-sweeps", action="store_true", help="let sweep runs into the table")
        if name == "report":
            p.add_argument(
                "--reference",
                default="LightGCN",
                help="the other model the gain of --ours is given over (default: LightGCN)",
            )
            p.add_argument("--title", default="Table 1")
            p.set_defaults(func=cmd_report)
        else:
            p.add_argument(
                "--sensitivity",
                action="append",
                default=[],
                metavar="KEY",
                help="metric vs this config key (repeatable; lambda, eps, K, z, mu, eta accepted)",
            )
            p.add_argument(
                "--curve-models",
                action="append",
                metavar="A,B",
                help="models of the per-epoch plot (default: best baseline and --ours)",
            )
            p.add_argument("--curve-metric", default="ndcg@10", help="picks the best baseline of the curves")
            p.add_argument("--no-ku", action="store_true", help="no metric-vs-K_u plots")
            p.add_argument("--no-curves", action="store_true", help="no per-epoch plots")
            p.set_defaults(func=cmd_plot)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except G.GridError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are in the results file; rerun to resume", file=sys.stderr)
        return 130
