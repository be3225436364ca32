"""Whole-population GOUM (sieoug_recbole/population_matching.py): plans, supports, scope."""

import numpy as np
import pytest
import torch

from sieoug_recbole.matching import goum, guide_mask, squared_euclidean_cost
from sieoug_recbole.population_matching import (
    candidate_pairs,
    mean_squared_distance,
    population_plan,
    sparse_entropic_plan,
)


def planted(n=300, d=16, noise=0.3, seed=0):
    """Two populations of the same people: y_i = x_i + noise (taste kept across domains)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, x + noise * torch.randn(n, d, generator=g, dtype=torch.float64)


def test_mean_squared_distance_is_the_mean_of_the_cost():
    x, y = planted(50)
    assert mean_squared_distance(x, y) == pytest.approx(
        float(squared_euclidean_cost(x, y, normalize=None).mean()), rel=1e-9
    )


def test_candidates_are_both_sides_nearest_plus_guided_pairs():
    x, y = planted(80, noise=2.0)
    guided = torch.tensor([[3, 7], [70, 5]])  # (source rows, target rows)
    rows, cols = candidate_pairs(x, y, k=4, guided_pairs=guided, block_rows=16)
    pairs = set(zip(rows.tolist(), cols.tolist()))
    cost = squared_euclidean_cost(x, y, normalize=None)
    for i in range(80):
        assert {(i, int(j)) for j in cost[i].topk(4, largest=False).indices} <= pairs
        assert {(int(j), i) for j in cost[:, i].topk(4, largest=False).indices} <= pairs
    assert {(3, 70), (7, 5)} <= pairs
    key = rows * 80 + cols
    assert torch.equal(key, torch.unique(key))  # sorted, no duplicate


def test_dense_plan_has_the_goum_marginals_and_matches_anchors():
    x, y = planted(120, noise=1.0)
    guided = torch.stack([torch.arange(20), torch.arange(20)])
    plan = population_plan(x, y, guided, eps=0.05, plan="dense", keep=120, keep_dense=True)
    full = plan.dense.double()
    torch.testing.assert_close(full.sum(1), torch.ones(120, dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(full.sum(0), torch.ones(120, dtype=torch.float64), atol=1e-3, rtol=0)
    assert torch.equal(full[:20].argmax(1), torch.arange(20))  # an anchor's match is itself
    # the same plan as GOUM on the mean-normalised cost with the guide mask
    guide = torch.zeros(120, 120, dtype=torch.bool)
    guide[torch.arange(20), torch.arange(20)] = True
    expected = goum(squared_euclidean_cost(x, y, normalize="mean"), guide, 0.05, max_iter=300, tol=1e-4)
    torch.testing.assert_close(full, expected.float().double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(plan.by_source.to_dense().double(), full, atol=1e-6, rtol=0)  # keep = all


def test_sparse_and_dense_plans_agree_where_both_fit():
    x, y = planted(150, noise=1.0)
    guided = torch.stack([torch.arange(15), torch.arange(15)])
    dense = population_plan(x, y, guided, eps=0.1, plan="dense", keep=150, tol=1e-6, max_iter=1000)
    full_support = population_plan(x, y, guided, eps=0.1, plan="sparse", k=150, keep=150, tol=1e-6, max_iter=3000)
    torch.testing.assert_close(full_support.by_source.to_dense(), dense.by_source.to_dense(), atol=1e-4, rtol=0)
    # with a real candidate set the plan concentrates where the dense one does
    sparse = population_plan(x, y, guided, eps=0.1, plan="sparse", k=20, keep=10, max_iter=2000)
    top_dense = dense.by_source.to_dense().argmax(1)
    top_sparse = sparse.by_source.to_dense().argmax(1)
    assert float((top_dense == top_sparse).double().mean()) > 0.95
    assert sparse.info["support"] < 150 * 150 / 3


def test_sparse_plan_marginals_and_warm_start():
    x, y = planted(200, noise=0.8)
    rows, cols = candidate_pairs(x, y, k=15)
    cost = ((x[rows] - y[cols]) ** 2).sum(1) / mean_squared_distance(x, y)
    values, info = sparse_entropic_plan(rows, cols, cost, 200, 200, eps=0.1, max_iter=2000, tol=1e-6)
    assert info["converged"]
    row_sums = torch.zeros(200, dtype=torch.float64).index_add_(0, rows, values)
    col_sums = torch.zeros(200, dtype=torch.float64).index_add_(0, cols, values)
    torch.testing.assert_close(row_sums, torch.ones(200, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(col_sums, torch.ones(200, dtype=torch.float64), atol=1e-9, rtol=0)
    nearby = cost + 1e-3 * torch.rand(len(cost), dtype=cost.dtype, generator=torch.Generator().manual_seed(1))
    _, cold = sparse_entropic_plan(rows, cols, nearby, 200, 200, eps=0.1, max_iter=2000, tol=1e-6)
    _, warm = sparse_entropic_plan(
        rows, cols, nearby, 200, 200, eps=0.1, max_iter=2000, tol=1e-6, init=info["potential"]
    )
    assert warm["converged"] and warm["iterations"] < cold["iterations"] / 2


def test_a_dense_plan_too_large_is_a_clear_error():
    x, y = planted(50)
    with pytest.raises(
        ValueError,
        match=r"50 x 50 users \(2,500 entries\) exceeds ot_dense_limit \(1,000\); "
        "set ot_global_plan: sparse",
    ):
        population_plan(x, y, torch.zeros(2, 0, dtype=torch.long), eps=0.1, dense_limit=1000)


def _top10_rate(plan_rows, true_cols):
    top = plan_rows.topk(min(10, plan_rows.shape[1]), dim=1).indices
    return float((top == true_cols.unsqueeze(1)).any(1).double().mean())


def test_whole_population_matching_finds_hidden_people_a_batch_cannot():
    """De-linked users keep their taste (y_i = x_i + noise); 10% are overlapped anchors. The
    population plan puts the true counterpart in the top 10 nearly always; a plan per random
    batch of 64 a side can only when the counterpart happens to share the batch."""
    n, batch = 640, 64
    x, y = planted(n, d=16, noise=0.5, seed=3)
    anchors = torch.arange(n // 10)
    hidden = torch.arange(n // 10, n)
    plan = population_plan(x, y, torch.stack([anchors, anchors]), eps=0.05, plan="dense", keep=n, keep_dense=True)
    global_rate = _top10_rate(plan.dense[hidden], hidden)

    rng = np.random.default_rng(0)
    found = []
    for _ in range(10):  # random batches, as training draws them (anchors join both sides)
        src = torch.as_tensor(np.sort(rng.choice(n, batch, replace=False)))
        tgt = torch.as_tensor(np.sort(rng.choice(n, batch, replace=False)))
        src = torch.unique(torch.cat([src, tgt[tgt < len(anchors)]]))
        tgt = torch.unique(torch.cat([tgt, src[src < len(anchors)]]))
        guide = guide_mask(src + 1, tgt + 1, len(anchors) + 1)  # (rows 1.. ; 0 is padding)
        batch_plan = goum(squared_euclidean_cost(x[src], y[tgt], normalize="mean"), guide, 0.05)
        for i, person in enumerate(src.tolist()):
            if person >= len(anchors):  # a hidden person: is its counterpart in the batch's top 10?
                cols = torch.nonzero(tgt == person).flatten()
                top = batch_plan[i].topk(10).indices
                found.append(bool(len(cols)) and int(cols[0]) in top.tolist())
    batch_rate = float(np.mean(found))
    chance = 10 / n
    assert global_rate > 0.9 and global_rate > 50 * chance
    assert batch_rate < 0.2  # ~ the chance that the counterpart is in the batch at all (64 / 640)
