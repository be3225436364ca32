"""Tests for sieoug_recbole.similarity (paper Sec 3.1, Appendix A)."""

import time
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import normalized_mutual_info_score

from sieoug_recbole.similarity import (
    build_item_structure,
    hypergraph_factors,
    knn_graph,
    normalize_item_graph,
    pipeline,
    regularised_transport,
    risgf,
    sishe,
)


# ----------------------------------------------------------------------------- helpers
def brute_force_knn(x, k, include_self=False):
    """Dense reference: cosine, ties -> lower column index, zero rows -> no edges."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    norms = np.linalg.norm(x, axis=1)
    zero = norms == 0
    xn = x / np.where(zero, 1.0, norms)[:, None]
    s = xn @ xn.T
    s[:, zero] = -np.inf
    np.fill_diagonal(s, np.inf if include_self else -np.inf)
    out = np.zeros((n, n))
    for i in range(n):
        if zero[i]:
            if include_self:
                out[i, i] = 1
            continue
        order = np.lexsort((np.arange(n), -s[i]))[:k]  # value desc, then lower index
        order = order[s[i, order] > -np.inf]
        out[i, order] = 1
    return out


def planted(n, n_clusters, d=16, noise=(2.5, 2.5, 4.0), seed=0):
    """n items in equal well-separated clusters; one feature matrix per noise level."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_clusters), n // n_clusters)
    rng.shuffle(labels)
    feats = {}
    for m, sd in enumerate(noise):
        centers = 3.0 * rng.standard_normal((n_clusters, d))
        feats[f"mod{m}"] = centers[labels] + sd * rng.standard_normal((len(labels), d))
    return feats, labels


def random_graph(n, k, seed):
    rng = np.random.default_rng(seed)
    cols = np.stack([rng.choice(np.delete(np.arange(n), i), k, replace=False) for i in range(n)])
    rows = np.repeat(np.arange(n), k)
    return sp.csr_matrix((np.ones(n * k), (rows, cols.ravel())), shape=(n, n))


def within_fraction(a, labels):
    c = a.tocoo()
    return c.data[labels[c.row] == labels[c.col]].sum() / c.data.sum()


@pytest.fixture(scope="module")
def planted_graph():
    feats, labels = planted(480, 6)
    graphs = [knn_graph(feats[m], 5) for m in sorted(feats)]
    return feats, labels, graphs, risgf(graphs, 0.1)


@pytest.fixture(scope="module")
def planted_sishe(planted_graph):
    _, labels, _, a = planted_graph
    gamma, hist = sishe(a, 6, 0.1, seed=0, return_history=True)
    return a, labels, gamma, hist


# ----------------------------------------------------------------------------- knn_graph
@pytest.mark.parametrize("n,block_size", [(96, 32), (96, 12), (96, 7), (97, 50), (97, 97), (97, 1), (97, None)])
@pytest.mark.parametrize("k", [1, 5])
def test_knn_matches_brute_force(n, block_size, k):
    rng = np.random.default_rng(n + k)
    x = rng.standard_normal((n, 8))
    g = knn_graph(x, k, block_size=block_size)
    assert sp.isspmatrix_csr(g) and g.shape == (n, n) and g.dtype in (np.float32, np.float64)
    assert np.array_equal(g.toarray(), brute_force_knn(x, k))
    assert np.all(np.diff(g.indptr) == k)
    assert np.all(g.diagonal() == 0)


def test_knn_float32_and_include_self():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 5)).astype(np.float32)
    assert np.array_equal(knn_graph(x, 4, block_size=13).toarray(), brute_force_knn(x, 4))
    g = knn_graph(x, 4, include_self=True, block_size=13)
    assert np.all(g.diagonal() == 1)
    assert np.array_equal(g.toarray(), brute_force_knn(x, 4, include_self=True))
    assert knn_graph(x, 60, include_self=True).nnz == 60 * 60  # k = N allowed with self


