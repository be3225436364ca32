"""Training-epoch time of SIEOUG, SIEOUG-O and LightGCN on the same pair and batch size.

    python benchmarks/model_epoch.py --config_files properties/food_kitchen_demo.yaml --epochs 5

Prints, per model, the model construction time (for SIEOUG: the one-off kNN / RISGF / SISHE
graph building, measured with an empty graph cache so nothing is read from disk) and the
median wall time of a training epoch (BOTH phase, no evaluation; the models take turns
epoch by epoch), with the ratio to LightGCN.

``--variant LABEL=MODEL:KEY=VALUE,...`` adds a row for a model with its own overrides, e.g.
the lower bound of SIEOUG's epoch (its LightGCN branch of Eq 11 alone, at D = 128):

    python benchmarks/model_epoch.py --config_files properties/food_kitchen_ku10.yaml --epochs 3 \
        --variant "SIEOUG, Eq 11 only=SIEOUG:use_item_graph=False,use_hypergraph=False,guide_lambda=0"
"""

import argparse
import statistics
import tempfile
import time

import torch


def build_model(name, config_files, overrides):
    """(construction seconds, train loader in BOTH mode, trainer) of one model."""
    from recbole_cdr.data.dataloader import CrossDomainDataLoaderState

    from sieoug_recbole.quick_start import build_run, make_config

    config = make_config(name, config_files, dict(overrides))
    start = time.perf_counter()
    _, train_data, _, _, model, trainer = build_run(config)
    built = time.perf_counter() - start
    train_data.set_mode(CrossDomainDataLoaderState.BOTH)
    model.set_phase("BOTH")
    return built, train_data, trainer


def _synchronize():
    """Wait for queued GPU work, so that an epoch's time includes its kernels."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_epochs(models, epochs):
    """Epoch wall times per model, the models taking turns epoch by epoch so that a
    shared machine's load falls on all of them alike: {name: [seconds, ...]}."""
    times = {name: [] for name in models}
    for epoch in range(epochs):
        for name, (_, train_data, trainer) in models.items():
            _synchronize()
            start = time.perf_counter()
            trainer._train_epoch(train_data, epoch)
            _synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def parse_variant(text):
    """``LABEL=MODEL:KEY=VALUE,...`` -> (label, model, {key: value}); the overrides may be empty.
    The label may hold "=" (the model is what follows its last "=" before the first ":"), not ":"."""
    from sieoug_recbole.benchmark.grid import GridError, parse_assignment

    head, _, assignments = text.partition(":")
    label, sep, model = head.rpartition("=")
    if not sep or not label.strip() or not model.strip():
        raise GridError(f"expected LABEL=MODEL:KEY=VALUE,..., got '{text}'")
    overrides = dict(parse_assignment(item) for item in assignments.split(",") if item.strip())
    return label.strip(), model.strip(), overrides


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config_files", default="properties/food_kitchen_demo.yaml")
    parser.add_argument("--models", default="LightGCN,SIEOUG-O,SIEOUG")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument(
        "--embedding_size",
        type=int,
        default=None,
        help="one embedding size for every model (default: each model's yaml; SIEOUG 128, LightGCN 64)",
    )
    parser.add_argument("--gpu", action="store_true", help="train on the GPU (RecBole's use_gpu)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every model (VALUE read as yaml), e.g. ot_device=model",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=MODEL:KEY=VALUE,...",
        help="one more row: MODEL with these overrides, shown as LABEL",
    )
    args = parser.parse_args(argv)
    import sys

    sys.argv = sys.argv[:1]
    import sieoug_recbole  # noqa: F401

    torch.set_num_threads(args.threads)
    overrides = {
        "show_progress": False,
        "state": "ERROR",
        "train_batch_size": args.batch_size,
        "torch_num_threads": args.threads,
        "use_gpu": args.gpu,
    }
    if args.embedding_size:
        overrides["embedding_size"] = args.embedding_size
    from sieoug_recbole.benchmark.grid import GridError, parse_assignment

    for item in args.set:
        try:
            key, value = parse_assignment(item)  # the harness's own --set parsing
        except GridError as error:
            parser.error(f"--set: {error}")
        overrides[key] = value
    rows = [(name, name, {}) for name in args.models.split(",")]
    for item in args.variant:
        try:
            rows.append(parse_variant(item))
        except GridError as error:
            parser.error(f"--variant: {error}")
    labels = [label for label, _, _ in rows]
    if len(set(labels)) != len(labels):
        parser.error(f"every row needs its own label, got {labels}")
    from sieoug_recbole.registry import get_model_class

    for name in dict.fromkeys(name for _, name, _ in rows):
        try:
            get_model_class(name)  # the registry's own check, as in run_sieoug.py
        except ValueError as error:
            parser.error(str(error))
    models = {
        label: build_model(
            name,
            args.config_files.split(),  # an empty graph cache each
            dict(overrides, **own, graph_cache_dir=tempfile.mkdtemp(prefix="graphs-")),
        )
        for label, name, own in rows
    }
    times = time_epochs(models, args.epochs)
    median = {name: statistics.median(t) for name, t in times.items()}
    base = median.get("LightGCN")
    size = f"embedding size {args.embedding_size}" if args.embedding_size else "each model's embedding size"
    size += "".join(f", {item}" for item in args.set)
    device = torch.cuda.get_device_name() if args.gpu and torch.cuda.is_available() else "CPU"
    print(
        f"# {args.config_files}, {device}, batch {args.batch_size}, {size}, torch threads {args.threads}, "
        f"median of {args.epochs} epochs, the models taking turns epoch by epoch"
    )
    print("| model | build s (graphs for SIEOUG) | epoch s (median) | batches | epoch / LightGCN |")
    print("|---|---:|---:|---:|---:|")
    for name, (built, train_data, _) in models.items():
        ratio = f"{median[name] / base:.2f}" if base else "-"
        print(f"| {name} | {built:.1f} | {median[name]:.2f} | {len(train_data)} | {ratio} |")
    for label, name, own in rows:
        if own:
            print(f"# {label}: {name} with " + ", ".join(f"{k}={v}" for k, v in own.items()))


if __name__ == "__main__":
    main()
