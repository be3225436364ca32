"""Time to reach a marginal error of 1e-6: goum (sieoug_recbole.matching) vs POT's sinkhorn_log.

    python benchmarks/matching.py                                  # threads 1 and 2, full grid
    python benchmarks/matching.py --threads 1 --sizes 256,1024     # a subset
    python benchmarks/matching.py --plain --sizes 256              # + the paper's plain iteration

Problem (same tensors for both solvers): n = m users, random 64-d Gaussian embeddings per
side, C = squared Euclidean distances divided by their mean, guide = the first 30% of the
diagonal (those pairs get cost 0), Q = C * (1 - guide); marginals a = 1 (n rows), b = n/m.

* goum: ``goum(C, guide, eps, tol=1e-6, max_iter=1000)``; stops when the max abs row-sum
  error is below tol (columns are exact by construction).
* POT: ``ot.sinkhorn(a, b, Q, reg=eps, method='sinkhorn_log', stopThr=1e-6)`` on the torch
  backend (the same float64 tensors); it checks the 2-norm of the column-sum error every 10
  iterations (rows are exact after its last half-step).  ``numItermax`` is capped per size
  (``--pot-max-iter``) because at eps = 0.01 it would need far more iterations than is
  practical; a capped run is shown with '>' on its time and '<' on the ratio.

Both final plans' errors are recomputed here in float64 as ``max(max_i |sum_j P_ij - 1|,
max_j |sum_i P_ij - n/m|)``, so the comparison is at equal accuracy.  Times are the best of
``--repeats`` runs (one run for capped POT runs and for n >= 4096), wall clock, after a
warm-up; ``--threads`` sets torch's intra-op threads for each block of the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ot  # noqa: E402

from sieoug_recbole.matching import _goum_solve, goum, squared_euclidean_cost  # noqa: E402

DEFAULT_POT_CAP = {256: 5000, 1024: 500, 4096: 50}


def make_problem(n, dim=64, guided=0.3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=dtype)
    y = torch.randn(n, dim, generator=g, dtype=dtype)
    cost = squared_euclidean_cost(x, y, normalize="mean")
    guide = torch.zeros(n, n, dtype=torch.bool)
    k = int(guided * n)
    guide[torch.arange(k), torch.arange(k)] = True
    return cost, guide


def marginal_error(P):
    P = P.double()
    n, m = P.shape
    return max((P.sum(1) - 1).abs().max().item(), (P.sum(0) - n / m).abs().max().item())


def best_of(fn, repeats):
    best_t, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        t = time.perf_counter() - t0
        if t < best_t:
            best_t, out = t, res
    return best_t, out


def run_goum(cost, guide, eps, tol, repeats):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t, (P, info) = best_of(lambda: goum(cost, guide, eps, tol=tol, return_info=True), repeats)
    return t, info["iterations"], marginal_error(P), info["converged"]


def run_pot(Q, eps, tol, cap, repeats):
    n, m = Q.shape
    a = torch.ones(n, dtype=Q.dtype)
    b = torch.full((m,), n / m, dtype=Q.dtype)

    def call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ot.sinkhorn(a, b, Q, reg=eps, method="sinkhorn_log", stopThr=tol, numItermax=cap, log=True)

    t, (P, log) = best_of(call, repeats)
    err = marginal_error(P)
    return t, int(log["niter"]) + 1, err, err < tol


def run_plain(cost, guide, eps, tol, cap, gauge):
    Q = cost.masked_fill(guide, 0.0)
    t0 = time.perf_counter()
    P, info = _goum_solve(Q, eps, cap, tol, method="plain", gauge=gauge)
    return time.perf_counter() - t0, info["iterations"], marginal_error(P), info["converged"]


def fmt_time(t, ok):
    s = f"{t * 1e3:.1f}" if t < 10 else f"{t * 1e3:.0f}"
    return s if ok else ">" + s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma list of torch thread counts (default 1,2)")
    ap.add_argument("--sizes", default="256,1024,4096")
    ap.add_argument("--eps", default="0.1,0.01")
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--pot-max-iter",
        default=None,
        help="POT numItermax: one int for all sizes, or n:cap pairs (default 256:5000,1024:500,4096:50)",
    )
    ap.add_argument(
        "--plain",
        action="store_true",
        help="also run the paper's plain fixed-point iteration (shift and literal pinning)",
    )
    ap.add_argument("--plain-max-iter", type=int, default=5000)
    ap.add_argument("--save", default=None, help="also write the output to this file")
    args = ap.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",")]
    epss = [float(e) for e in args.eps.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    cap = dict(DEFAULT_POT_CAP)
    if args.pot_max_iter:
        if ":" in args.pot_max_iter:
            cap.update({int(k): int(v) for k, v in (p.split(":") for p in args.pot_max_iter.split(","))})
        else:
            cap = {n: int(args.pot_max_iter) for n in sizes}

    lines = []

    def out(s=""):
        print(s, flush=True)
        lines.append(s)

    out(f"# benchmarks/matching.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    out(
        f"# python {platform.python_version()}, torch {torch.__version__}, POT {ot.__version__}, "
        f"{os.cpu_count()} CPUs ({platform.machine()}); float64; tol {args.tol:g}; "
        f"POT numItermax caps {', '.join(f'{n}:{cap.get(n, 10000)}' for n in sizes)} (eps=0.1 runs: 10000)"
    )
    out(
        "# time = best of repeats, ms; err = max abs marginal error of the returned plan (float64);"
        " '>' = did not reach tol within the cap"
    )

    # warm-up (library loading, first-touch allocations)
    c, g = make_problem(64, seed=123)
    goum(c, g, 0.1)
    run_pot(c.masked_fill(g, 0.0), 0.1, 1e-6, 1000, 1)

    header = (
        f"{'thr':>3} {'n':>5} {'eps':>5} | {'goum ms':>9} {'it':>4} {'err':>8} | "
        f"{'POT ms':>9} {'it':>6} {'err':>8} | {'goum/POT':>9}"
    )
    for nt in threads:
        torch.set_num_threads(nt)
        out()
        out(header)
        out("-" * len(header))
        for n in sizes:
            cost, guide = make_problem(n, seed=args.seed)
            Q = cost.masked_fill(guide, 0.0)
            for eps in epss:
                reps = args.repeats if n < 4096 else 1
                tg, ig, eg, okg = run_goum(cost, guide, eps, args.tol, reps)
                pot_cap = 10000 if eps >= 0.1 else cap.get(n, 10000)
                # a capped (non-converging) POT run is not repeated
                tp, ip, ep, okp = run_pot(Q, eps, args.tol, pot_cap, 1)
                if okp and reps > 1:
                    tp2, ip, ep, okp = run_pot(Q, eps, args.tol, pot_cap, reps - 1)
                    tp = min(tp, tp2)
                ratio = tg / tp
                rs = f"{ratio:.3f}" if okp else f"<{ratio:.3f}"
                out(
                    f"{nt:>3} {n:>5} {eps:>5g} | {fmt_time(tg, okg):>9} {ig:>4} {eg:>8.1e} | "
                    f"{fmt_time(tp, okp):>9} {ip:>6} {ep:>8.1e} | {rs:>9}"
                )
                if args.plain:
                    for gauge in ("shift", "literal"):
                        tq, iq, eq, okq = run_plain(cost, guide, eps, args.tol, args.plain_max_iter, gauge)
                        out(
                            f"{'':>3} {'':>5} {'':>5} | plain fixed-point iteration, {gauge:<7} pinning: "
                            f"{fmt_time(tq, okq)} ms, {iq} it, err {eq:.1e}"
                        )
    if args.save:
        os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
        with open(args.save, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