def test_knn_ties_broken_by_lower_index_for_every_block_size():
    # rows 0-3 identical, rows 4-5 identical, row 6 equidistant from all of them
    x = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [1, 1]], dtype=np.float64)
    expected = {0: [1, 2], 1: [0, 2], 2: [0, 1], 3: [0, 1], 4: [5, 6], 5: [4, 6], 6: [0, 1]}
    for bs in (1, 2, 3, 7, None):
        g = knn_graph(x, 2, block_size=bs)
        got = {i: g.indices[g.indptr[i] : g.indptr[i + 1]].tolist() for i in range(7)}
        assert got == expected, bs
    # a duplicate of an earlier row still keeps itself when include_self=True
    g = knn_graph(x, 2, include_self=True)
    assert g[3].indices.tolist() == [0, 3]


def test_knn_zero_rows_have_no_edges_and_are_never_neighbours():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 4))
    x[[0, 5]] = 0.0
    g = knn_graph(x, 3, block_size=4)
    assert np.array_equal(g.toarray(), brute_force_knn(x, 3))
    assert g[0].nnz == 0 and g[5].nnz == 0
    assert g[:, [0, 5]].nnz == 0
    assert np.all(np.diff(g.indptr)[np.r_[1:5, 6:30]] == 3)
    gs = knn_graph(x, 3, include_self=True)
    assert gs[0].indices.tolist() == [0] and gs[5].indices.tolist() == [5]
    # fewer than k non-zero candidates: only those are kept
    y = np.zeros((5, 3))
    y[1, 0] = y[3, 1] = 1.0
    assert knn_graph(y, 3).toarray().sum() == 2


def test_knn_extreme_scale_and_read_only_input():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40, 6))
    ref = knn_graph(x, 3)
    for scale in (1e-30, 1e30):
        assert (knn_graph(x * scale, 3) != ref).nnz == 0
    y = x.astype(np.float32)
    y.setflags(write=False)
    assert (knn_graph(y, 3) != knn_graph(y.copy(), 3)).nnz == 0


def test_knn_input_validation():
    x = np.ones((5, 3))
    with pytest.raises(ValueError, match="features"):
        knn_graph(np.ones(5), 2)
    with pytest.raises(ValueError, match="features"):
        knn_graph(np.array([[1.0, np.nan]] * 3), 1)
    with pytest.raises(ValueError, match="k"):
        knn_graph(x, 0)
    with pytest.raises(ValueError, match="k"):
        knn_graph(x, 5)  # N without include_self
    with pytest.raises(ValueError, match="k"):
        knn_graph(x, 6, include_self=True)
    with pytest.raises(ValueError, match="block_size"):
        knn_graph(x, 2, block_size=0)
    with pytest.raises(ValueError, match="backend"):
        knn_graph(x, 2, backend="annoy")


def test_knn_faiss_backend_or_clear_import_error():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 16)).astype(np.float32)
    try:
        import faiss  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"sieoug-recbole\[faiss\]"):
            knn_graph(x, 5, backend="faiss")
        return
    g = knn_graph(x, 5, backend="faiss")
    exact = knn_graph(x, 5)
    assert np.all(g.diagonal() == 0) and np.all(np.diff(g.indptr) == 5)
    recall = g.multiply(exact).sum() / exact.sum()
    assert recall > 0.9


def test_knn_faiss_recall_on_planted_clusters():
    pytest.importorskip("faiss")
    # 10 clusters; within a cluster items vary along 4 latent directions plus small noise
    # (embeddings have such local structure; on isotropic noise any index must scan most items)
    rng = np.random.default_rng(4)
    labels = rng.integers(10, size=3000)
    x = (
        2.0 * rng.standard_normal((10, 32))[labels]
        + rng.standard_normal((3000, 4)) @ rng.standard_normal((4, 32))
        + 0.3 * rng.standard_normal((3000, 32))
    ).astype(np.float32)
    exact = knn_graph(x, 5, backend="exact")
    approx = knn_graph(x, 5, backend="faiss")
    assert np.all(np.diff(approx.indptr) == 5) and np.all(approx.diagonal() == 0)
    recall = approx.multiply(exact).sum() / exact.sum()
    print(f"faiss recall@5 on 3,000 planted points: {recall:.4f}")
    assert recall >= 0.95


