"""Top-z cosine kNN graphs of item features (SIEOUG Eq 1-2): exact in row blocks, or faiss."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from sieoug_recbole.checks import integer_in_range

from ._inputs import as_feature_matrix

# default number of float entries of one similarity block (block_size rows x N columns)
BLOCK_ELEMENTS = 1 << 25

#: backend='auto' uses faiss (when installed) above this many items, the exact search below
FAISS_MIN_ITEMS = 50_000
#: faiss settings (see faiss_settings): IVF cells = LISTS_PER_SQRT_N sqrt(N); cells scanned
#: per query (recall@5 follows the number of cells scanned, not their share: 0.93 / 0.97 /
#: 0.98 with 128 / 192 / 256 of them at both 50k and 100k items of the benchmark's planted
#: data); dimensions per 4-bit PQ sub-vector, at most PQ_SUBVECTOR_DIM and few enough for
#: PQ_MIN_SUBVECTORS sub-vectors (coarser codes lose recall that re-ranking cannot
#: recover: 0.94 instead of 1.00 on 8,000 tightly clustered 32-d points with 8 sub-vectors);
#: k-means sample and iterations of the cells; candidates per wanted neighbour re-ranked
#: exactly
FAISS_LISTS_PER_SQRT_N = 4
FAISS_PROBE = 192
FAISS_PQ_SUBVECTOR_DIM = 4
FAISS_PQ_MIN_SUBVECTORS = 32
FAISS_TRAIN_POINTS_PER_LIST = 16
FAISS_KMEANS_ITER = 10
FAISS_CANDIDATES_PER_NEIGHBOUR = 16
#: queries per faiss search call (faiss's buffers take about 15 KB per query: 240 MB for
#: this block; 1 << 16 took 1.2 GB at 100k items and was no faster)
FAISS_QUERY_BLOCK = 1 << 14

_warned_no_faiss = False


def knn_graph(features, k, include_self=False, block_size=None, backend="auto"):
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
    backend : {'auto', 'exact', 'faiss'}
        'exact': blocked exact search.  'faiss': approximate search (inverted file over
        product-quantised codes, then exact re-ranking of the candidates by the same rules;
        needs the optional extra ``pip install -e .[faiss]``).  'auto' (default): faiss
        above ``FAISS_MIN_ITEMS`` items when faiss is installed, exact otherwise (see
        ``choose_backend``).

    Returns
    -------
    scipy.sparse.csr_matrix (N, N), float32, value 1.0 on each edge, sorted indices.

    Rules (exact backend; the faiss backend applies them to the candidates it finds)
    ---------------------------------------------------------------------------------
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
    if backend not in ("auto", "exact", "faiss"):
        raise ValueError(f"backend must be 'auto', 'exact' or 'faiss', got {backend!r}")
    if backend == "auto":
        backend = choose_backend(n)
    if backend == "exact":
        rows, cols = _knn_exact(x, k, bool(include_self), block_size)
    else:
        rows, cols = _knn_faiss(x, k, bool(include_self))
    data = np.ones(len(rows), dtype=np.float32)
    g = sp.csr_matrix((data, (rows, cols)), shape=(n, n))
    g.sum_duplicates()
    g.sort_indices()
    return g


def _pow2_scale(x):
    """If max |x| is very large or very small, multiply by a power of two (exact, keeps
    ties) so that it is in [0.5, 1): dot products can then neither overflow nor underflow."""
    m = float(np.abs(x).max()) if x.size else 0.0
    if m == 0.0 or 2.0**-30 <= m <= 2.0**30:
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


def faiss_available():
    """True when the optional faiss package can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(n_items):
    """The backend ``knn_graph(backend='auto')`` uses for ``n_items`` items.

    'faiss' above ``FAISS_MIN_ITEMS`` items when faiss is installed, else 'exact'.  Above
    the threshold without faiss, a warning (once per process) names the install command.
    """
    global _warned_no_faiss
    if n_items <= FAISS_MIN_ITEMS:
        return "exact"
    if faiss_available():
        return "faiss"
    if not _warned_no_faiss:
        _warned_no_faiss = True
        warnings.warn(
            f"knn_graph: {n_items} items is above FAISS_MIN_ITEMS = {FAISS_MIN_ITEMS}, where the "
            "approximate faiss search is much faster than the exact one (quadratic in N), but "
            "faiss is not installed; using the exact search. Install it with "
            "`pip install -e .[faiss]`.",
            RuntimeWarning,
            stacklevel=3,
        )
    return "exact"


