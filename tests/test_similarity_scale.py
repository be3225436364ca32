"""The scale-out paths of sieoug_recbole.similarity: the faiss kNN backend, the 'auto' choice
of backend, and SISHE's stopping rule (pinned numbers and the reported stopping reason)."""

import numpy as np
import pytest
import scipy.sparse as sp

from sieoug_recbole.similarity import build_item_structure, knn, knn_graph, sishe


def block_graph(n=150, k=5, seed=11):
    """Directed 5-out graph on n items in k interleaved blocks: 3 edges inside the block,
    2 to other blocks (a hard case: 40% of the edges cross blocks)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    rows, cols = [], []
    for i in range(n):
        same = np.flatnonzero((labels == labels[i]) & (np.arange(n) != i))
        other = np.flatnonzero(labels != labels[i])
        rows += [i] * 5
        cols += list(np.concatenate([rng.choice(same, 3, replace=False), rng.choice(other, 2, replace=False)]))
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)), labels


def planted_points(n, groups=10, d=32, seed=4):
    """Groups that vary along 4 latent directions plus small noise (local structure, as
    embeddings have)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(groups, size=n)
    x = (
        2.0 * rng.standard_normal((groups, d))[labels]
        + rng.standard_normal((n, 4)) @ rng.standard_normal((4, d))
        + 0.3 * rng.standard_normal((n, d))
    )
    return x.astype(np.float32), labels


def recall(approx, exact):
    return float(approx.multiply(exact).sum() / exact.sum())


# ----------------------------------------------------------------------------- SISHE
@pytest.mark.parametrize(
    "init,iterations,obj,sq,first",
    [
        ("spectral", 7, -436.25318676106644, 146.97644800070847, [1, 2, 0, 4, 3, 1, 2, 0, 4, 3, 1, 2]),
        ("random", 61, -436.2536862004805, 147.04653752748862, [2, 3, 1, 4, 0, 2, 3, 1, 4, 0, 2, 3]),
    ],
)
def test_sishe_output_is_pinned(init, iterations, obj, sq, first):
    # numbers of the current algorithm on a fixed input: a refactor must leave them unchanged
    a, labels = block_graph()
    gamma, hist = sishe(a, 5, 0.1, seed=3, init=init, return_history=True)
    assert hist["iterations"] == iterations and hist["stopped"] == "objective_tol" and hist["converged"]
    assert hist["objective"][-1] == pytest.approx(obj, rel=1e-12, abs=0)
    assert float(gamma.data @ gamma.data) == pytest.approx(sq, rel=1e-12, abs=0)
    assert gamma.nnz == 158
    assert np.asarray(gamma.argmax(axis=1)).ravel()[:12].tolist() == first


def test_sishe_stops_on_its_tolerance_before_the_cap():
    a, _ = block_graph()
    tol = 1e-6
    gamma, hist = sishe(a, 5, 0.1, seed=3, init="random", tol=tol, max_iter=300, return_history=True)
    obj = np.array(hist["objective"])
    assert hist["stopped"] == "objective_tol" and hist["converged"] and hist["iterations"] < 300
    assert obj[-2] - obj[-1] <= tol * max(1.0, abs(obj[-1]))  # the rule that stopped it holds
    gains, bounds = obj[:-1] - obj[1:], tol * np.maximum(1.0, np.abs(obj[1:]))
    assert np.all(gains[:-1] > bounds[:-1])  # and it did not hold earlier
    # the same run cut short by the cap says so, and is the same iterate sequence
    capped, short = sishe(a, 5, 0.1, seed=3, init="random", tol=tol, max_iter=10, return_history=True)
    assert short["stopped"] == "max_iter" and not short["converged"]
    assert short["iterations"] == 11  # the first iterate and 10 outer steps
    assert short["objective"] == hist["objective"][:11]
    # a looser tolerance stops earlier, on the same rule
    _, loose = sishe(a, 5, 0.1, seed=3, init="random", tol=1e-3, return_history=True)
    assert loose["converged"] and loose["iterations"] < hist["iterations"]