def test_knn_auto_backend_follows_the_threshold(monkeypatch):
    from sieoug_recbole.similarity import knn

    used = []
    monkeypatch.setattr(knn, "_knn_exact", lambda x, *a: used.append("exact") or (np.zeros(0, int), np.zeros(0, int)))
    monkeypatch.setattr(knn, "_knn_faiss", lambda x, *a: used.append("faiss") or (np.zeros(0, int), np.zeros(0, int)))
    monkeypatch.setattr(knn, "FAISS_MIN_ITEMS", 50)
    monkeypatch.setattr(knn, "faiss_available", lambda: True)
    x = np.random.default_rng(0).standard_normal((60, 4))
    knn_graph(x[:50], 3)  # at the threshold: exact
    knn_graph(x, 3)  # above: faiss
    knn_graph(x, 3, backend="exact")  # an explicit choice wins
    assert used == ["exact", "faiss", "exact"]
    # above the threshold without faiss: exact, and one warning that names the install
    used.clear()
    monkeypatch.setattr(knn, "faiss_available", lambda: False)
    monkeypatch.setattr(knn, "_warned_no_faiss", False)
    with pytest.warns(RuntimeWarning, match=r"pip install -e \.\[faiss\]"):
        knn_graph(x, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        knn_graph(x, 3)  # no second warning
    assert used == ["exact", "exact"]
    assert knn.choose_backend(50) == "exact" and knn.choose_backend(51) == "exact"


# ----------------------------------------------------------------------------- risgf
def test_risgf_single_graph_is_returned():
    g = sp.random(40, 40, density=0.1, random_state=0, format="csr")
    a = risgf([g], 0.1)
    assert np.allclose(a.toarray(), g.toarray(), atol=0, rtol=0)


@pytest.mark.parametrize("mu", [0.01, 0.1, 0.5, 3.0])
def test_risgf_two_graphs_is_plain_mean(mu):
    g1 = sp.random(60, 60, density=0.08, random_state=1, format="csr")
    g2 = sp.random(60, 60, density=0.08, random_state=2, format="csr")
    a = risgf([g1, g2], mu)
    assert np.abs(a.toarray() - (g1 + g2).toarray() / 2).max() < 1e-9


def test_risgf_values_in_unit_interval_and_union_support():
    rng = np.random.default_rng(4)
    gs = []
    for m in range(4):
        g = sp.random(50, 50, density=0.1, random_state=m, format="csr")
        g.data = rng.uniform(-1.0, 2.0, g.nnz)  # also out-of-range inputs
        gs.append(g)
    a = risgf(gs, 0.2)
    assert a.data.min() >= 0 and a.data.max() <= 1
    union = sum(abs(g) for g in gs)
    assert set(zip(*a.nonzero())) <= set(zip(*union.nonzero()))


def test_risgf_three_graphs_is_median_like():
    one = sp.csr_matrix(([1.0], ([0], [1])), shape=(3, 3))
    two = sp.csr_matrix(([1.0, 1.0], ([0, 2], [1, 0])), shape=(3, 3))
    empty = sp.csr_matrix((3, 3))
    a = risgf([one, two, empty], 0.1, tol=1e-12, max_iter=1000).toarray()
    assert a[2, 0] == pytest.approx(0.05, abs=1e-9)  # seen once: mu/2 (plain mean: 1/3)
    assert a[0, 1] == pytest.approx(0.95, abs=1e-9)  # seen twice: 1 - mu/2 (mean: 2/3)


def test_risgf_downweights_a_corrupted_modality(planted_graph):
    feats, labels, graphs, _ = planted_graph
    clean = graphs[:2]
    noisy = random_graph(len(labels), 5, seed=0)
    fused = risgf(clean + [noisy], 0.1)
    mean = (clean[0] + clean[1] + noisy) / 3.0
    f_fused, f_mean = within_fraction(fused, labels), within_fraction(mean, labels)
    print(f"within-cluster weight: risgf {f_fused:.3f} vs plain mean {f_mean:.3f}")
    assert f_fused > f_mean + 0.05
    # an edge that only the corrupted modality has gets mu/2 instead of 1/3
    only_noisy = noisy - noisy.multiply((clean[0] + clean[1]) > 0)
    only_noisy.eliminate_zeros()
    assert np.abs(fused.multiply(only_noisy).data - 0.05).max() < 1e-5
    assert fused.multiply(only_noisy).nnz == only_noisy.nnz


def test_risgf_errors():
    g = sp.eye(4, format="csr")
    with pytest.raises(ValueError, match="graphs"):
        risgf([], 0.1)
    with pytest.raises(ValueError, match="same shape"):
        risgf([g, sp.eye(5, format="csr")], 0.1)
    with pytest.raises(ValueError, match="square"):
        risgf([sp.csr_matrix((4, 5))], 0.1)
    for mu in (0.0, -1.0, np.nan):
        with pytest.raises(ValueError, match="mu"):
            risgf([g], mu)


# ----------------------------------------------------------------------------- sishe
def test_pipeline_recovers_planted_clusters(planted_graph, planted_sishe):
    feats, labels, _, _ = planted_graph
    _, _, gamma, hist = planted_sishe
    pred = np.asarray(gamma.argmax(axis=1)).ravel()
    score = normalized_mutual_info_score(labels, pred)
    print(f"NMI {score:.3f}, iterations {hist['iterations']}")
    assert score >= 0.9
    # same through the entry point
    res = build_item_structure(feats, z=5, mu=0.1, eta=0.1, n_clusters=6, progress=False)
    assert normalized_mutual_info_score(labels, np.asarray(res.gamma.argmax(axis=1)).ravel()) >= 0.9


def test_sishe_marginals_sparsity_and_monotone_objective(planted_sishe):
    a, labels, gamma, hist = planted_sishe
    n, k = gamma.shape
    tol = 1e-6
    assert sp.isspmatrix_csr(gamma) and gamma.shape == (480, 6)
    assert gamma.data.min() >= 0
    assert np.abs(np.asarray(gamma.sum(axis=1)).ravel() - 1).max() < tol
    assert np.abs(np.asarray(gamma.sum(axis=0)).ravel() - n / k).max() < tol
    assert hist["final_marginal_error"] < tol
    density = gamma.nnz / (n * k)
    print(f"gamma density {density:.3f}")
    assert density < 0.5
    obj = np.array(hist["objective"])
    assert np.all(np.diff(obj) <= tol * np.maximum(1.0, np.abs(obj[1:])))
    dense = gamma.toarray()
    j = -np.trace(dense.T @ (a @ dense)) + 0.1 * (dense**2).sum()
    assert obj[-1] == pytest.approx(j, rel=1e-9)
    assert hist["iterations"] == len(obj)


def test_sishe_objective_monotone_from_random_start(planted_graph):
    a = planted_graph[3]
    gamma, hist = sishe(a, 6, 0.1, seed=3, init="random", return_history=True, max_iter=30)
    obj = np.array(hist["objective"])
    assert len(obj) > 3
    assert np.all(np.diff(obj) <= 1e-6 * np.maximum(1.0, np.abs(obj[1:])))


def test_sishe_deterministic_per_seed(planted_graph):
    a = planted_graph[3]
    g1 = sishe(a, 6, 0.1, seed=7)
    g2 = sishe(a, 6, 0.1, seed=7)
    assert np.array_equal(g1.indptr, g2.indptr) and np.array_equal(g1.indices, g2.indices)
    assert np.array_equal(g1.data, g2.data)


def test_sishe_uniform_start_is_a_fixed_point(planted_graph):
    a = planted_graph[3]
    n, k = a.shape[0], 6
    uniform = np.full((n, k), 1.0 / k)
    # one outer step of Algorithm 1 from the uniform start (Y = -A_s 1/K, then the transport)
    step = sishe(a, k, 0.1, init="uniform", max_iter=0, tol=1e-9, inner_max_iter=10000).toarray()
    assert np.abs(step - uniform).max() < 1e-9
    gamma = sishe(a, k, 0.1, init="uniform").toarray()
    assert np.abs(gamma - 1.0 / k).max() < 1e-9  # Algorithm 1's start never clusters


def test_sishe_inner_solver_matches_paper_alternation():
    rng = np.random.default_rng(5)
    y = -rng.random((300, 7)) * 3
    ref, *_ = regularised_transport(y, 0.1, tol=1e-10, max_iter=100000, method="alternating")
    fast, _, _, it, err = regularised_transport(y, 0.1, tol=1e-10, max_iter=1000)
    assert err < 1e-10
    assert np.abs(fast - ref).max() < 1e-8
    # the solution has the form of Eq 8 and is the regularised-OT optimum (KKT: rows
    # and columns exact, zero where f_i + g_j - Y_ij <= 0)
    assert np.abs(fast.sum(1) - 1).max() < 1e-9 and np.abs(fast.sum(0) - 300 / 7).max() < 1e-8


def test_sishe_inner_solver_with_hard_rows_and_ties():
    # Y from a binary graph and a one-hot gamma: few distinct values and rows that sit in a
    # single cluster (no curvature); plain Newton and the paper's alternation crawl here
    rng = np.random.default_rng(0)
    n, k = 600, 6
    lab = np.repeat(np.arange(k), n // k)
    within = np.stack([rng.choice(np.flatnonzero(lab == lab[i]), 4, replace=False) for i in range(n)])
    cols = np.concatenate([within, rng.integers(n, size=(n, 1))], axis=1)
    a = sp.csr_matrix((np.ones(n * 5), (np.repeat(np.arange(n), 5), cols.ravel())), shape=(n, n))
    a.data[:] = 1.0
    g0 = np.eye(k)[lab]
    g0[:40] = np.eye(k)[rng.integers(k, size=40)]
    y = -(((a + a.T) * 0.5) @ g0)
    ref, _, _, it_ref, _ = regularised_transport(y, 0.1, tol=1e-9, max_iter=200000, method="alternating")
    fast, _, _, it, err = regularised_transport(y, 0.1, tol=1e-9, max_iter=1000)
    print(f"inner iterations: alternation {it_ref}, damped Newton {it}")
    assert err < 1e-9 and it < 50
    assert np.abs(fast - ref).max() < 1e-6


def test_transport_sparse_costs_equal_dense_costs():
    # off the pattern a sparse Y is 0: the plan equals the one for the dense Y with zeros
    rng = np.random.default_rng(6)
    for n, k, density in [(400, 9, 0.15), (300, 40, 0.02), (50, 5, 0.0)]:
        y = -3 * sp.random(n, k, density=density, random_state=rng, format="csr")
        sparse = regularised_transport(y, 0.1, tol=1e-10)
        dense = regularised_transport(y.toarray(), 0.1, tol=1e-10)
        assert sp.issparse(sparse.gamma) and isinstance(dense.gamma, np.ndarray)
        assert np.abs(sparse.gamma.toarray() - dense.gamma).max() < 1e-12
        alternating = regularised_transport(y, 0.1, tol=1e-10, max_iter=100000, method="alternating")
        assert np.abs(alternating.gamma.toarray() - dense.gamma).max() < 1e-8
        g = sparse.gamma.toarray()
        assert g.min() >= 0 and np.abs(g.sum(1) - 1).max() < 1e-9 and np.abs(g.sum(0) - n / k).max() < 1e-8
        # Eq 8 with the returned duals
        eq8 = np.maximum(sparse.f[:, None] + sparse.g[None, :] - y.toarray(), 0) / 0.1
        assert np.abs(eq8 - g).max() < 1e-9


def test_transport_input_errors():
    with pytest.raises(ValueError, match="Y"):
        regularised_transport(np.ones(4), 0.1)
    with pytest.raises(ValueError, match="Y"):
        regularised_transport(np.array([[0.0, np.inf]]), 0.1)
    with pytest.raises(ValueError, match="f and g"):
        regularised_transport(np.zeros((3, 2)), 0.1, f=np.zeros(2))
    with pytest.raises(ValueError, match="method"):
        regularised_transport(np.zeros((3, 2)), 0.1, method="sinkhorn")


def test_sishe_k_equal_one_and_n():
    a = sp.random(20, 20, density=0.3, random_state=0, format="csr")
    g1 = sishe(a, 1, 0.1)
    assert np.allclose(g1.toarray(), 1.0)
    gn = sishe(a, 20, 0.1).toarray()
    assert np.allclose(gn.sum(0), 1) and np.allclose(gn.sum(1), 1)


def test_sishe_errors():
    a = sp.eye(5, format="csr")
    with pytest.raises(ValueError, match="n_clusters"):
        sishe(a, 6, 0.1)
    with pytest.raises(ValueError, match="n_clusters"):
        sishe(a, 0, 0.1)
    with pytest.raises(ValueError, match="square"):
        sishe(sp.csr_matrix((5, 4)), 2, 0.1)
    with pytest.raises(ValueError, match="eta"):
        sishe(a, 2, 0.0)
    with pytest.raises(ValueError, match="init"):
        sishe(a, 2, 0.1, init="kmeans")


# ----------------------------------------------------------------------------- operators
def test_normalize_item_graph_matches_dense():
    rng = np.random.default_rng(6)
    a = sp.random(30, 30, density=0.15, random_state=6, format="csr")  # asymmetric
    a = a.tolil()
    a[3, :] = 0  # zero-degree row
    a = a.tocsr()
    out = normalize_item_graph(a)
    assert sp.isspmatrix_csr(out)
    dense = a.toarray()
    deg = dense.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.where(deg > 0, deg, 1)), 0.0)
    expected = inv[:, None] * dense * inv[None, :]
    assert np.all(np.isfinite(out.data))
    assert np.abs(out.toarray() - expected).max() < 1e-12
    assert rng is not None


