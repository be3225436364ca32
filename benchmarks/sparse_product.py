"""Forward + backward time of one sparse graph product ``M @ x``: torch's COO product, and
:class:`sieoug_recbole.graph.SparseOperator` with each of its backends, torch's CSR product with
a stored transpose (what the models use on a GPU) and scipy's CSR kernel with a stored
transpose (what they use on the CPU).

    python benchmarks/sparse_product.py --threads 1

The matrices are the real ones of a demo pair: each domain's normalised user-item graph
(LightGCN, Eq 11) and SIEOUG's item graph A (Eq 12). Prints milliseconds per product
(median of 5 rounds of ``--reps`` products) for embedding sizes 64 and 128.
"""

import argparse
import statistics
import tempfile
import time

import torch


def _torch_coo(operator):
    """``operator``'s matrix as a coalesced torch COO tensor (no dense N x N on the way)."""
    values = torch.from_numpy(operator.to_scipy().data)  # CSR order: the row-major order of indices()
    return torch.sparse_coo_tensor(operator.indices(), values, operator.shape, check_invariants=True).coalesce()


def time_product(product, x, reps):
    """Median ms of ``product(x)`` followed by its backward."""
    grad = torch.ones(product(x.detach()).shape)
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            x.grad = None
            product(x).backward(grad)
        rounds.append((time.perf_counter() - start) / reps * 1000)
    return statistics.median(rounds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config_files", default="properties/food_kitchen_demo.yaml")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args(argv)
    import sys

    sys.argv = sys.argv[:1]
    from sieoug_recbole.graph import SparseOperator
    from sieoug_recbole.quick_start import build_run, make_config

    torch.set_num_threads(args.threads)
    config = make_config(
        "SIEOUG",
        args.config_files.split(),
        {
            "show_progress": False,
            "state": "ERROR",
            "torch_num_threads": args.threads,
            "graph_cache_dir": tempfile.mkdtemp(prefix="graphs-"),
        },
    )
    model = build_run(config)[4]
    print(f"# {args.config_files}, torch threads {args.threads}, ms per forward + backward product")
    print("| matrix | rows | nnz | d | torch COO | SparseOperator, torch CSR | SparseOperator, scipy | COO / scipy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, operators in (("user-item graph", model.adjacency), ("item graph A", model.item_graph)):
        for domain, operator in operators.items():
            coo = _torch_coo(operator)
            torch_csr = SparseOperator(operator.to_scipy(), backend="torch")
            for dim in (64, 128):
                x = torch.randn(operator.shape[1], dim, requires_grad=True)
                coo_ms = time_product(lambda v: torch.sparse.mm(coo, v), x, args.reps)
                torch_ms = time_product(torch_csr, x, args.reps)
                scipy_ms = time_product(operator, x, args.reps)
                print(
                    f"| {name} ({domain}) | {operator.shape[0]} | {operator.nnz} | {dim} | "
                    f"{coo_ms:.2f} | {torch_ms:.2f} | {scipy_ms:.2f} | {coo_ms / scipy_ms:.1f}x |"
                )


if __name__ == "__main__":
    main()
