"""Seeded spectral-like start of SISHE: subspace iteration on the normalised graph, then k-means.

Only the first linearisation of SISHE uses it (Algorithm 1's uniform start is a fixed
point).  The embedding is float32, N x min(K + 5, 64), and k-means is fitted on a seeded
sample of max(``KMEANS_MIN_SAMPLE``, ``KMEANS_SAMPLE_PER_CLUSTER`` * K) rows and then
assigns every row, so that a start for 10^6 items and K = 200 takes about 30 sparse
products of 64 columns and a few hundred MB, never an N x K distance matrix per step.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .operators import normalize_item_graph

#: embedding dimension K + 5, at most this (a random projection of the cluster indicators
#: into 64 dimensions still separates hundreds of clusters; the cost is linear in it)
SPECTRAL_MAX_DIM = 64
KMEANS_MIN_SAMPLE = 10_000
KMEANS_SAMPLE_PER_CLUSTER = 100
# rows per block when products of an (N, dim) matrix are formed in float64 or as distances
_ROW_BLOCK = 1 << 16


def spectral_start(As, k, rng, n_power=30):
    """One-hot labels (N, K) csr: subspace iteration (``n_power`` steps) on
    ``(I + D^-1/2 A_s D^-1/2) / 2`` with min(K + 5, SPECTRAL_MAX_DIM) seeded random vectors,
    row normalisation,
    seeded k-means++ / Lloyd (3 restarts)."""
    n = As.shape[0]
    p = normalize_item_graph(As).astype(np.float32)
    dim = min(n, k + 5, SPECTRAL_MAX_DIM)
    q = _orthonormalize(rng.standard_normal((n, dim), dtype=np.float32))
    for t in range(n_power):
        pq = p @ q
        q += pq
        q *= 0.5
        del pq
        if t % 5 == 4 or t == n_power - 1:
            q = _orthonormalize(q)
    nr = np.linalg.norm(q, axis=1, keepdims=True)
    q /= np.where(nr > 0, nr, 1.0)
    labels = _sampled_kmeans(q, k, rng)
    return sp.csr_matrix((np.ones(n), (np.arange(n), labels)), shape=(n, k))


def _orthonormalize(q):
    """Orthonormal basis of the columns of a tall float32 q (Cholesky QR twice, the Gram
    matrix accumulated in float64 over row blocks; q is overwritten)."""
    for _ in range(2):
        gram = np.zeros((q.shape[1], q.shape[1]))
        for s in range(0, q.shape[0], _ROW_BLOCK):
            block = q[s : s + _ROW_BLOCK].astype(np.float64)
            gram += block.T @ block
        gram += 1e-12 * max(float(np.trace(gram)), 1e-300) * np.eye(gram.shape[0])
        inv_t = np.linalg.inv(np.linalg.cholesky(gram)).T
        for s in range(0, q.shape[0], _ROW_BLOCK):
            q[s : s + _ROW_BLOCK] = q[s : s + _ROW_BLOCK].astype(np.float64) @ inv_t
    return q


def _sampled_kmeans(x, k, rng):
    """k-means fitted on a seeded row sample, then every row's nearest centre."""
    n = x.shape[0]
    m = max(KMEANS_MIN_SAMPLE, KMEANS_SAMPLE_PER_CLUSTER * k)
    sample = x if n <= m else x[np.sort(rng.choice(n, m, replace=False))]
    centers = _kmeans(sample.astype(np.float64), k, rng)
    labels = np.empty(n, dtype=np.int64)
    for s in range(0, n, _ROW_BLOCK):
        labels[s : s + _ROW_BLOCK] = _sq_dist(x[s : s + _ROW_BLOCK].astype(np.float64), centers).argmin(axis=1)
    return labels


def _sq_dist(x, centers):
    """Squared distances (n, K) up to the per-row constant |x|^2 (enough for argmin)."""
    return np.einsum("ij,ij->i", centers, centers)[None, :] - 2.0 * (x @ centers.T)


def _kmeans(x, k, rng, n_iter=50, n_init=3):
    """Small seeded k-means (k-means++ seeding, Lloyd); returns the centres of the best run."""
    sq = np.einsum("ij,ij->i", x, x)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centers = _kmeans_plus_plus(x, sq, k, rng)
        labels = None
        for _ in range(n_iter):
            dist = _sq_dist(x, centers)
            new = dist.argmin(axis=1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            _move_centres(x, labels, dist + sq[:, None], centers)
        dist = _sq_dist(x, centers) + sq[:, None]
        inertia = float(dist.min(axis=1).sum())
        if inertia < best_inertia:
            best, best_inertia = centers, inertia
    return best


def _kmeans_plus_plus(x, sq, k, rng):
    n = x.shape[0]
    centers = np.empty((k, x.shape[1]))
    centers[0] = x[rng.integers(n)]
    d2 = np.maximum(sq - 2 * x @ centers[0] + centers[0] @ centers[0], 0.0)
    for c in range(1, k):
        tot = d2.sum()
        idx = rng.choice(n, p=d2 / tot) if tot > 0 else rng.integers(n)
        centers[c] = x[idx]
        d2 = np.minimum(d2, np.maximum(sq - 2 * x @ centers[c] + centers[c] @ centers[c], 0.0))
    return centers


def _move_centres(x, labels, dist, centers):
    """Lloyd's update in place; an empty cluster is re-seeded at the points farthest from
    their centre."""
    n, k = x.shape[0], centers.shape[0]
    counts = np.bincount(labels, minlength=k)
    onehot = sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
    sums = np.asarray(onehot @ x)
    empty = counts == 0
    centers[~empty] = sums[~empty] / counts[~empty, None]
    if empty.any():
        far = np.argsort(-dist[np.arange(n), labels], kind="stable")[: int(empty.sum())]
        centers[empty] = x[far]