def test_hypergraph_factors_equal_dense_operator(planted_sishe):
    gamma = planted_sishe[2]
    n, k = gamma.shape
    left, right = hypergraph_factors(gamma)
    assert left.shape == (n, k) and right.shape == (k, n)
    assert sp.issparse(left) and sp.issparse(right)
    x = np.random.default_rng(7).standard_normal((n, 4))
    g = gamma.toarray()
    assert np.abs(left @ (right @ x) - (k / n) * g @ (g.T @ x)).max() < 1e-9
    # general non-negative gamma: D_V^-1 gamma D_E^-1 gamma^T
    h = np.random.default_rng(8).random((50, 4))
    h[h < 0.5] = 0
    h[0] = 0  # zero-degree vertex
    left, right = hypergraph_factors(sp.csr_matrix(h))
    dv, de = h.sum(1), h.sum(0)
    dv_inv = np.where(dv > 0, 1 / np.where(dv > 0, dv, 1), 0)
    op = dv_inv[:, None] * h @ np.diag(1 / de) @ h.T
    y = np.random.default_rng(9).standard_normal((50, 3))
    assert np.abs(left @ (right @ y) - op @ y).max() < 1e-12


# ----------------------------------------------------------------------------- entry point, cache
def test_build_item_structure_cache(tmp_path):
    feats, _ = planted(120, 4, d=8, seed=1)
    kw = dict(z=4, mu=0.1, eta=0.1, n_clusters=4, seed=0, progress=False)
    t0 = time.perf_counter()
    r1 = build_item_structure(feats, cache_dir=str(tmp_path), **kw)
    t1 = time.perf_counter()
    r2 = build_item_structure(dict(reversed(list(feats.items()))), cache_dir=str(tmp_path), **kw)
    t2 = time.perf_counter()
    assert r1.info["cache_hit"] is False and r2.info["cache_hit"] is True
    assert r1.info["cache_key"] == r2.info["cache_key"]
    print(f"first {t1 - t0:.3f}s, cached {t2 - t1:.3f}s")
    assert (r1.A != r2.A).nnz == 0 and (r1.gamma != r2.gamma).nnz == 0
    assert np.array_equal(r1.gamma.toarray(), r2.gamma.toarray())
    assert r1.info["sishe"]["objective"] == r2.info["sishe"]["objective"]
    assert set(r1.info["timings"]) == {"knn[mod0]", "knn[mod1]", "knn[mod2]", "risgf", "sishe"}
    assert 0 < r1.info["density"]["gamma"] < 1
    assert not list(tmp_path.glob(".tmp-*"))
    # no pickle on disk
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npz", ".npz"]
    # dict order is irrelevant also without cache
    r3 = build_item_structure(dict(reversed(list(feats.items()))), **kw)
    assert np.array_equal(r3.gamma.toarray(), r1.gamma.toarray())


