"""Speed, memory and quality of the similarity item exploration (sieoug_recbole.similarity).

    python benchmarks/similarity.py                        # step table, N = 10k, 30k, 50k, 100k
    python benchmarks/similarity.py --sizes 10000,30000
    python benchmarks/similarity.py --recall               # faiss recall@z vs exact, 50k items
    python benchmarks/similarity.py --n 1000000            # whole item structure, K = 15 and 200
    python benchmarks/similarity.py --n 100000 --backend exact   # its exact reference

Data (``planted``): N items in G equal planted groups, two modalities ("image" d = 512,
"text" d = 384, float32) that share the groups but not their centres.  An item is its
group's centre (norm ``separation``) plus a variation along 16 latent directions (norm
about 4, shared by all groups) plus isotropic noise (norm 1).  Two data sets: G = 15
(separation 1.75) and G = 200 (separation 2.5); the separations put about 5% of a
modality's exact kNN edges (z = 5) between groups at N = 100k.  Every N-item data set
is drawn the same way, so 50k items are a sample of the 1M-item distribution.

Table mode (G = 15): per modality the exact kNN and the faiss kNN (time, recall@z of its
edges against the exact graph), RISGF with M = 2 and M = 3 (a random z-out graph as a
corrupted third modality), SISHE K = 15 on the exact graph (time, iterations, NMI of the
argmax against the planted groups).  Each N runs in a fresh subprocess.  Per step: wall
time, the step's extra peak memory (the kernel's resident high-water mark VmHWM is
reset before the step via /proc/self/clear_refs and read after it, minus the RSS before
the step) and the process's high-water mark during the step.

``--n`` mode: the steps of ``build_item_structure`` (z = 5, mu = 0.1, eta = 0.1, K = G,
its fixed knobs, kNN backend 'auto' unless ``--backend``) for each data set in a fresh
subprocess: time per step, the process's peak RSS during the build (the features, which
the caller holds, included), SISHE's iterations and the rule that stopped it, the
planted-group NMI, the share of kNN edges between groups, and, for a faiss build, its
settings and recall@z on 2,000 random rows against their exact neighbours among all N
items; then one line per K (build minutes, peak GB, NMI) beside the goal for 10^6 items
(<= 15 min and <= 8 GB per build on 2 cores).

``--recall`` mode: per data set and modality the exact and the faiss kNN graph of the
same N items (time, faiss settings, recall@z of the faiss edges), then the lowest recall
against the goal of 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

#: planted groups -> centre separation (about 5% of exact z = 5 edges between groups at 100k)
DATASETS = {15: 1.75, 200: 2.5}
MODALITIES = (("image", 512, 1), ("text", 384, 2))  # name, d, seed offset
LATENT_DIM = 16


# ----------------------------------------------------------------------------- memory
def _status_kb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class _Sampler:
    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kb("VmRSS"))
            time.sleep(0.005)

    def __enter__(self):
        self.peak = _status_kb("VmRSS")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_kb("VmRSS"))


def measure(fn):
    """Run fn(); return (result, seconds, extra peak MB, process peak MB, method)."""
    before = _status_kb("VmRSS")
    if _reset_hwm():
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        peak = _status_kb("VmHWM")
        method = "VmHWM"
    else:
        with _Sampler() as s:
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
        peak = s.peak
        method = "sampled RSS"
    return out, dt, (peak - before) / 1024.0, peak / 1024.0, method


# ----------------------------------------------------------------------------- data
def planted_labels(n, groups, seed=0):
    """Equal groups (sizes differ by at most one), in seeded random order."""
    return np.random.default_rng(seed).permutation(np.arange(n) % groups)


def planted(labels, d, seed, separation):
    """Centre of the item's group + latent variation (LATENT_DIM directions) + noise, float32."""
    rng = np.random.default_rng(seed)
    groups = int(labels.max()) + 1
    centres = (separation / np.sqrt(d)) * rng.standard_normal((groups, d), dtype=np.float32)
    basis = rng.standard_normal((LATENT_DIM, d), dtype=np.float32) / np.float32(np.sqrt(d))
    n = len(labels)
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 1 << 14):
        e = min(n, s + (1 << 14))
        x[s:e] = centres[labels[s:e]] + rng.standard_normal((e - s, LATENT_DIM), dtype=np.float32) @ basis
        x[s:e] += np.float32(1.0 / np.sqrt(d)) * rng.standard_normal((e - s, d), dtype=np.float32)
    return x


def dataset(n, groups, seed=0):
    labels = planted_labels(n, groups, seed)
    feats = {name: planted(labels, d, seed + offset, DATASETS[groups]) for name, d, offset in MODALITIES}
    return feats, labels


