"""Speed and memory of the similarity item exploration steps (sieoug_recbole.similarity).

    python benchmarks/similarity.py                    # N = 10k, 30k, 100k
    python benchmarks/similarity.py --sizes 10000,30000

Each size runs in a fresh subprocess.  Per step it reports wall time and the step's peak
resident memory: the kernel's high-water mark of the process (VmHWM) is reset before the
step (``echo 5 > /proc/self/clear_refs``) and read after it, and the RSS just before the
step is subtracted, so "peak +MB" is the extra resident memory the step needed on top of
what the process already held (numpy, scipy, torch and BLAS buffers all included).
"proc MB" is the process's resident high-water mark during the step (interpreter,
libraries and the benchmark's input features included).  If clear_refs is not writable,
the numbers fall back to a 5 ms RSS sampler (and say so).

Data: item features with cluster structure (300 latent groups, group centre + Gaussian
noise, float32): an "image" modality with d=512 and a "text" modality with d=384.  The
pipeline is knn(image) + knn(text) + RISGF (M=2) + SISHE (K=15), i.e. what
build_item_structure does for two modalities (z=5, mu=0.1, eta=0.1, K=15).  RISGF with
M=3 adds a corrupted modality: a random graph with z out-edges per row.
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


def make_features(n, d, n_groups, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(n_groups, size=n)
    centers = rng.standard_normal((n_groups, d), dtype=np.float32)
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 8192):
        e = min(s + 8192, n)
        x[s:e] = centers[labels[s:e]] + 1.5 * rng.standard_normal((e - s, d), dtype=np.float32)
    return x


def random_out_graph(n, z, seed):
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    cols = rng.integers(n - 1, size=(n, z))
    rows = np.repeat(np.arange(n), z).reshape(n, z)
    cols = cols + (cols >= rows)  # skip the diagonal
    g = sp.csr_matrix((np.ones(n * z), (rows.ravel(), cols.ravel())), shape=(n, n))
    g.data[:] = 1.0
    return g


def worker(n, z, k, seed):
    import torch

    from sieoug_recbole import similarity as sim
    from sieoug_recbole.similarity.knn import BLOCK_ELEMENTS

    rows = []

    def step(name, fn, note=""):
        out, dt, extra, proc, method = measure(fn)
        rows.append({"step": name, "seconds": dt, "peak_extra_mb": extra, "proc_peak_mb": proc,
                     "note": note, "method": method})
        return out

    img = step("features image d=512", lambda: make_features(n, 512, 300, seed))
    txt = step("features text d=384", lambda: make_features(n, 384, 300, seed + 1))
    g_img = step("knn image d=512", lambda: sim.knn_graph(img, z))
    rows[-1]["note"] = f"block={max(64, BLOCK_ELEMENTS // n)} rows, nnz={g_img.nnz}"
    g_txt = step("knn text d=384", lambda: sim.knn_graph(txt, z))
    noisy = random_out_graph(n, z, seed + 2)
    a2, info2 = step("RISGF M=2", lambda: sim.risgf([g_img, g_txt], 0.1, return_info=True))
    rows[-1]["note"] = f"iters={info2['iterations']}, union nnz={info2['union_nnz']}"
    a3, info3 = step("RISGF M=3", lambda: sim.risgf([g_img, g_txt, noisy], 0.1, return_info=True))
    rows[-1]["note"] = f"iters={info3['iterations']}, union nnz={info3['union_nnz']}"
    gamma, hist = step("SISHE K=15", lambda: sim.sishe(a2, k, 0.1, seed=0, return_history=True))
    rows[-1]["note"] = (f"outer={hist['iterations']}, inner={sum(hist['inner_iterations'])}, "
                        f"marg.err={hist['final_marginal_error']:.1e}, density={gamma.nnz / (n * k):.3f}")
    pipe = [r for r in rows if r["step"] in ("knn image d=512", "knn text d=384", "RISGF M=2", "SISHE K=15")]
    rows.append({"step": "pipeline (knn x2 + RISGF M=2 + SISHE)",
                 "seconds": sum(r["seconds"] for r in pipe),
                 "peak_extra_mb": max(r["peak_extra_mb"] for r in pipe),
                 "proc_peak_mb": max(r["proc_peak_mb"] for r in pipe),
                 "note": "sum of the steps' times; max of their peaks", "method": pipe[0]["method"]})
    # note: ru_maxrss is reset together with VmHWM, so the process peak is the max over steps
    return {"n": n, "rows": rows, "proc_peak_mb": max(r["proc_peak_mb"] for r in rows),
            "torch_threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,30000,100000", help="comma-separated N values")
    ap.add_argument("--z", type=int, default=5)
    ap.add_argument("--clusters", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.z, args.clusters, args.seed)))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(f"# benchmarks/similarity.py --sizes {','.join(map(str, sizes))}")
    print(f"# python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"load average at start {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    for n in sizes:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), "--z", str(args.z),
               "--clusters", str(args.clusters), "--seed", str(args.seed)]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"\nN={n}: worker failed\n{res.stderr[-3000:]}")
            continue
        out = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"\n## N = {n:,}  (worker wall {time.perf_counter() - t0:.1f} s, process peak RSS "
              f"{out['proc_peak_mb']:.0f} MB, torch threads {out['torch_threads']}, "
              f"memory = {out['rows'][0]['method']})")
        print(f"| {'step':<40} | {'time s':>8} | {'peak +MB':>8} | {'proc MB':>8} | notes")
        print(f"|{'-' * 42}|{'-' * 10}|{'-' * 10}|{'-' * 10}|------")
        for r in out["rows"]:
            print(f"| {r['step']:<40} | {r['seconds']:8.2f} | {r['peak_extra_mb']:8.0f} | "
                  f"{r['proc_peak_mb']:8.0f} | {r['note']}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
