"""Grid throughput of ``run --backend ray`` with 1 and with 2 Ray workers (CPUs) on this machine.

The same grid (LightGCN on the seeded synthetic pair, one run per seed, ``--epochs`` each) runs
twice through the harness's command line, on a Ray instance started here with 1 CPU and then
with 2 (one CPU a run): runs a minute and the speed-up. Runs must be long enough that the
start of each worker process (imports, data loading: a few seconds) does not dominate.

    python benchmarks/ray_throughput.py [--runs 6] [--epochs 60] [--out benchmarks/results/ray_throughput.txt]

Every Ray address is on loopback. Each run uses one torch thread (``--threads 1``). Run it on
an otherwise idle machine: the figures say how much CPU the grid got, and each line gives the
machine's load average.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on loopback only
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def run_grid(workers, runs, epochs, data_dir, folder):
    """Wall seconds of the grid on a Ray instance of ``workers`` CPUs, and its records."""
    import ray
    from ray.cluster_utils import Cluster

    from sieoug_recbole.benchmark.cli import main
    from sieoug_recbole.benchmark.records import load_records

    cluster = Cluster(
        initialize_head=True, connect=False, head_node_args={"num_cpus": workers, "include_dashboard": False}
    )
    results = os.path.join(folder, f"workers{workers}.jsonl")
    try:
        started = time.time()
        code = main(
            [
                "run",
                "--models",
                "LightGCN",
                "--task",
                f"syn:0.5={os.path.join(REPO, 'properties', 'synthetic.yaml')}",
                "--seeds",
                ",".join(str(s) for s in range(1, runs + 1)),
                "--epochs",
                str(epochs),
                "--set",
                f"data_path={data_dir}{os.sep}",
                "--set",
                "stopping_step=1000",
                "--results",
                results,
                "--no-progress",
                "--threads",
                "1",
                "--backend",
                "ray",
                "--address",
                cluster.address,
                "--cpus-per-run",
                "1",
            ]
        )
        wall = time.time() - started
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    records = load_records(results)
    if code != 0 or len(records) != runs:
        raise SystemExit(f"the grid on {workers} worker(s) failed (exit {code}, {len(records)} records)")
    return wall, records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="runs in the grid (seeds 1..N)")
    parser.add_argument("--epochs", type=int, default=60, help="epochs a run")
    parser.add_argument("--out", help="also write the figures here")
    args = parser.parse_args(argv)
    from sieoug_recbole.synthetic import generate_pair

    lines = [
        f"grid: LightGCN x {args.runs} seeds on the synthetic pair, {args.epochs} epochs a run, "
        f"1 torch thread a run, {os.cpu_count()} CPU cores"
    ]
    with tempfile.TemporaryDirectory(prefix="ray_throughput_") as folder:
        data_dir = os.path.join(folder, "data")
        generate_pair(data_dir, name="synthetic", seed=0)
        walls = {}
        for workers in (1, 2):
            load_before = os.getloadavg()[0]
            wall, records = run_grid(workers, args.runs, args.epochs, data_dir, folder)
            walls[workers] = wall
            per_run = sorted(r["process_time_s"] for r in records)
            lines.append(
                f"{workers} Ray worker(s): {wall:.1f} s for {args.runs} runs = "
                f"{60 * args.runs / wall:.2f} runs/min (a run's worker process: "
                f"{per_run[0]:.1f}-{per_run[-1]:.1f} s; training {min(r['wall_time_s'] for r in records):.1f}-"
                f"{max(r['wall_time_s'] for r in records):.1f} s; load average of the machine "
                f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after)"
            )
    lines.append(f"speed-up with 2 workers: {walls[1] / walls[2]:.2f}x")
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(f"$ python benchmarks/ray_throughput.py --runs {args.runs} --epochs {args.epochs}\n")
            f.write(text + "\n")


if __name__ == "__main__":
    main()