def random_out_graph(n, z, seed):
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    cols = rng.integers(n - 1, size=(n, z))
    rows = np.repeat(np.arange(n), z).reshape(n, z)
    cols = cols + (cols >= rows)  # skip the diagonal
    g = sp.csr_matrix((np.ones(n * z), (rows.ravel(), cols.ravel())), shape=(n, n))
    g.data[:] = 1.0
    return g


# ----------------------------------------------------------------------------- quality
def edge_recall(approx, exact):
    return float(approx.multiply(exact).sum() / exact.sum())


def cross_group_share(graph, labels):
    c = graph.tocoo()
    return float((labels[c.row] != labels[c.col]).mean())


def nmi(gamma, labels):
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(labels, np.asarray(gamma.argmax(axis=1)).ravel()))


def sampled_recall(graph, x, z, n_queries=2000, seed=0):
    """recall@z of graph's rows for random queries against their exact top-z among all rows."""
    import torch

    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(x.shape[0], n_queries, replace=False))
    xt = torch.from_numpy(x)
    inv = 1.0 / torch.linalg.vector_norm(xt, dim=1).clamp_min(1e-30)
    hits = 0
    for s in range(0, n_queries, 250):
        q = torch.from_numpy(queries[s : s + 250])
        score = (xt[q] @ xt.T) * inv
        score[torch.arange(len(q)), q] = float("-inf")
        top = torch.topk(score, z, dim=1).indices.numpy()
        for r, i in enumerate(q.numpy()):
            hits += len(set(top[r]) & set(graph.indices[graph.indptr[i] : graph.indptr[i + 1]]))
    return hits / (n_queries * z)


# ----------------------------------------------------------------------------- workers
def table_worker(n, z, seed):
    import torch

    from sieoug_recbole import similarity as sim
    from sieoug_recbole.similarity.knn import faiss_available

    rows = []

    def step(name, fn, note=""):
        out, dt, extra, proc, method = measure(fn)
        rows.append(
            {"step": name, "seconds": dt, "peak_extra_mb": extra, "proc_peak_mb": proc, "note": note, "method": method}
        )
        return out

    feats, labels = step(f"features (2 modalities, {n:,} x 15 groups)", lambda: dataset(n, 15, seed))
    exact = {}
    for name, d, _ in MODALITIES:
        exact[name] = step(f"knn exact {name} d={d}", lambda x=feats[name]: sim.knn_graph(x, z, backend="exact"))
        rows[-1]["note"] = f"cross-group edges {cross_group_share(exact[name], labels):.3f}"
        if faiss_available():
            approx = step(f"knn faiss {name} d={d}", lambda x=feats[name]: sim.knn_graph(x, z, backend="faiss"))
            rows[-1]["note"] = f"recall@{z} {edge_recall(approx, exact[name]):.4f}"
    graphs = [exact[name] for name, _, _ in MODALITIES]
    a2, info2 = step("RISGF M=2", lambda: sim.risgf(graphs, 0.1, return_info=True))
    rows[-1]["note"] = f"iters={info2['iterations']}, union nnz={info2['union_nnz']}"
    noisy = random_out_graph(n, z, seed + 7)
    _, info3 = step("RISGF M=3", lambda: sim.risgf(graphs + [noisy], 0.1, return_info=True))
    rows[-1]["note"] = f"iters={info3['iterations']}, union nnz={info3['union_nnz']}"
    gamma, hist = step("SISHE K=15", lambda: sim.sishe(a2, 15, 0.1, seed=0, return_history=True))
    rows[-1]["note"] = (
        f"outer={hist['iterations']}, stopped={hist['stopped']}, "
        f"NMI={nmi(gamma, labels):.4f}, density={gamma.nnz / (n * 15):.3f}"
    )
    return {
        "n": n,
        "rows": rows,
        "proc_peak_mb": max(r["proc_peak_mb"] for r in rows),
        "torch_threads": torch.get_num_threads(),
    }


def recall_worker(n, z, seed):
    import torch

    from sieoug_recbole import similarity as sim
    from sieoug_recbole.similarity.knn import faiss_settings

    out = []
    for groups in DATASETS:
        feats, labels = dataset(n, groups, seed)
        for name, d, _ in MODALITIES:
            t0 = time.perf_counter()
            exact = sim.knn_graph(feats[name], z, backend="exact")
            t1 = time.perf_counter()
            approx = sim.knn_graph(feats[name], z, backend="faiss")
            t2 = time.perf_counter()
            out.append(
                {
                    "groups": groups,
                    "modality": f"{name} d={d}",
                    "exact_s": t1 - t0,
                    "faiss_s": t2 - t1,
                    "recall": edge_recall(approx, exact),
                    "cross": cross_group_share(exact, labels),
                    "settings": faiss_settings(n, d, z),
                }
            )
    return {"rows": out, "torch_threads": torch.get_num_threads()}


