"""Forward + backward time of one sparse graph product ``M @ x``: torch's COO product, torch's
CSR product with a stored transpose, and :class:`sieoug_recbole.graph.SparseOperator`
(scipy's CSR kernel with a stored transpose, what the models use on the CPU).

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


class TorchCSRProduct(torch.autograd.Function):
    """y = M x with torch CSR tensors, dL/dx = M^T dL/dy with the stored transpose."""

    @staticmethod
    def forward(ctx, x, matrix, transpose):
        ctx.transpose = transpose
        return matrix @ x

    @staticmethod
    def backward(ctx, grad):
        return ctx.transpose @ grad, None, None


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
    from sieoug_recbole.quick_start import build, make_config

    torch.set_num_threads(args.threads)
    config = make_config("SIEOUG", args.config_files.split(), {
        "show_progress": False, "state": "ERROR", "torch_num_threads": args.threads,
        "graph_cache_dir": tempfile.mkdtemp(prefix="graphs-")})
    model = build(config)[4]
    print(f"# {args.config_files}, torch threads {args.threads}, ms per forward + backward product")
    print("| matrix | rows | nnz | d | torch COO | torch CSR pair | SparseOperator | COO / SparseOperator |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, operators in (("user-item graph", model.adjacency), ("item graph A", model.item_graph)):
        for domain, operator in operators.items():
            dense = operator.to_dense()
            coo = dense.to_sparse_coo().coalesce()
            csr, csr_t = dense.to_sparse_csr(), dense.t().contiguous().to_sparse_csr()
            for dim in (64, 128):
                x = torch.randn(operator.shape[1], dim, requires_grad=True)
                old = time_product(lambda v: torch.sparse.mm(coo, v), x, args.reps)
                pair = time_product(lambda v: TorchCSRProduct.apply(v, csr, csr_t), x, args.reps)
                new = time_product(operator, x, args.reps)
                print(f"| {name} ({domain}) | {operator.shape[0]} | {operator.nnz} | {dim} | "
                      f"{old:.2f} | {pair:.2f} | {new:.2f} | {old / new:.1f}x |")


if __name__ == "__main__":
    main()
