"""Robust Item Similarity Graph Fusion, RISGF (SIEOUG Eq 3-5)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from sieoug_recbole.checks import integer_in_range, positive_number

from ._inputs import as_square_csr


def risgf(graphs, mu, max_iter=100, tol=1e-6, return_info=False):
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
    return_info : bool, also return ``{'iterations', 'max_change', 'union_nnz'}``

    Returns
    -------
    scipy.sparse.csr_matrix (N, N), float64, values in [0, 1], explicit zeros removed; with
    ``return_info=True`` ``(A, info)``.
    """
    mats = _checked_graphs(graphs)
    mu = positive_number(mu, "mu")
    max_iter = integer_in_range(max_iter, "max_iter", 1)
    tol = positive_number(tol, "tol")
    shape = mats[0].shape
    keys, values = _union_values(mats)
    a, changes = _fixed_point(values, mu, max_iter, tol)
    out = _csr_from_keys(keys, a, shape)
    if not return_info:
        return out
    info = {"iterations": len(changes), "max_change": changes[-1] if changes else 0.0, "union_nnz": int(len(keys))}
    return out, info


def _checked_graphs(graphs):
    """The inputs as a list of float64 csr matrices of one square shape."""
    if sp.issparse(graphs) or isinstance(graphs, np.ndarray):
        graphs = [graphs]
    graphs = list(graphs)
    if len(graphs) == 0:
        raise ValueError("graphs must contain at least one (N, N) matrix, got an empty list")
    mats = [as_square_csr(g, name=f"graphs[{m}]") for m, g in enumerate(graphs)]
    shape = mats[0].shape
    for m, g in enumerate(mats):
        if g.shape != shape:
            raise ValueError(f"graphs must all have the same shape: graphs[0] is {shape}, graphs[{m}] is {g.shape}")
    return mats


def _union_values(mats):
    """Sorted keys ``row * N + col`` of the union of the supports and the (M, nnz) values."""
    n = mats[0].shape[0]
    keys, vals, mods = [], [], []
    for m, g in enumerate(mats):
        c = g.tocoo()
        keys.append(c.row.astype(np.int64) * n + c.col.astype(np.int64))
        vals.append(c.data)
        mods.append(np.full(c.nnz, m, dtype=np.int64))
    ukeys, inv = np.unique(np.concatenate(keys), return_inverse=True)
    v = np.zeros((len(mats), len(ukeys)), dtype=np.float64)
    v[np.concatenate(mods), inv] = np.concatenate(vals)
    return ukeys, v


def _fixed_point(v, mu, max_iter, tol):
    """Eq 4-5 from the clipped mean; returns A's values and the max change per iteration."""
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
    return a, changes


def _csr_from_keys(keys, values, shape):
    n = shape[0]
    rows = keys // n
    cols = keys % n
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    out = sp.csr_matrix((values, cols, indptr), shape=shape)
    out.eliminate_zeros()
    return out
