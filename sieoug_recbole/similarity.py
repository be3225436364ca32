"""Similarity item exploration (SIEOUG, WWW'25, Sec. 3.1 and Appendix A).

Pure functions over numpy / scipy arrays; nothing here imports RecBole.

Pipeline (one domain)::

    features[m] --knn_graph--> S_m  (Eq 1-2, one directed top-z graph per modality)
    {S_m}       --risgf-----> A    (Eq 3-5, robust fusion, values in [0, 1])
    A           --sishe-----> gamma (Eq 6-10, balanced sparse soft clustering, N x K)

plus the two operators the model propagates with: ``normalize_item_graph`` (Eq 12) and
``hypergraph_factors`` (Eq 13, kept factored).  ``build_item_structure`` runs the whole
pipeline with an on-disk cache.  Design decisions are documented in ``docs/similarity.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections import namedtuple
from typing import Mapping

import numpy as np
import scipy.sparse as sp

from sieoug_recbole.checks import integer_in_range, positive_number

__all__ = [
    "knn_graph",
    "risgf",
    "sishe",
    "normalize_item_graph",
    "hypergraph_factors",
    "apply_hypergraph",
    "build_item_structure",
    "ItemStructure",
]

#: bump when anything that changes the cached arrays changes (algorithm, defaults, layout)
CACHE_FORMAT_VERSION = 2

# default number of float entries of one similarity block (block_size rows x N columns)
_BLOCK_ELEMENTS = 1 << 25


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------
def _as_feature_matrix(features, name="features"):
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, d), got shape {x.shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column, got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real numeric array, got dtype {x.dtype}")
    if x.dtype.kind != "f" or x.dtype.itemsize < 4:
        x = x.astype(np.float64)
    elif x.dtype.itemsize > 8:
        x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(x)


def _as_square_csr(A, name="A"):
    if not sp.issparse(A):
        A = np.asarray(A)
        if A.ndim != 2:
            raise ValueError(f"{name} must be a square 2-D (N, N) matrix, got shape {A.shape}")
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) matrix, got shape {A.shape}")
    A = sp.csr_matrix(A, dtype=np.float64)
    A.sum_duplicates()
    if not np.isfinite(A.data).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return A


# --------------------------------------------------------------------------------------
# Eq 1-2: top-z cosine kNN graph
# --------------------------------------------------------------------------------------
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
    x = _as_feature_matrix(features)
    n = x.shape[0]
    if not isinstance(include_self, (bool, np.bool_)):
        raise ValueError(f"include_self must be a bool, got {include_self!r}")
    max_k = n if include_self else n - 1
    if max_k < 1:
        raise ValueError(f"k: features has {n} row(s); need at least 2 rows without include_self")
    k = integer_in_range(k, "k", 1, max_k)
    if block_size is None:
        block_size = max(64, _BLOCK_ELEMENTS // max(n, 1))
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


# --------------------------------------------------------------------------------------
# Eq 3-5: RISGF robust fusion
# --------------------------------------------------------------------------------------
def risgf(graphs, mu, max_iter=100, tol=1e-6):
    """Robust Item Similarity Graph Fusion (Eq 3-5).

    Solves ``min_{A in [0,1], Delta} 1/M sum_m 1/2 ||A + Delta_m - S_m||^2 + mu ||Delta_m||_1``
    by alternating soft-thresholding ``Delta_m = T_mu(S_m - A)`` (Eq 4) and the clipped mean
    ``A = [mean_m (S_m - Delta_m)]_[0,1]`` (Eq 5), starting from the clipped mean of the
    inputs and stopping when the largest entry change is below ``tol`` (or ``max_iter``).
    Eliminating Delta shows each entry of A is the box-constrained minimiser of a sum of
    Huber losses of width ``mu`` around the M input values (between mean and median).

    Only the union of the inputs' supports is computed: outside it every S_m is 0, and
    A = 0, Delta = 0 is already the fixed point there.  Work is vectorised over that union.

    Facts (tested):
      * M = 1 returns the input (clipped to [0, 1]).
      * M = 2: the clipped mean is a fixed point of Eq 4-5 for every ``mu`` (the two
        residuals are symmetric, their soft-thresholds cancel in Eq 5), so with two
        modalities RISGF returns the plain average of the two graphs.
      * M >= 3: robust, median-like; e.g. for binary inputs with ``mu < 1/2`` an edge seen
        by one modality of three gets ``mu / 2`` instead of 1/3, an edge seen by two gets
        ``1 - mu / 2`` instead of 2/3.

    Parameters
    ----------
    graphs : sequence of M >= 1 (N, N) sparse (or dense) matrices of the same shape
    mu : float > 0
    max_iter : int >= 1
    tol : float > 0

    Returns
    -------
    scipy.sparse.csr_matrix (N, N), float64, values in [0, 1], explicit zeros removed.
    """
    a, _ = _risgf(graphs, mu, max_iter, tol)
    return a


def _risgf(graphs, mu, max_iter=100, tol=1e-6):
    if sp.issparse(graphs) or isinstance(graphs, np.ndarray):
        graphs = [graphs]
    graphs = list(graphs)
    if len(graphs) == 0:
        raise ValueError("graphs must contain at least one (N, N) matrix, got an empty list")
    mu = positive_number(mu, "mu")
    max_iter = integer_in_range(max_iter, "max_iter", 1)
    tol = positive_number(tol, "tol")
    mats = []
    for m, g in enumerate(graphs):
        mats.append(_as_square_csr(g, name=f"graphs[{m}]"))
    shape = mats[0].shape
    for m, g in enumerate(mats):
        if g.shape != shape:
            raise ValueError(
                f"graphs must all have the same shape: graphs[0] is {shape}, graphs[{m}] is {g.shape}"
            )
    n = shape[0]
    nm = len(mats)
    keys, vals, mods = [], [], []
    for m, g in enumerate(mats):
        c = g.tocoo()
        keys.append(c.row.astype(np.int64) * n + c.col.astype(np.int64))
        vals.append(c.data)
        mods.append(np.full(c.nnz, m, dtype=np.int64))
    keys = np.concatenate(keys)
    ukeys, inv = np.unique(keys, return_inverse=True)
    v = np.zeros((nm, len(ukeys)), dtype=np.float64)
    v[np.concatenate(mods), inv] = np.concatenate(vals)

    a = np.clip(v.mean(axis=0), 0.0, 1.0)
    changes = []
    for _ in range(max_iter):
        r = v - a
        delta = np.sign(r) * np.maximum(np.abs(r) - mu, 0.0)  # Eq 4
        a_new = np.clip((v - delta).mean(axis=0), 0.0, 1.0)  # Eq 5
        change = float(np.abs(a_new - a).max()) if a.size else 0.0
        a = a_new
        changes.append(change)
        if change < tol:
            break

    rows = ukeys // n
    cols = ukeys % n
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    out = sp.csr_matrix((a, cols, indptr), shape=shape)
    out.eliminate_zeros()
    info = {"iterations": len(changes), "max_change": changes[-1] if changes else 0.0,
            "union_nnz": int(len(ukeys))}
    return out, info


# --------------------------------------------------------------------------------------
# Eq 6-10: SISHE balanced sparse clustering
# --------------------------------------------------------------------------------------
def _threshold_roots(c, s):
    """For each row of ``c`` (n, m) the x with ``sum_j [x - c_j]_+ = s`` (s > 0), exactly.

    The left side is monotone piecewise-linear in x; sort the row ascending, and the root is
    ``(s + sum of the kappa smallest) / kappa`` for the largest kappa whose candidate exceeds
    the kappa-th smallest value (as in Euclidean projection onto the simplex).
    """
    cs = np.sort(c, axis=1)
    cum = np.cumsum(cs, axis=1)
    kap = np.arange(1, c.shape[1] + 1, dtype=np.float64)
    cand = (s + cum) / kap
    valid = cand > cs
    count = valid.sum(axis=1)
    count = np.maximum(count, 1)
    return cand[np.arange(c.shape[0]), count - 1]


def _qot(y, eta, f, g, tol, max_iter):
    """Quadratically regularised OT  min <Y, G> + eta/2 ||G||^2, rows sum 1, cols N/K.

    Exact dual ascent on ``max_{f,g} sum f + N/K sum g - 1/(2 eta) sum [f_i + g_j - Y_ij]_+^2``.
    f (rows, Eq 9) is always the exact maximiser for the current g, found by sorting each
    row, so rows sum to 1 to round-off.  g is improved on the concave semi-dual
    ``D(g) = max_f dual(f, g)`` (K variables, gradient = N/K - column sums) by damped Newton
    steps (Levenberg-Marquardt): ``(J + lam I) delta = grad`` with J the generalised
    Hessian of the active set, lam adapted trust-region style.  The damping matters: rows
    that sit in a single cluster add no curvature, so D is locally linear along some
    directions and plain Newton (and the paper's column step, which then only inflates
    those rows) crawls; the damped step crosses such flat pieces.  A step is accepted on a
    sufficient dual increase, or, once gains are below round-off, when it halves the
    marginal error; if no damping is accepted, the paper's exact column step (Eq 10,
    sorting each column) is taken.  Every step ascends the dual and the primal solution is
    unique, so the result is the one of the paper's alternation (``_qot_alternating``,
    tested), in about 10 iterations instead of hundreds to thousands.
    Returns (G, f, g, iterations, marginal error); stops when the largest column error is
    below ``tol``.
    """
    n, k = y.shape
    ct = n / k
    err = np.inf
    it = 0
    eye = np.eye(k)

    def rows(gv):
        fv = _threshold_roots(y - gv[None, :], eta)
        pos = np.maximum(fv[:, None] + gv[None, :] - y, 0.0)
        dual = float(fv.sum() - 0.5 / eta * np.einsum("ij,ij->", pos, pos) + ct * gv.sum())
        return fv, pos, dual

    f, pos, dual = rows(g)
    lam = 0.0
    for it in range(1, max_iter + 1):
        grad = ct - pos.sum(axis=0) / eta  # gradient of the semi-dual in g
        err = float(np.abs(grad).max())
        if err < tol or it == max_iter:
            break
        act = (pos > 0).astype(np.float64)
        size = act.sum(axis=1)
        size[size == 0] = 1.0
        jac = (np.diag(act.sum(axis=0)) - act.T @ (act / size[:, None])) / eta
        scale = max(float(np.trace(jac)) / k, 1.0)
        floor = 1e-12 * max(1.0, abs(dual))  # dual gains below this are round-off
        lam_try = max(lam, 1e-10 * scale)
        accepted = False
        for _ in range(40):
            delta = np.linalg.solve(jac + lam_try * eye, grad)
            delta -= delta.mean()  # D is invariant to g + c 1
            pred = float(grad @ delta - 0.5 * delta @ jac @ delta)
            f_t, pos_t, dual_t = rows(g + delta)
            gain = dual_t - dual
            rho = gain / pred if pred > 0 else -1.0
            ok = gain > floor and rho > 0.1
            if not ok and gain >= -floor:
                ok = float(np.abs(ct - pos_t.sum(axis=0) / eta).max()) <= 0.5 * err
            if ok:
                g, f, pos, dual = g + delta, f_t, pos_t, dual_t
                lam = lam_try / 4.0 if rho > 0.75 else lam_try
                if lam < 1e-10 * scale:
                    lam = 0.0
                accepted = True
                break
            lam_try *= 4.0
        if not accepted:  # the paper's exact column step, then exact rows
            g = _threshold_roots((y - f[:, None]).T, eta * ct)
            f, pos, dual = rows(g)
    return pos / eta, f, g, it, err


def _qot_alternating(y, eta, f, g, tol, max_iter):
    """Reference: the paper's plain alternation, f (rows, Eq 9) then g (columns, Eq 10),
    each exact by sorting, until the marginal error is below ``tol``."""
    n, k = y.shape
    col_target = n / k
    err = np.inf
    it = 0
    for it in range(1, max_iter + 1):
        f = _threshold_roots(y - g[None, :], eta)
        g = _threshold_roots((y - f[:, None]).T, eta * col_target)
        gam = np.maximum(f[:, None] + g[None, :] - y, 0.0) / eta
        err = _marginal_error(gam, col_target)
        if err < tol:
            break
    return gam, f, g, it, err


def _marginal_error(gam, col_target):
    re = np.abs(gam.sum(axis=1) - 1.0).max()
    ce = np.abs(gam.sum(axis=0) - col_target).max()
    return float(max(re, ce))


def _symmetric_part(A):
    return ((A + A.T) * 0.5).tocsr()


def _linearised_step(A, gamma, eta, tol=1e-9, inner_max_iter=10000):
    """One outer step of Algorithm 1 from ``gamma``: Y = -A_s gamma, then the exact regularised
    OT solution. Used to show that the uniform start gamma = 1/K is a fixed point."""
    A = _as_square_csr(A)
    As = _symmetric_part(A)
    gamma = np.asarray(gamma.toarray() if sp.issparse(gamma) else gamma, dtype=np.float64)
    n, k = gamma.shape
    y = -(As @ gamma)
    gam, *_ = _qot(y, float(eta), np.zeros(n), np.zeros(k), tol, inner_max_iter)
    return gam


def _sq_dist(x, sq, centers):
    """Squared distances (N, K); einsum avoids BLAS thread overhead on these thin products."""
    cc = np.einsum("ij,ij->i", centers, centers)
    return sq[:, None] - 2.0 * np.einsum("ij,kj->ik", x, centers) + cc[None, :]


def _kmeans(x, k, rng, n_iter=50, n_init=3):
    """Small seeded k-means (k-means++ seeding, Lloyd), returns labels of the best run."""
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centers = np.empty((k, x.shape[1]))
        centers[0] = x[rng.integers(n)]
        d2 = np.maximum(sq - 2 * x @ centers[0] + centers[0] @ centers[0], 0.0)
        for c in range(1, k):
            tot = d2.sum()
            idx = rng.choice(n, p=d2 / tot) if tot > 0 else rng.integers(n)
            centers[c] = x[idx]
            d2 = np.minimum(d2, np.maximum(sq - 2 * x @ centers[c] + centers[c] @ centers[c], 0.0))
        labels = None
        for _ in range(n_iter):
            dist = _sq_dist(x, sq, centers)
            new = dist.argmin(axis=1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            counts = np.bincount(labels, minlength=k)
            onehot = sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
            sums = np.asarray(onehot @ x)
            empty = counts == 0
            centers[~empty] = sums[~empty] / counts[~empty, None]
            if empty.any():  # re-seed empty clusters at the points farthest from their centre
                far = np.argsort(-dist[np.arange(n), labels], kind="stable")[: int(empty.sum())]
                centers[empty] = x[far]
        dist = _sq_dist(x, sq, centers)
        labels = dist.argmin(axis=1)
        inertia = float(dist[np.arange(n), labels].sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def _orthonormalize(q):
    """Orthonormal basis of the columns of a tall q (Cholesky QR, twice for accuracy)."""
    for _ in range(2):
        gram = q.T @ q
        gram += 1e-12 * max(float(np.trace(gram)), 1e-300) * np.eye(gram.shape[0])
        chol = np.linalg.cholesky(gram)
        q = np.linalg.solve(chol, q.T).T
    return q


def _spectral_start(As, k, rng, n_power=30):
    """Seeded spectral-like start: subspace iteration on (I + D^-1/2 A_s D^-1/2)/2, row
    normalisation, k-means; returns one-hot labels (N, K)."""
    n = As.shape[0]
    p = normalize_item_graph(As)
    dim = min(n, k + 5)
    q = _orthonormalize(rng.standard_normal((n, dim)))
    for t in range(n_power):
        q = 0.5 * (q + p @ q)
        if t % 5 == 4 or t == n_power - 1:
            q = _orthonormalize(q)
    emb = q[:, :dim]
    nr = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.where(nr > 0, nr, 1.0)
    labels = _kmeans(emb, k, rng)
    gamma0 = np.zeros((n, k))
    gamma0[np.arange(n), labels] = 1.0
    return gamma0


def sishe(A, n_clusters, eta, seed=0, max_iter=100, tol=1e-6, inner_max_iter=2000,
          return_history=False, init="spectral"):
    """Sparsity Item Similarity Hypergraph Exploration (Eq 6-10, Algorithm 1).

    Balanced soft clustering of the N items of the graph A into K clusters::

        gamma in R^{N x K}_+,  rows sum to 1,  columns sum to N / K.

    Each outer iteration linearises the quadratic term, ``Y = -A_s gamma`` (A_s = (A + A^T)/2,
    which equals A for symmetric A and is the part of A that trace(gamma^T A gamma) sees),
    and solves the quadratically regularised transport ``min <Y, G> + eta/2 ||G||^2`` under
    the two marginals, whose solution is ``G_ij = [(f_i + g_j - Y_ij) / eta]_+`` (Eq 8).
    f (rows, Eq 9) is found exactly by sorting (1-D monotone piecewise-linear roots, all rows
    at once); g (columns) by damped-Newton steps on the K-variable semi-dual, with the
    paper's exact sorting-based column step (Eq 10) as fallback, until the marginal error
    is below ``tol`` (at most ``inner_max_iter`` iterations).  This has the same solution as
    the paper's plain f/g alternation, which crawls on kNN graphs (see ``_qot``); f and g
    are warm-started across outer iterations.  The quadratic regulariser yields exact
    zeros, so gamma is sparse.

    Objective and safeguard.  This update is the conditional-gradient (majorise-minimise)
    step of ``J(gamma) = -trace(gamma^T A gamma) + eta ||gamma||^2`` (Eq 6's regulariser
    with the 1/2 dropped: with ``Y = -A gamma`` and ``eta/2`` in Eq 7, Eq 6's printed 1/2
    cannot also hold, since the gradient of Eq 6's first term is ``-2 A_s gamma``); the step
    direction ``G - gamma`` is a descent direction of J.  A kNN graph is not positive
    semi-definite, so the full step can overshoot and increase J; we therefore take the
    exact line search on the segment ``gamma + t (G - gamma)``, t in (0, 1] (J is quadratic
    in t, closed form).  J is thus non-increasing.  The segment stays feasible because the
    feasible set is convex.  Outer iterations stop when the step changes gamma by less than
    ``tol`` (max abs) or J by less than ``tol * max(1, |J|)``.

    Initialisation.  Algorithm 1 starts from ``gamma = 1/K``: that is a fixed point (then
    Y_ij = -(A_s 1)_i / K is the same in every column, so the transport solution is the
    uniform gamma again) and nothing is ever clustered.  ``init='spectral'`` (default)
    breaks the symmetry with a seeded spectral-like start (subspace iteration on the
    normalised graph, then seeded k-means; only used to form the first Y).
    ``init='random'`` uses a seeded random row-stochastic matrix; ``init='uniform'``
    reproduces Algorithm 1's start (returns the uniform gamma; for demonstration).

    Parameters
    ----------
    A : (N, N) sparse or dense, non-negative similarity graph (e.g. the RISGF output)
    n_clusters : int, 1 <= K <= N
    eta : float > 0
    seed : int, seeds the initialisation (results are deterministic per seed)
    max_iter : int, outer iterations
    tol : float, marginal / stopping tolerance
    inner_max_iter : int, inner (dual) iterations per outer iteration
    return_history : bool
    init : {'spectral', 'random', 'uniform'}

    Returns
    -------
    gamma : scipy.sparse.csr_matrix (N, K) float64; with ``return_history=True``
    ``(gamma, history)`` where history has ``objective`` (J per iteration, starting with the
    first iterate), ``trace`` (trace(gamma^T A gamma)), ``step`` (line-search t),
    ``inner_iterations``, ``marginal_error`` (per iteration and ``final_marginal_error``),
    ``iterations`` and ``converged``.
    """
    A = _as_square_csr(A)
    n = A.shape[0]
    k = integer_in_range(n_clusters, "n_clusters", 1)
    if k > n:
        raise ValueError(f"n_clusters must be in [1, N={n}] for A of shape {A.shape}, got {k}")
    eta = positive_number(eta, "eta")
    tol = positive_number(tol, "tol")
    max_iter = integer_in_range(max_iter, "max_iter", 0)
    inner_max_iter = integer_in_range(inner_max_iter, "inner_max_iter", 1)
    if init not in ("spectral", "random", "uniform"):
        raise ValueError(f"init must be 'spectral', 'random' or 'uniform', got {init!r}")
    rng = np.random.default_rng(seed)
    As = _symmetric_part(A)

    if init == "spectral" and k > 1:
        gamma0 = _spectral_start(As, k, rng)
    elif init == "random" and k > 1:
        gamma0 = rng.random((n, k))
        gamma0 /= gamma0.sum(axis=1, keepdims=True)
    else:
        gamma0 = np.full((n, k), 1.0 / k)

    f = np.zeros(n)
    g = np.zeros(k)
    hist = {"objective": [], "trace": [], "step": [], "inner_iterations": [], "marginal_error": []}

    # first iterate: the regularised-OT solution for Y from the start (which need not be
    # feasible; it only breaks the symmetry)
    gamma, f, g, it_in, err = _qot(-(As @ gamma0), eta, f, g, tol, inner_max_iter)
    ag = As @ gamma

    def objective(gm, agm):
        tr = float(np.sum(gm * agm))
        return -tr + eta * float(np.sum(gm * gm)), tr

    obj, tr = objective(gamma, ag)
    hist["objective"].append(obj)
    hist["trace"].append(tr)
    hist["step"].append(1.0)
    hist["inner_iterations"].append(it_in)
    hist["marginal_error"].append(err)
    converged = False
    for _ in range(max_iter):
        cand, f, g, it_in, err = _qot(-ag, eta, f, g, tol, inner_max_iter)
        d = cand - gamma
        if float(np.abs(d).max()) < tol:
            converged = True
            break
        ad = As @ d
        slope = 2.0 * (-float(np.sum(d * ag)) + eta * float(np.sum(gamma * d)))  # <grad J, d>
        curv = -float(np.sum(d * ad)) + eta * float(np.sum(d * d))  # J(g + t d) = J + t slope + t^2 curv
        if slope >= 0.0:  # not a descent direction (only possible through round-off)
            converged = True
            break
        t = 1.0 if curv <= 0.0 else min(1.0, -slope / (2.0 * curv))
        gamma = gamma + t * d
        ag = ag + t * ad
        if t < 1.0:
            gamma[gamma < 1e-15] = 0.0
        new_obj, tr = objective(gamma, ag)
        hist["objective"].append(new_obj)
        hist["trace"].append(tr)
        hist["step"].append(t)
        hist["inner_iterations"].append(it_in)
        hist["marginal_error"].append(_marginal_error(gamma, n / k))
        small_step = t * float(np.abs(d).max()) < tol
        small_gain = obj - new_obj <= tol * max(1.0, abs(new_obj))
        obj = new_obj
        if small_step or small_gain:
            converged = True
            break

    out = sp.csr_matrix(gamma)
    out.eliminate_zeros()
    if not return_history:
        return out
    hist["iterations"] = len(hist["objective"])
    hist["converged"] = converged
    hist["final_marginal_error"] = _marginal_error(gamma, n / k)
    hist["init"] = init
    return out, hist


# --------------------------------------------------------------------------------------
# Eq 12-13: operators used by the model
# --------------------------------------------------------------------------------------
def normalize_item_graph(A):
    """``D^-1/2 A D^-1/2`` with ``D = diag(A 1)`` (row sums; Eq 12) as a csr matrix.

    A may be directed (asymmetric): the paper's ``D_S = diag(A 1)`` is used on both sides.
    Rows with zero (or negative) degree get scale 0 instead of a division by zero.
    """
    A = _as_square_csr(A)
    deg = np.asarray(A.sum(axis=1)).ravel()
    scale = np.zeros_like(deg)
    pos = deg > 0
    scale[pos] = 1.0 / np.sqrt(deg[pos])
    d = sp.diags(scale)
    out = (d @ A @ d).tocsr()
    out.eliminate_zeros()
    return out


def hypergraph_factors(gamma):
    """Eq 13 hypergraph operator ``D_V^-1 gamma D_E^-1 gamma^T`` in factored form.

    Returns ``(left, right)`` with ``left = D_V^-1 gamma`` (N, K) and
    ``right = D_E^-1 gamma^T`` (K, N), both csr, so that the operator applied to X is
    ``left @ (right @ X)``: O(nnz(gamma) * D), never the dense-ish N x N ``gamma gamma^T``.
    ``D_V = diag(gamma 1)`` (= I for a valid gamma) and ``D_E = diag(gamma^T 1)``
    (= N/K I), so the operator is ``(K/N) gamma gamma^T``, a row-stochastic averaging.
    The paper prints ``D_E^-1/2``; that operator's scale grows like sqrt(N/K), whereas the
    standard HGNN normalisation ``D_E^-1`` keeps it scale-free, so ``D_E^-1`` is used.
    Zero-degree rows / columns get scale 0.
    """
    if sp.issparse(gamma):
        gm = sp.csr_matrix(gamma, dtype=np.float64)
    else:
        gm = np.asarray(gamma, dtype=np.float64)
        if gm.ndim != 2:
            raise ValueError(f"gamma must be a 2-D (N, K) matrix, got shape {gm.shape}")
        gm = sp.csr_matrix(gm)
    if gm.data.size and (not np.isfinite(gm.data).all() or gm.data.min() < 0):
        raise ValueError("gamma must be finite and non-negative")
    dv = np.asarray(gm.sum(axis=1)).ravel()
    de = np.asarray(gm.sum(axis=0)).ravel()
    inv_v = np.where(dv > 0, 1.0 / np.where(dv > 0, dv, 1.0), 0.0)
    inv_e = np.where(de > 0, 1.0 / np.where(de > 0, de, 1.0), 0.0)
    left = (sp.diags(inv_v) @ gm).tocsr()
    right = (sp.diags(inv_e) @ gm.T).tocsr()
    return left, right


def apply_hypergraph(left, right, X):
    """``left @ (right @ X)`` for a numpy X (N, D): the Eq 13 propagation without weights."""
    x = np.asarray(X)
    return np.asarray(left @ (right @ x))


# --------------------------------------------------------------------------------------
# entry point with cache
# --------------------------------------------------------------------------------------
ItemStructure = namedtuple("ItemStructure", ["A", "gamma", "info"])
ItemStructure.__doc__ = """Result of build_item_structure: ``A`` (N, N) csr fused item graph,
``gamma`` (N, K) csr clustering, ``info`` dict (timings, sishe history, densities, cache)."""

# fixed knobs of the pipeline that are not arguments of build_item_structure; part of the key
_PIPELINE_DEFAULTS = {
    "knn_backend": "exact",
    "risgf_max_iter": 100,
    "risgf_tol": 1e-6,
    "sishe_max_iter": 100,
    "sishe_tol": 1e-6,
    "sishe_inner_max_iter": 2000,
    "sishe_init": "spectral",
}


def _cache_key(features, params):
    h = hashlib.sha256()
    h.update(f"sieoug-item-structure-v{CACHE_FORMAT_VERSION}\0".encode())
    h.update(json.dumps(params, sort_keys=True).encode())
    for name in sorted(features):
        x = features[name]
        header = json.dumps([name, x.dtype.str, list(x.shape)])
        h.update(b"\0mod\0" + header.encode() + b"\0")
        h.update(memoryview(np.ascontiguousarray(x)).cast("B"))
    return h.hexdigest()


def _to_jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _atomic_write(path, writer):
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def build_item_structure(features, z=5, mu=0.1, eta=0.1, n_clusters=15, seed=0,
                         include_self=False, cache_dir=None, progress=True):
    """kNN per modality -> RISGF -> SISHE, with an optional on-disk cache.

    Parameters
    ----------
    features : dict modality name -> (N, d) array (all modalities have the same N).  The
        modalities are processed in sorted-name order, so the dict order is irrelevant.
    z, mu, eta, n_clusters : paper's top-z, RISGF mu, SISHE eta and K (defaults 5, 0.1, 0.1, 15)
    seed : SISHE initialisation seed
    include_self : keep self-edges in the kNN graphs (see ``knn_graph``); z is capped at
        N - 1 (N with self-edges) for catalogues smaller than z + 1
    cache_dir : if given, results are stored as ``<key>_A.npz``, ``<key>_gamma.npz`` (scipy
        sparse npz, no pickle) and ``<key>_info.json``, where key = sha256 over a format
        version, every parameter (and the pipeline's fixed knobs) and, per modality, its
        name, dtype, shape and raw bytes.  A hit sets ``info['cache_hit'] = True``.
    progress : show a tqdm bar over the steps

    Returns
    -------
    ItemStructure(A, gamma, info)
    """
    if not isinstance(features, Mapping) or len(features) == 0:
        raise ValueError("features must be a non-empty dict: modality name -> (N, d) array")
    feats = {}
    for name in sorted(features, key=str):
        if not isinstance(name, str):
            raise ValueError(f"features: modality names must be strings, got {name!r}")
        feats[name] = _as_feature_matrix(features[name], name=f"features[{name!r}]")
    ns = {name: x.shape[0] for name, x in feats.items()}
    if len(set(ns.values())) != 1:
        raise ValueError(f"features: all modalities must have the same number of rows, got {ns}")
    n = next(iter(ns.values()))
    z = integer_in_range(z, "z", 1)
    mu = positive_number(mu, "mu")
    eta = positive_number(eta, "eta")
    n_clusters = integer_in_range(n_clusters, "n_clusters", 1, n)
    seed = integer_in_range(seed, "seed", 0)
    params = {"z": z, "mu": mu, "eta": eta, "n_clusters": n_clusters, "seed": seed,
              "include_self": bool(include_self), **_PIPELINE_DEFAULTS}

    paths = None
    key = None
    if cache_dir is not None:
        # hash the caller's arrays as given (dtype included), not the converted copies
        raw = {name: np.asarray(features[name]) for name in feats}
        key = _cache_key(raw, params)
        os.makedirs(cache_dir, exist_ok=True)
        paths = {s: os.path.join(cache_dir, f"{key}_{s}") for s in ("A.npz", "gamma.npz", "info.json")}
        if all(os.path.exists(p) for p in paths.values()):
            A = sp.load_npz(paths["A.npz"]).tocsr()
            gamma = sp.load_npz(paths["gamma.npz"]).tocsr()
            with open(paths["info.json"], encoding="utf-8") as fh:
                info = json.load(fh)
            info["cache_hit"] = True
            info["cache_key"] = key
            return ItemStructure(A, gamma, info)

    from tqdm.auto import tqdm

    info = {"params": params, "modalities": list(feats), "n_items": n, "timings": {},
            "knn_nnz": {}, "cache_hit": False, "cache_key": key}
    bar = tqdm(total=len(feats) + 2, desc="item structure", disable=not progress)
    graphs = []
    try:
        for name, x in feats.items():
            bar.set_postfix_str(f"kNN {name}")
            t0 = time.perf_counter()
            g = knn_graph(x, min(z, n - 1 if not include_self else n), include_self=include_self,
                          backend=_PIPELINE_DEFAULTS["knn_backend"])
            info["timings"][f"knn[{name}]"] = time.perf_counter() - t0
            info["knn_nnz"][name] = int(g.nnz)
            graphs.append(g)
            bar.update(1)
        bar.set_postfix_str("RISGF")
        t0 = time.perf_counter()
        A, rinfo = _risgf(graphs, mu, _PIPELINE_DEFAULTS["risgf_max_iter"], _PIPELINE_DEFAULTS["risgf_tol"])
        info["timings"]["risgf"] = time.perf_counter() - t0
        info["risgf"] = rinfo
        bar.update(1)
        bar.set_postfix_str("SISHE")
        t0 = time.perf_counter()
        gamma, hist = sishe(A, n_clusters, eta, seed=seed, max_iter=_PIPELINE_DEFAULTS["sishe_max_iter"],
                            tol=_PIPELINE_DEFAULTS["sishe_tol"],
                            inner_max_iter=_PIPELINE_DEFAULTS["sishe_inner_max_iter"],
                            return_history=True, init=_PIPELINE_DEFAULTS["sishe_init"])
        info["timings"]["sishe"] = time.perf_counter() - t0
        info["sishe"] = hist
        bar.update(1)
    finally:
        bar.close()
    info["density"] = {"A": A.nnz / float(n * n), "gamma": gamma.nnz / float(n * n_clusters)}
    info = _to_jsonable(info)

    if paths is not None:
        _atomic_write(paths["A.npz"], lambda p: sp.save_npz(p, A, compressed=True))
        _atomic_write(paths["gamma.npz"], lambda p: sp.save_npz(p, gamma, compressed=True))

        def _write_info(p):
            with open(p, "w", encoding="utf-8") as fh:
                json.dump(info, fh)

        _atomic_write(paths["info.json"], _write_info)
    return ItemStructure(A, gamma, info)
