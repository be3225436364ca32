"""Tests of sieoug_recbole.matching (overlapped user guidance, paper Sec 3.3 / App. B)."""

import warnings

import numpy as np
import ot
import pytest
import torch

from sieoug_recbole.matching import (
    _goum_solve,
    fgw_plan,
    goum,
    guide_mask,
    guided_contrastive_loss,
    squared_euclidean_cost,
)


def _problem(n, m, seed, d=16, dtype=torch.float64, frac=0.3):
    """Mean-normalised squared Euclidean cost of random embeddings + a random partial matching."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randn(m, d, generator=g, dtype=dtype)
    cost = squared_euclidean_cost(x, y)
    k = int(frac * min(n, m))
    rows = torch.randperm(n, generator=g)[:k]
    cols = torch.randperm(m, generator=g)[:k]
    guide = torch.zeros(n, m, dtype=torch.bool)
    guide[rows, cols] = True
    return x, y, cost, guide, rows, cols


def _marginal_errors(plan):
    n, m = plan.shape
    p = plan.double()
    return (p.sum(1) - 1).abs().max().item(), (p.sum(0) - n / m).abs().max().item()


# ------------------------------------------------------------------------------------ goum


@pytest.mark.parametrize(
    "n,m,eps,seed", [(20, 20, 0.1, 0), (40, 25, 0.1, 1), (25, 40, 0.05, 2), (64, 64, 0.05, 3), (7, 3, 0.2, 4)]
)
def test_goum_matches_pot_sinkhorn_log(n, m, eps, seed):
    _, _, cost, guide, _, _ = _problem(n, m, seed)
    plan, info = goum(cost, guide, eps, tol=1e-10, return_info=True)
    assert info["converged"]
    Q = cost * (~guide)
    a = torch.ones(n, dtype=torch.float64)
    b = torch.ones(m, dtype=torch.float64) * (n / m)
    ref = ot.sinkhorn(a, b, Q, reg=eps, method="sinkhorn_log", stopThr=1e-13, numItermax=200000)
    assert plan.shape == (n, m) and plan.dtype == torch.float64
    assert torch.allclose(plan, ref, atol=1e-5, rtol=0)
    assert (plan - ref).abs().max().item() < 1e-6  # in fact much closer than required


def test_plain_iteration_and_literal_pinning_reach_the_same_plan():
    # the paper's iteration exactly as written (Eq 27 for rows 1..n-1, omega_n fixed at 0)
    # has the same fixed point as the accelerated solver
    _, _, cost, guide, _, _ = _problem(12, 10, 5)
    Q = cost * (~guide)
    fast = goum(cost, guide, 0.2, tol=1e-11)
    shift, i1 = _goum_solve(Q, 0.2, 100000, 1e-11, method="plain", gauge="shift")
    literal, i2 = _goum_solve(Q, 0.2, 100000, 1e-11, method="plain", gauge="literal")
    assert i1["converged"] and i2["converged"] and i1["newton_steps"] == 0
    assert torch.allclose(fast, shift, atol=1e-9, rtol=0)
    assert torch.allclose(fast, literal, atol=1e-9, rtol=0)


def test_goum_small_eps_guided_pairs_take_their_rows_mass():
    _, _, cost, guide, rows, cols = _problem(60, 50, 7, frac=0.4)
    plan = goum(cost, guide, 0.01)
    assert (plan[rows, cols] >= 0.99).all()


@pytest.mark.parametrize("n,m", [(64, 60), (60, 64)])
def test_goum_guided_outlier_converges_by_newton(n, m):
    # a guided user far from everyone else (as seen in real batches): its row can only reach
    # mass 1 by a large move of its potential, along which the objective is nearly flat. The
    # Newton direction is then huge and its first step (capped at _MAX_STEP) too long; the
    # line search must backtrack from that capped step, not stop after one halving (which
    # left plain steps of ~0.03 eps each: 300 iterations, marginal error 0.07).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 16, generator=g, dtype=torch.float64)
    y = torch.randn(m, 16, generator=g, dtype=torch.float64)
    x[0] *= 3.0
    y[0] = x[0]
    cost = squared_euclidean_cost(x, y)
    guide = torch.zeros(n, m, dtype=torch.bool)
    guide[0, 0] = True
    assert float(cost.max()) / 0.1 > 70  # the regime of the failures
    plan, info = goum(cost, guide, 0.1, max_iter=300, tol=1e-6, return_info=True)
    assert info["converged"] and info["iterations"] <= 20 and info["newton_fallbacks"] == 0
    assert max(_marginal_errors(plan)) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_goum_marginals_dtype_and_info(dtype):
    _, _, cost, guide, _, _ = _problem(50, 30, 8, dtype=dtype)
    plan, info = goum(cost, guide, 0.05, tol=1e-6, return_info=True)
    assert plan.dtype == dtype and plan.device == cost.device
    assert info["converged"] and info["stopped"] == "tol"
    assert isinstance(info["iterations"], int) and 1 <= info["iterations"] <= 1000
    row_err, col_err = _marginal_errors(plan)
    assert info["marginal_error"] < 1e-6
    assert max(row_err, col_err) < 1e-6
    assert col_err < 1e-6  # columns exact by construction (up to rounding)
    assert info["guided_pairs"] == int(guide.sum())
    assert (plan >= 0).all()


def test_goum_no_grad_even_if_cost_requires_grad():
    x, y, _, guide, _, _ = _problem(20, 15, 9)
    x.requires_grad_(True)
    cost = squared_euclidean_cost(x, y)
    assert cost.requires_grad
    plan = goum(cost, guide, 0.1)
    assert not plan.requires_grad and plan.grad_fn is None


def test_goum_extreme_costs_float32_stay_finite():
    g = torch.Generator().manual_seed(10)
    cost = (torch.rand(40, 30, generator=g) * 1e4).float()
    guide = torch.zeros(40, 30, dtype=torch.bool)
    guide[torch.arange(10), torch.arange(10)] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plan, info = goum(cost, guide, 1e-3, max_iter=50, return_info=True)
    assert plan.dtype == torch.float32
    assert torch.isfinite(plan).all() and (plan >= 0).all()
    assert np.isfinite(info["marginal_error"])
    # columns are exact by construction whatever the rows do
    assert (plan.double().sum(0) - 40 / 30).abs().max().item() < 1e-5


def test_goum_max_iter_warns_and_returns():
    _, _, cost, guide, _, _ = _problem(40, 40, 11)
    with pytest.warns(RuntimeWarning, match="goum"):
        plan, info = goum(cost, guide, 0.01, max_iter=3, tol=1e-12, return_info=True)
    assert info["iterations"] == 3 and not info["converged"] and info["stopped"] == "max_iter"
    assert torch.isfinite(plan).all()
    assert info["column_error"] < 1e-9


def test_goum_without_guide_and_degenerate_shapes():
    _, _, cost, _, _, _ = _problem(10, 8, 12)
    plan = goum(cost, None, 0.1)
    assert max(_marginal_errors(plan)) < 1e-6
    one_row = goum(cost[:1], None, 0.1)  # a single source user spreads over all columns
    assert torch.allclose(one_row, torch.full((1, 8), 1 / 8, dtype=torch.float64))
    one_col = goum(cost[:, :1], None, 0.1)  # a single target user receives everything
    assert torch.allclose(one_col, torch.ones(10, 1, dtype=torch.float64))


def test_goum_validation():
    cost = torch.rand(4, 3)
    with pytest.raises(ValueError, match="eps"):
        goum(cost, None, 0.0)
    with pytest.raises(ValueError, match="eps"):
        goum(cost, None, -1.0)
    with pytest.raises(ValueError, match="2-D"):
        goum(torch.rand(4), None, 0.1)
    with pytest.raises(ValueError, match="guide shape"):
        goum(cost, torch.zeros(3, 4, dtype=torch.bool), 0.1)
    with pytest.raises(ValueError, match="bool"):
        goum(cost, torch.zeros(4, 3), 0.1)
    bad = cost.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        goum(bad, None, 0.1)
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        goum(bad, None, 0.1)
    with pytest.raises(ValueError, match="max_iter"):
        goum(cost, None, 0.1, max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        goum(cost, None, 0.1, tol=0)
    with pytest.raises(ValueError, match="overflows"):
        goum(torch.full((3, 3), 1e300, dtype=torch.float64), None, 1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_goum_cuda_matches_cpu(dtype):
    x, y, cost, guide, _, _ = _problem(300, 200, 13, dtype=dtype)
    plan_cpu = goum(cost, guide, 0.05)
    plan_gpu, info = goum(cost.cuda(), guide.cuda(), 0.05, return_info=True)
    assert plan_gpu.device.type == "cuda" and plan_gpu.dtype == dtype
    assert info["converged"] and info["marginal_error"] < 1e-6
    assert torch.allclose(plan_gpu.cpu(), plan_cpu, atol=1e-5, rtol=0)
    loss = guided_contrastive_loss(x.cuda().requires_grad_(), y.cuda(), plan_gpu, 0.2)
    loss.backward()
    assert torch.isfinite(loss)


# ------------------------------------------------------------------------------------ loss


def _loss_setup(seed=14):
    x, y, cost, guide, rows, cols = _problem(30, 24, seed, d=8, frac=0.5)
    plan = goum(cost, guide, 0.05)
    return x.float(), y.float(), plan, rows, cols


def test_loss_finite_and_gradients_reach_embeddings_not_plan():
    x, y, plan, _, _ = _loss_setup()
    xs = x.clone().requires_grad_(True)
    yt = y.clone().requires_grad_(True)
    p = plan.clone().requires_grad_(True)
    loss = guided_contrastive_loss(xs, yt, p, temperature=0.2)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert p.grad is None
    assert xs.grad is not None and xs.grad.abs().sum() > 0
    assert yt.grad is not None and yt.grad.abs().sum() > 0
    # the plan is not part of the graph at all
    assert torch.autograd.grad(guided_contrastive_loss(xs, yt, p, 0.2), p, allow_unused=True)[0] is None


def test_loss_decreases_when_guided_pairs_move_together():
    x, y, plan, rows, cols = _loss_setup()
    before = guided_contrastive_loss(x, y, plan, 0.2).item()
    y2 = y.clone()
    y2[cols] = 0.2 * y[cols] + 0.8 * x[rows]
    after = guided_contrastive_loss(x, y2, plan, 0.2).item()
    assert after < before


def test_loss_temperature_one_is_the_papers_similarity_and_skips_empty_rows():
    x, y, plan, _, _ = _loss_setup()
    plan = plan.clone()
    plan[0] = 0.0  # a row without mass has no barycentric match: left out, no NaN
    loss = guided_contrastive_loss(x, y, plan, 1.0)
    assert torch.isfinite(loss)
    # hand-computed source side for one kept row at temperature 1 (S = exp(cos))
    P = plan.float()
    i = 1
    bary = (P[i] @ y) / P[i].sum()
    cos = torch.nn.functional.cosine_similarity
    pos = cos(x[i], bary, dim=0)
    neg = cos(x[i].unsqueeze(0), y, dim=1)
    li = -(pos - torch.logsumexp(torch.cat([pos.view(1), neg]), 0))
    full = []
    for k in range(1, 30):
        b = (P[k] @ y) / P[k].sum()
        pk = cos(x[k], b, dim=0)
        nk = cos(x[k].unsqueeze(0), y, dim=1)
        full.append(-(pk - torch.logsumexp(torch.cat([pk.view(1), nk]), 0)))
    src_mean = torch.stack(full).mean()
    assert abs(full[0].item() - li.item()) < 1e-6
    tgt = []
    for j in range(24):
        b = (P[:, j] @ x) / P[:, j].sum()
        pj = cos(y[j], b, dim=0)
        nj = cos(y[j].unsqueeze(0), x, dim=1)
        tgt.append(-(pj - torch.logsumexp(torch.cat([pj.view(1), nj]), 0)))
    assert abs(loss.item() - (src_mean + torch.stack(tgt).mean()).item()) < 1e-5


def test_loss_with_dot_similarity_written_out():
    x, y, plan, _, _ = _loss_setup()
    x, y = 0.3 * x, 2.0 * y  # unequal norms: dot differs from cosine
    temperature = 0.5
    P = plan.float()

    def side(anchors, others, mass):
        terms = []
        for k in range(len(anchors)):
            bary = (mass[k] @ others) / mass[k].sum()
            logits = torch.cat([(anchors[k] @ bary).view(1), others @ anchors[k]]) / temperature
            terms.append(torch.logsumexp(logits, 0) - logits[0])
        return torch.stack(terms).mean()

    expected = side(x, y, P) + side(y, x, P.t())
    loss = guided_contrastive_loss(x, y, plan, temperature, similarity="dot")
    assert abs(loss.item() - expected.item()) < 1e-4
    assert abs(loss.item() - guided_contrastive_loss(x, y, plan, temperature).item()) > 1e-3
    with pytest.raises(ValueError, match="similarity"):
        guided_contrastive_loss(x, y, plan, temperature, similarity="euclid")


def test_loss_validation():
    x, y, plan, _, _ = _loss_setup()
    with pytest.raises(ValueError, match="plan shape"):
        guided_contrastive_loss(x, y, plan.t(), 0.2)
    with pytest.raises(ValueError, match="temperature"):
        guided_contrastive_loss(x, y, plan, 0.0)
    with pytest.raises(ValueError, match="widths"):
        guided_contrastive_loss(x, y[:, :4], plan, 0.2)


# ------------------------------------------------------------------------------------ FGW


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fgw_plan_marginals(dtype):
    x, y, _, _, _, _ = _problem(24, 16, 15, dtype=dtype)
    x.requires_grad_(True)
    plan = fgw_plan(x, y, alpha=0.5)
    assert plan.shape == (24, 16) and plan.dtype == dtype and not plan.requires_grad
    assert (plan >= 0).all()
    row_err, col_err = _marginal_errors(plan)
    assert row_err < 1e-5 and col_err < 1e-5
    with pytest.raises(ValueError, match="alpha"):
        fgw_plan(x, y, alpha=1.5)


# ------------------------------------------------------------------------------------ cost / guide


def test_squared_euclidean_cost():
    g = torch.Generator().manual_seed(16)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randn(6, 5, generator=g, dtype=torch.float64)
    raw = squared_euclidean_cost(x, y, normalize=None)
    assert torch.allclose(raw, torch.cdist(x, y) ** 2, atol=1e-10)
    assert abs(squared_euclidean_cost(x, y, "mean").mean().item() - 1) < 1e-12
    assert abs(squared_euclidean_cost(x, y, "max").max().item() - 1) < 1e-12
    # coinciding points: exactly >= 0 and a finite gradient (no sqrt)
    xx = x.clone().requires_grad_(True)
    c = squared_euclidean_cost(xx, x.detach(), normalize="mean")
    assert (c >= 0).all()
    c.sum().backward()
    assert torch.isfinite(xx.grad).all()
    assert torch.equal(squared_euclidean_cost(torch.zeros(2, 3), torch.zeros(4, 3)), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="normalize"):
        squared_euclidean_cost(x, y, "sum")
    with pytest.raises(ValueError, match="width"):
        squared_euclidean_cost(x, y[:, :3])


def test_guide_mask_hand_made():
    num_overlap_user = 4  # ids 1, 2, 3 are overlapped; 0 is padding; >= 4 domain-exclusive
    src = torch.tensor([0, 1, 2, 5, 3, 7])
    tgt = torch.tensor([2, 0, 5, 1, 9, 4])
    mask = guide_mask(src, tgt, num_overlap_user)
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[1, 3] = True  # id 1
    expected[2, 0] = True  # id 2
    # padding 0 == 0 (row 0, col 1) is not guided; exclusive ids 5 == 5 (row 3, col 2) are
    # different people in the two domains; id 3 is absent from the target batch
    assert mask.dtype == torch.bool
    assert torch.equal(mask, expected)


def test_guide_mask_duplicates_and_validation():
    mask = guide_mask(torch.tensor([1, 1, 2]), torch.tensor([1, 3, 1]), 3)
    expected = torch.tensor([[True, False, True], [True, False, True], [False, False, False]])
    assert torch.equal(mask, expected)  # every occurrence guided to every occurrence
    assert not guide_mask(torch.tensor([1, 2]), torch.tensor([1, 2]), 1).any()
    with pytest.raises(ValueError, match="integer"):
        guide_mask(torch.tensor([1.0]), torch.tensor([1]), 3)
    with pytest.raises(ValueError, match="1-D"):
        guide_mask(torch.tensor([[1]]), torch.tensor([1]), 3)
    with pytest.raises(ValueError, match="num_overlap_user"):
        guide_mask(torch.tensor([1]), torch.tensor([1]), 0)