def test_cache_key_covers_every_input():
    feats, _ = planted(40, 4, d=5, seed=2)
    params = {
        "z": 5,
        "mu": 0.1,
        "eta": 0.1,
        "n_clusters": 15,
        "seed": 0,
        "include_self": False,
        **pipeline._PIPELINE_DEFAULTS,
    }
    base = pipeline._cache_key(feats, params)
    assert base == pipeline._cache_key(dict(reversed(list(feats.items()))), params)
    keys = {base}
    for name, value in [
        ("z", 6),
        ("mu", 0.2),
        ("eta", 0.05),
        ("n_clusters", 14),
        ("seed", 1),
        ("include_self", True),
        ("sishe_tol", 1e-7),
    ]:
        keys.add(pipeline._cache_key(feats, {**params, name: value}))
    changed = {m: x.copy() for m, x in feats.items()}
    changed["mod1"][7, 2] += 1e-12
    keys.add(pipeline._cache_key(changed, params))
    keys.add(pipeline._cache_key({m: x.astype(np.float32) for m, x in feats.items()}, params))
    renamed = dict(feats)
    renamed["other"] = renamed.pop("mod2")
    keys.add(pipeline._cache_key(renamed, params))
    reshaped = dict(feats)
    reshaped["mod0"] = np.ascontiguousarray(feats["mod0"]).reshape(20, 10)
    keys.add(pipeline._cache_key(reshaped, params))
    assert len(keys) == 12