def test_sishe_reports_a_step_below_tolerance():
    # Algorithm 1's uniform start is a fixed point: the first transport solution is gamma
    # again, so the direction is below tol at once
    a, _ = block_graph()
    _, hist = sishe(a, 5, 0.1, init="uniform", tol=1e-6, return_history=True)
    assert hist["stopped"] == "step_tol" and hist["converged"] and hist["iterations"] == 1


def test_build_item_structure_reports_why_sishe_stopped():
    x, _ = planted_points(300)
    res = build_item_structure({"m": x}, n_clusters=5, progress=False)
    assert res.info["sishe"]["stopped"] in ("step_tol", "objective_tol")
    assert res.info["sishe"]["converged"]


# ----------------------------------------------------------------------------- faiss
def test_faiss_backend_agrees_with_exact_on_planted_points():
    pytest.importorskip("faiss")
    x, _ = planted_points(8000)  # tight groups in 32-d: coarse codes would fail here
    exact = knn_graph(x, 5, backend="exact")
    approx = knn_graph(x, 5, backend="faiss")
    assert np.all(np.diff(approx.indptr) == 5) and np.all(approx.diagonal() == 0)
    assert recall(approx, exact) >= 0.95
    # deterministic: the index is trained on a seeded sample
    again = knn_graph(x, 5, backend="faiss")
    assert (approx != again).nnz == 0


def test_faiss_backend_keeps_the_self_and_zero_row_rules():
    pytest.importorskip("faiss")
    x, _ = planted_points(2000)
    x[[3, 70]] = 0.0
    g = knn_graph(x, 5, backend="faiss")
    assert g.getrow(3).nnz == 0 and g.getrow(70).nnz == 0
    assert g[:, 3].nnz == 0 and g[:, 70].nnz == 0  # zero rows are never chosen
    assert np.all(g.diagonal() == 0)
    g_self = knn_graph(x, 5, include_self=True, backend="faiss")
    assert np.all(g_self.diagonal() == 1)  # each item is its own neighbour, zero rows too
    assert g_self.getrow(3).nnz == 1 and np.all(np.diff(g_self.indptr)[[0, 1, 2, 4]] == 5)


def test_auto_uses_faiss_above_the_threshold_and_exact_at_or_below(monkeypatch):
    pytest.importorskip("faiss")
    x, _ = planted_points(1500)
    exact = knn_graph(x, 5, backend="exact")
    approx = knn_graph(x, 5, backend="faiss")
    monkeypatch.setattr(knn, "FAISS_MIN_ITEMS", 1500)
    assert knn.choose_backend(1500) == "exact" and knn.choose_backend(1501) == "faiss"
    assert (knn_graph(x, 5) != exact).nnz == 0  # at the threshold: the exact graph
    monkeypatch.setattr(knn, "FAISS_MIN_ITEMS", 1499)
    assert (knn_graph(x, 5) != approx).nnz == 0  # above it: the faiss graph
    assert recall(approx, exact) >= 0.95


def test_faiss_settings_scale_with_the_catalogue():
    small, large = knn.faiss_settings(50_000, 512, 5), knn.faiss_settings(1_000_000, 512, 5)
    assert large["lists"] > small["lists"] and large["probe"] == small["probe"] == knn.FAISS_PROBE
    assert small["probe"] <= small["lists"] and small["pq_subvectors"] == 512 // knn.FAISS_PQ_SUBVECTOR_DIM
    assert small["candidates"] == knn.FAISS_CANDIDATES_PER_NEIGHBOUR * 6
    low = knn.faiss_settings(50_000, 32, 5)  # low dimension: finer codes, at least 32 sub-vectors
    assert low["pq_subvector_dim"] == 1 and low["pq_subvectors"] == 32
    tiny = knn.faiss_settings(20, 8, 5)  # never more cells, probes or candidates than items
    assert tiny["lists"] <= 20 and tiny["probe"] <= tiny["lists"] and tiny["candidates"] <= 20
