"""Training-epoch time of SIEOUG, SIEOUG-O and LightGCN on the same pair and batch size.

    python benchmarks/model_epoch.py --config_files properties/food_kitchen_demo.yaml --epochs 2

Prints, per model, the model construction time (for SIEOUG: the one-off kNN / RISGF / SISHE
graph building, measured with an empty graph cache so nothing is read from disk) and the
mean wall time of a training epoch (BOTH phase, no evaluation), with the ratio to LightGCN.
"""
import argparse
import tempfile
import time

import torch


def time_model(name, config_files, overrides, epochs):
    from sieoug_recbole.quick_start import build, make_config

    config = make_config(name, config_files, dict(overrides))
    start = time.perf_counter()
    dataset, train_data, _, _, model, trainer = build(config)
    built = time.perf_counter() - start
    from recbole_cdr.data.dataloader import CrossDomainDataLoaderState

    train_data.set_mode(CrossDomainDataLoaderState.BOTH)
    model.set_phase("BOTH")
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer._train_epoch(train_data, epoch)
        times.append(time.perf_counter() - start)
    return built, sum(times) / len(times), len(train_data)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config_files", default="properties/food_kitchen_demo.yaml")
    parser.add_argument("--models", default="LightGCN,SIEOUG-O,SIEOUG")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=256)
    args = parser.parse_args(argv)
    import sys

    sys.argv = sys.argv[:1]
    import sieoug_recbole  # noqa: F401

    torch.set_num_threads(args.threads)
    overrides = {"show_progress": False, "state": "ERROR", "train_batch_size": args.batch_size,
                 "graph_cache_dir": tempfile.mkdtemp(prefix="graphs-"), "torch_num_threads": args.threads}
    rows = []
    for name in args.models.split(","):
        built, epoch, batches = time_model(name, args.config_files.split(), overrides, args.epochs)
        rows.append((name, built, epoch, batches))
    base = next((r[2] for r in rows if r[0] == "LightGCN"), None)
    print(f"# {args.config_files}, batch {args.batch_size}, torch threads {args.threads}, "
          f"mean of {args.epochs} epochs")
    print(f"| model | build s (graphs for SIEOUG) | epoch s | batches | epoch / LightGCN |")
    print("|---|---:|---:|---:|---:|")
    for name, built, epoch, batches in rows:
        ratio = f"{epoch / base:.2f}" if base else "-"
        print(f"| {name} | {built:.1f} | {epoch:.2f} | {batches} | {ratio} |")


if __name__ == "__main__":
    main()
