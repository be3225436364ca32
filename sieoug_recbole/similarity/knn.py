"""Top-z cosine kNN graphs of item features (SIEOUG Eq 1-2): exact in row blocks, or faiss."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from sieoug_recbole.checks import integer_in_range

from ._inputs import as_feature_matrix

# default number of float entries of one similarity block (block_size rows x N columns)
BLOCK_ELEMENTS = 1 << 25


def knn_graph(features, k, include_self=False, block_size=None, backend="exact"):
    """Directed top-``k`` cosine-similarity graph of the rows of ``features`` (Eq 1-2).

    ``S_ij = exp(cos(x_i, x_j))`` is monotone in the cosine, so the top-k of S are the
    top-k of the cosine; the result is binary, as Eq 2: ``G[i, j] = 1`` iff ``j`` is one of
    the ``k`` most similar items to ``i``.  Row ``i`` lists ``i``'s neighbours, the graph is
    not symmetrised.

    Parameters
    ----------
    features : array (N, d)
        Real, finite features (one item per row).  float32 input is computed in float32,
        everything else in float64.
    k : int
        Neighbours per row; ``1 <= k <= N - 1`` (``<= N`` when ``include_self``).
    include_self : bool
        Default False: the diagonal is excluded.  With ``include_self=True`` every item is
        always its own neighbour (one of its ``k`` slots), including zero rows.
    block_size : int or None
        Rows per similarity block (memory ``O(block_size * N)``; never an N x N matrix).
        None picks about 2**25 / N rows.
    backend : {'exact', 'faiss'}
        'exact' (default): blocked exact search.  'faiss': approximate HNSW search (needs the
        optional extra ``pip install sieoug-recbole[faiss]``); ties are then not guaranteed
        to follow the rule below.

    Returns
    -------
    scipy.sparse.csr_matrix (N, N), float32, value 1.0 on each edge, sorted indices.

    Rules (exact backend)
    ---------------------
    * Self-edges are excluded by default: every modality agrees on ``i ~ i`` (cosine 1),
      so after fusion a self-loop is a constant identity in A, which (a) spends one of the
      z slots on no information, (b) adds the residual connection that the layer mean of
      Eq 12 already provides and (c) adds ``-||gamma||^2`` to the SISHE objective, i.e.
      fights the regulariser ``eta``.
    * Ties are broken by the lower column index (exact ties only: values are compared as
      computed, in the working precision).
    * Zero rows (all-zero feature vectors, e.g. a missing image) have no defined cosine:
      they get no edges and are never chosen as anyone's neighbour (with
      ``include_self=True`` they keep their self-edge).  A row may therefore have fewer
      than ``k`` edges when fewer than ``k`` non-zero candidates exist.
    """
    x = as_feature_matrix(features)
    n = x.shape[0]
    if not isinstance(include_self, (bool, np.bool_)):
        raise ValueError(f"include_self must be a bool, got {include_self!r}")
    max_k = n if include_self else n - 1
    if max_k < 1:
        raise ValueError(f"k: features has {n} row(s); need at least 2 rows without include_self")
    k = integer_in_range(k, "k", 1, max_k)
    if block_size is None:
        block_size = max(64, BLOCK_ELEMENTS // max(n, 1))
    else:
        block_size = integer_in_range(block_size, "block_size", 1)
    block_size = min(block_size, n)
    if backend == "exact":
        rows, cols = _knn_exact(x, k, bool(include_self), block_size)
    elif backend == "faiss":
        rows, cols = _knn_faiss(x, k, bool(include_self))
    else:
        raise ValueError(f"backend must be 'exact' or 'faiss', got {backend!r}")
    data = np.ones(len(rows), dtype=np.float32)
    g = sp.csr_matrix((data, (rows, cols)), shape=(n, n))
    g.sum_duplicates()
    g.sort_indices()
    return g


def _pow2_scale(x):
    """If max |x| is very large or very small, multiply by a power of two (exact, keeps
    ties) so that it is in [0.5, 1): dot products can then neither overflow nor underflow."""
    m = float(np.abs(x).max()) if x.size else 0.0
    if m == 0.0 or 2.0 ** -30 <= m <= 2.0 ** 30:
        return x
    _, e = np.frexp(m)
    return x * np.asarray(np.ldexp(1.0, -int(e)), dtype=x.dtype)


def _knn_exact(x, k, include_self, block_size):
    import torch  # lazy: a GEMM + topk per block, ~5x faster than numpy's argpartition

    n = x.shape[0]
    x = _pow2_scale(x)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    zero = norms == 0.0
    inv = np.zeros(n, dtype=x.dtype)
    inv[~zero] = (1.0 / norms[~zero]).astype(x.dtype)
    zero_cols = torch.from_numpy(np.flatnonzero(zero))
    with warnings.catch_warnings():  # read-only input (e.g. a memmap) is only read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writ")
        xt = torch.from_numpy(x)
    inv_t = torch.from_numpy(inv)
    kk = min(k + 1, n)  # one extra value reveals a tie at the k-th place
    out_rows, out_cols = [], []
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        b = stop - start
        # positive per-row scaling does not change a row's ranking, so only the column
        # norms are applied: s[r, j] = <x_r, x_j> / |x_j|  (cosine * |x_r|)
        s = xt[start:stop] @ xt.T
        s.mul_(inv_t)
        if len(zero_cols):
            s.index_fill_(1, zero_cols, float("-inf"))
        local = torch.arange(b)
        s[local, local + start] = float("inf") if include_self else float("-inf")
        vals, idx = torch.topk(s, kk, dim=1, largest=True, sorted=True)
        vals = vals.numpy()
        idx = idx.numpy()
        sel = idx[:, :k]
        keep = vals[:, :k] > -np.inf  # drop excluded candidates (self, zero rows)
        if kk > k:
            ambiguous = vals[:, k - 1] == vals[:, k]  # boundary tie or < k finite values
        else:
            ambiguous = np.zeros(b, dtype=bool)
        blk_zero = zero[start:stop]
        rows = np.repeat(np.arange(start, stop), k).reshape(b, k)
        ok = ~ambiguous & ~blk_zero
        out_rows.append(rows[ok][keep[ok]])
        out_cols.append(sel[ok][keep[ok]])
        s_np = None
        for r in np.flatnonzero(ambiguous & ~blk_zero):
            if s_np is None:
                s_np = s.numpy()
            row = s_np[r]
            vk = vals[r, k - 1]
            gt = np.flatnonzero(row > vk)
            if np.isfinite(vk):
                eq = np.flatnonzero(row == vk)[: k - len(gt)]
                gt = np.concatenate([gt, eq])
            out_rows.append(np.full(len(gt), start + r, dtype=np.int64))
            out_cols.append(gt.astype(np.int64))
        if include_self:
            zr = np.flatnonzero(blk_zero) + start
            out_rows.append(zr)
            out_cols.append(zr)
        del s, s_np  # release the block before the next one is allocated
    rows = np.concatenate(out_rows).astype(np.int64) if out_rows else np.zeros(0, np.int64)
    cols = np.concatenate(out_cols).astype(np.int64) if out_cols else np.zeros(0, np.int64)
    return rows, cols


def _knn_faiss(x, k, include_self):
    try:
        import faiss  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "knn_graph(backend='faiss') needs faiss; install the optional extra with "
            "`pip install sieoug-recbole[faiss]` (or use backend='exact')"
        ) from exc
    n, d = x.shape
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    nz = np.flatnonzero(norms > 0)
    xn = np.ascontiguousarray((x[nz] / norms[nz, None]).astype(np.float32))
    want = k - 1 if include_self else k
    out_rows, out_cols = [], []
    if include_self:
        out_rows.append(np.arange(n, dtype=np.int64))
        out_cols.append(np.arange(n, dtype=np.int64))
    if want > 0 and len(nz) > 1:
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = max(64, 4 * (want + 1))
        index.add(xn)
        q = min(want + 1, len(nz))
        for start in range(0, len(nz), 8192):
            dist, ids = index.search(xn[start:start + 8192], q)
            for r in range(dist.shape[0]):
                me = start + r
                m = (ids[r] >= 0) & (ids[r] != me)
                cand, sim = ids[r][m], dist[r][m]
                order = np.lexsort((cand, -sim))[:want]
                out_rows.append(np.full(len(order), nz[me], dtype=np.int64))
                out_cols.append(nz[cand[order]].astype(np.int64))
    rows = np.concatenate(out_rows) if out_rows else np.zeros(0, np.int64)
    cols = np.concatenate(out_cols) if out_cols else np.zeros(0, np.int64)
    return rows, cols