def test_build_item_structure_records_the_resolved_knn_backend(monkeypatch, tmp_path):
    from sieoug_recbole.similarity import knn

    feats, _ = planted(120, 4, d=8, seed=1)
    kw = dict(z=4, n_clusters=4, progress=False, cache_dir=str(tmp_path))
    exact = build_item_structure(feats, **kw)
    assert exact.info["params"]["knn_backend"] == "exact" and "knn_faiss" not in exact.info["params"]
    pytest.importorskip("faiss")
    monkeypatch.setattr(knn, "FAISS_MIN_ITEMS", 100)
    approx = build_item_structure(feats, **kw)
    assert approx.info["params"]["knn_backend"] == "faiss"
    assert approx.info["params"]["knn_faiss"]["version"]
    assert approx.info["cache_key"] != exact.info["cache_key"] and approx.info["cache_hit"] is False


def test_build_item_structure_errors():
    with pytest.raises(ValueError, match="features"):
        build_item_structure({}, progress=False)
    with pytest.raises(ValueError, match="same number of rows"):
        build_item_structure({"a": np.ones((5, 2)), "b": np.ones((6, 2))}, progress=False)
    with pytest.raises(ValueError, match="n_clusters"):
        build_item_structure({"a": np.eye(5)}, n_clusters=6, progress=False)


# ----- shared argument checks (sieoug_recbole.checks, used by similarity and matching) -----
@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "x", None])
def test_positive_number_rejects_with_the_argument_name(bad):
    from sieoug_recbole.checks import positive_number

    with pytest.raises(ValueError, match="^mu must be"):
        positive_number(bad, "mu")


@pytest.mark.parametrize("bad", [True, 1.0, "3", 0, 5])
def test_integer_in_range_rejects_with_the_argument_name(bad):
    from sieoug_recbole.checks import integer_in_range

    with pytest.raises(ValueError, match="^k must be"):
        integer_in_range(bad, "k", 1, 4)


def test_checks_return_canonical_values():
    from sieoug_recbole.checks import integer_in_range, positive_number

    assert positive_number("0.5", "mu") == 0.5 and isinstance(positive_number(2, "mu"), float)
    assert integer_in_range(np.int64(4), "k", 1, 4) == 4 and type(integer_in_range(np.int64(4), "k", 1)) is int