def faiss_settings(n_items, dim, k):
    """The faiss search's settings for ``n_items`` non-zero rows of dimension ``dim``.

    An inverted file of ``lists`` k-means cells (about 4 sqrt(N); k-means of ``kmeans_iter``
    iterations on ``train_points`` rows) over 4-bit product-quantised codes (fast-scan) of
    ``pq_subvectors`` sub-vectors of ``pq_subvector_dim`` dimensions; each query scans its
    ``probe`` nearest cells (a fixed number, so a query reads about probe * N / lists =
    48 sqrt(N) codes), and its ``candidates`` best codes are re-ranked with exact float32
    cosines.
    """
    lists = max(1, min(int(FAISS_LISTS_PER_SQRT_N * np.sqrt(n_items)), n_items // 8))
    sub_dim = min(FAISS_PQ_SUBVECTOR_DIM, max(1, dim // FAISS_PQ_MIN_SUBVECTORS))
    return {
        "lists": lists,
        "probe": min(lists, FAISS_PROBE),
        "pq_subvector_dim": sub_dim,
        "pq_subvectors": -(-dim // sub_dim),
        "train_points": min(n_items, FAISS_TRAIN_POINTS_PER_LIST * lists),
        "kmeans_iter": FAISS_KMEANS_ITER,
        "candidates": min(n_items, FAISS_CANDIDATES_PER_NEIGHBOUR * (k + 1)),
    }


def faiss_signature():
    """faiss's version and the constants of faiss_settings: what a faiss graph depends on
    besides the features (part of build_item_structure's cache key)."""
    import faiss

    return {
        "version": faiss.__version__,
        "lists_per_sqrt_n": FAISS_LISTS_PER_SQRT_N,
        "probe": FAISS_PROBE,
        "pq_subvector_dim": FAISS_PQ_SUBVECTOR_DIM,
        "pq_min_subvectors": FAISS_PQ_MIN_SUBVECTORS,
        "train_points_per_list": FAISS_TRAIN_POINTS_PER_LIST,
        "kmeans_iter": FAISS_KMEANS_ITER,
        "candidates_per_neighbour": FAISS_CANDIDATES_PER_NEIGHBOUR,
    }


def _import_faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "knn_graph(backend='faiss') needs faiss; install the optional extra with "
            "`pip install -e .[faiss]` (`pip install sieoug-recbole[faiss]`), or use backend='exact'"
        ) from exc
    return faiss


def _unit_rows(x, ids, inv_norms, width):
    """Rows ``ids`` of x scaled to unit length, float32, zero-padded to ``width`` columns."""
    out = np.zeros((len(ids), width), dtype=np.float32)
    out[:, : x.shape[1]] = x[ids] * inv_norms[ids, None]
    return out


def _faiss_index(faiss, x, nz, inv_norms, settings):
    """Inner-product index over the unit rows ``nz`` of x (faiss ids 0..len(nz)-1): an IVF +
    PQ fast-scan index proposes candidates, a flat float32 copy re-ranks them exactly."""
    width = settings["pq_subvector_dim"] * settings["pq_subvectors"]
    index = faiss.index_factory(
        width, f"IVF{settings['lists']},PQ{settings['pq_subvectors']}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT
    )
    ivf = faiss.downcast_index(faiss.downcast_index(index).base_index)
    ivf.cp.min_points_per_centroid = 1  # the sample sizes are chosen in faiss_settings
    ivf.cp.niter = settings["kmeans_iter"]
    ivf.pq.cp.min_points_per_centroid = 1
    ivf.pq.cp.max_points_per_centroid = 64  # 1,024 points train each 16-centroid sub-quantizer
    ivf.pq.cp.niter = settings["kmeans_iter"]
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(nz), settings["train_points"], replace=False))
    index.train(_unit_rows(x, nz[sample], inv_norms, width))
    for start in range(0, len(nz), FAISS_QUERY_BLOCK):
        index.add(_unit_rows(x, nz[start : start + FAISS_QUERY_BLOCK], inv_norms, width))
    ivf.nprobe = settings["probe"]
    return index


def _knn_faiss(x, k, include_self):
    """Approximate top-k by faiss; among equal scores the lower index first (as exact)."""
    faiss = _import_faiss()
    n = x.shape[0]
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    nz = np.flatnonzero(norms > 0)
    inv_norms = np.zeros(n)
    inv_norms[nz] = 1.0 / norms[nz]
    want = k - 1 if include_self else k
    out_rows, out_cols = [], []
    if include_self:
        out_rows.append(np.arange(n, dtype=np.int64))
        out_cols.append(np.arange(n, dtype=np.int64))
    if want > 0 and len(nz) > 1:
        settings = faiss_settings(len(nz), x.shape[1], want)
        index = _faiss_index(faiss, x, nz, inv_norms, settings)
        params = faiss.SearchParametersIVF(nprobe=settings["probe"])
        refine = faiss.IndexRefineSearchParameters(
            k_factor=settings["candidates"] / (want + 1), base_index_params=params
        )
        width = settings["pq_subvector_dim"] * settings["pq_subvectors"]
        for start in range(0, len(nz), FAISS_QUERY_BLOCK):
            ids = np.arange(start, min(start + FAISS_QUERY_BLOCK, len(nz)))
            score, found = index.search(_unit_rows(x, nz[ids], inv_norms, width), want + 1, params=refine)
            rows, cols = _best_found(ids, score, found, want)
            out_rows.append(nz[rows])
            out_cols.append(nz[cols])
        del index
    rows = np.concatenate(out_rows) if out_rows else np.zeros(0, np.int64)
    cols = np.concatenate(out_cols) if out_cols else np.zeros(0, np.int64)
    return rows, cols


def _best_found(ids, score, found, want):
    """Per query (local id ``ids[r]``), the first ``want`` results other than itself and -1,
    by score, then lower id; returns (local rows, local columns)."""
    score = np.where((found < 0) | (found == ids[:, None]), -np.inf, score)
    order = np.lexsort((found, -score), axis=1)[:, :want]
    cols = np.take_along_axis(found, order, axis=1)
    keep = np.take_along_axis(score, order, axis=1) > -np.inf
    rows = np.broadcast_to(ids[:, None], cols.shape)
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)
