"""Argument conversion shared by the similarity steps: one clear ``ValueError`` per bad input."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def as_feature_matrix(features, name="features"):
    """``features`` as a C-contiguous float32 / float64 (N, d) array with N, d >= 1, finite."""
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
    rows = max(1, (1 << 22) // x.shape[1])  # checked in blocks: no N x d temporary
    if not all(np.isfinite(x[s : s + rows]).all() for s in range(0, x.shape[0], rows)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(x)


def as_square_csr(A, name="A"):
    """``A`` (sparse or dense, square) as a float64 csr matrix with duplicates summed, finite."""
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