def structure_worker(n, groups, z, seed, backend):
    """The steps of build_item_structure (same functions, order and fixed knobs), timed one
    by one; the kNN graphs are kept for the recall check."""
    import torch

    from sieoug_recbole.similarity import knn_graph, risgf, sishe
    from sieoug_recbole.similarity.knn import choose_backend, faiss_settings
    from sieoug_recbole.similarity.pipeline import _PIPELINE_DEFAULTS as knobs

    t0 = time.perf_counter()
    feats, labels = dataset(n, groups, seed)
    t_features = time.perf_counter() - t0
    rss_features = _status_kb("VmRSS") / 1024.0
    _reset_hwm()
    backend = choose_backend(n) if backend == "auto" else backend
    timings, graphs = {}, {}
    for name, d, _ in MODALITIES:
        t0 = time.perf_counter()
        graphs[name] = knn_graph(feats[name], z, backend=backend)
        timings[f"knn[{name}]"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    a = risgf([graphs[name] for name, _, _ in MODALITIES], 0.1, knobs["risgf_max_iter"], knobs["risgf_tol"])
    timings["risgf"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gamma, hist = sishe(
        a,
        groups,
        0.1,
        seed=0,
        max_iter=knobs["sishe_max_iter"],
        tol=knobs["sishe_tol"],
        inner_max_iter=knobs["sishe_inner_max_iter"],
        return_history=True,
        init=knobs["sishe_init"],
    )
    timings["sishe"] = time.perf_counter() - t0
    peak_build = _status_kb("VmHWM") / 1024.0
    c = a.tocoo()
    obj = hist["objective"]
    out = {
        "n": n,
        "groups": groups,
        "backend": backend,
        "features_s": t_features,
        "z": z,
        "modalities": [f"{name} d={d}" for name, d, _ in MODALITIES],
        "threads": torch.get_num_threads(),
        "rss_features_mb": rss_features,
        "peak_mb": peak_build,
        "timings": timings,
        "sishe_iterations": hist["iterations"],
        "sishe_converged": hist["converged"],
        "sishe_stopped": hist["stopped"],
        "sishe_last_gains": [obj[i - 1] - obj[i] for i in range(max(1, len(obj) - 3), len(obj))],
        "sishe_objective": obj[-1],
        "nmi": nmi(gamma, labels),
        "gamma_density": gamma.nnz / (n * groups),
        "cross": {name: cross_group_share(g, labels) for name, g in graphs.items()},
        "A_cross_weight": float(c.data[labels[c.row] != labels[c.col]].sum() / c.data.sum()),
    }
    if backend == "faiss":
        out["sampled_recall"] = {name: sampled_recall(graphs[name], feats[name], z) for name in graphs}
        out["faiss_settings"] = {f"{name} d={d}": faiss_settings(n, d, z) for name, d, _ in MODALITIES}
    return out


# ----------------------------------------------------------------------------- printing
def print_table(out):
    print(
        f"\n## N = {out['n']:,}  (process peak RSS {out['proc_peak_mb']:.0f} MB, torch threads "
        f"{out['torch_threads']}, memory = {out['rows'][0]['method']})"
    )
    print(f"| {'step':<40} | {'time s':>8} | {'peak +MB':>8} | {'proc MB':>8} | notes")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 10}|{'-' * 10}|------")
    for r in out["rows"]:
        print(
            f"| {r['step']:<40} | {r['seconds']:8.2f} | {r['peak_extra_mb']:8.0f} | "
            f"{r['proc_peak_mb']:8.0f} | {r['note']}"
        )


def print_recall(out, n, z):
    rows = out["rows"]
    print(
        f"\n## recall@{z} of knn_graph(backend='faiss') against the exact graph, N = {n:,} "
        f"(torch / faiss threads {out['torch_threads']})"
    )
    print(f"| groups | modality | exact s | faiss s | recall@{z} | cross-group edges (exact) | faiss settings |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        settings = ", ".join(f"{k} {v}" for k, v in r["settings"].items())
        print(
            f"| {r['groups']} | {r['modality']} | {r['exact_s']:.1f} | {r['faiss_s']:.1f} | "
            f"{r['recall']:.4f} | {r['cross']:.3f} | {settings} |"
        )
    worst = min(r["recall"] for r in rows)
    print(f"\nlowest recall@{z}: {worst:.4f} (goal >= 0.95: {'met' if worst >= 0.95 else 'NOT met'})")


def print_structure(out):
    t = out["timings"]
    total = sum(t.values())
    print(
        f"\n## N = {out['n']:,}, K = {out['groups']} planted groups, kNN backend {out['backend']}, z = {out['z']}, "
        f"modalities {' and '.join(out['modalities'])} (float32), mu = eta = 0.1, {out['threads']} threads"
    )
    for name, st in out.get("faiss_settings", {}).items():
        print(f"faiss settings {name}: " + ", ".join(f"{k} {v}" for k, v in st.items()))
    print(f"features: {out['features_s']:.1f} s to generate, {out['rss_features_mb']:.0f} MB resident before the build")
    for name, sec in t.items():
        print(f"  {name:<14} {sec:8.1f} s")
    print(f"  {'total':<14} {total:8.1f} s  ({total / 60:.1f} min)")
    print(f"peak RSS during the build (features included): {out['peak_mb']:.0f} MB")
    print(
        f"SISHE: {out['sishe_iterations']} iterations, stopped by {out['sishe_stopped']} "
        f"(converged={out['sishe_converged']}), final J {out['sishe_objective']:.6g}, last decreases of J "
        + ", ".join(f"{g:.3g}" for g in out["sishe_last_gains"])
        + f"; gamma density {out['gamma_density']:.4f}"
    )
    print(
        f"NMI(argmax gamma, planted groups) = {out['nmi']:.4f}; share of kNN edges between groups "
        + ", ".join(f"{k} {v:.3f}" for k, v in out["cross"].items())
        + f"; of A's weight {out['A_cross_weight']:.3f}"
    )
    for name, r in out.get("sampled_recall", {}).items():
        print(f"recall@5 of the {name} graph on 2,000 random rows vs their exact neighbours: {r:.4f}")


def print_structure_summary(done):
    """One line per K: the whole build's time and peak memory against the 10^6-item goal."""
    if not done:
        return
    print(
        f"\n## summary, N = {done[0]['n']:,}, z = {done[0]['z']}, {' and '.join(done[0]['modalities'])}; "
        "goal for N = 10^6 on 2 cores: <= 15 min and <= 8 GB per build"
    )
    print("| K | kNN backend | build min | peak RSS GB | NMI | SISHE iterations | stopped by |")
    print("|---|---|---|---|---|---|---|")
    for out in done:
        print(
            f"| {out['groups']} | {out['backend']} | {sum(out['timings'].values()) / 60:.2f} | "
            f"{out['peak_mb'] / 1024:.2f} | {out['nmi']:.4f} | {out['sishe_iterations']} | {out['sishe_stopped']} |"
        )


def run_worker(args, extra):
    cmd = [sys.executable, os.path.abspath(__file__), "--z", str(args.z), "--seed", str(args.seed)] + extra
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"\nworker {' '.join(extra)} failed\n{res.stderr[-3000:]}")
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,30000,50000,100000", help="comma-separated N values (table)")
    ap.add_argument(
        "--recall",
        type=int,
        nargs="?",
        const=50000,
        default=None,
        metavar="N",
        help="faiss recall@z against exact on N items (default 50000)",
    )
    ap.add_argument("--n", type=int, default=None, help="whole item structure for N items, K = 15 and 200")
    ap.add_argument("--backend", default="auto", choices=("auto", "exact", "faiss"), help="kNN backend for --n")
    ap.add_argument("--z", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        kind, *vals = args.worker.split(":")
        if kind == "table":
            out = table_worker(int(vals[0]), args.z, args.seed)
        elif kind == "recall":
            out = recall_worker(int(vals[0]), args.z, args.seed)
        else:
            out = structure_worker(int(vals[0]), int(vals[1]), args.z, args.seed, vals[2])
        print(json.dumps(out))
        return
    print(f"# benchmarks/similarity.py {' '.join(sys.argv[1:])}")
    print(
        f"# python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average at start "
        f"{os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}"
    )
    if args.n is not None:
        done = []
        for groups in DATASETS:
            out = run_worker(args, ["--worker", f"structure:{args.n}:{groups}:{args.backend}"])
            if out:
                print_structure(out)
                done.append(out)
            sys.stdout.flush()
        print_structure_summary(done)
    elif args.recall is not None:
        out = run_worker(args, ["--worker", f"recall:{args.recall}"])
        if out:
            print_recall(out, args.recall, args.z)
    else:
        for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
            out = run_worker(args, ["--worker", f"table:{n}"])
            if out:
                print_table(out)
            sys.stdout.flush()
    print(f"\n# load average at end {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
