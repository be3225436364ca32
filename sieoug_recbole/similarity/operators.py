"""Sparse operators the model propagates with: Eq 12 item graph, Eq 13 hypergraph (factored)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._inputs import as_square_csr


def normalize_item_graph(A):
    """``D^-1/2 A D^-1/2`` with ``D = diag(A 1)`` (row sums; Eq 12) as a csr matrix.

    A may be directed (asymmetric): the paper's ``D_S = diag(A 1)`` is used on both sides.
    Rows with zero (or negative) degree get scale 0 instead of a division by zero.
    """
    A = as_square_csr(A)
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
