"""VDEA: the Wasserstein geometry of its Gaussians, its local and global alignments."""

import numpy as np
import pytest
import torch
from conftest import build_on_synthetic

from sieoug_recbole.models.base import DOMAINS
from sieoug_recbole.models.disencdr import Gaussian
from sieoug_recbole.models.vdea import (
    first_distinct,
    fused_gw_value,
    gaussian_w2,
    global_alignment,
    l2_normalized_rows,
    wasserstein_points,
)


def test_gaussian_w2_is_the_quantile_distance_in_one_dimension():
    from scipy.stats import norm

    a = Gaussian(torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([[np.log(0.5**2)]], dtype=torch.float64))
    b = Gaussian(torch.tensor([[-1.0]], dtype=torch.float64), torch.tensor([[np.log(2.0**2)]], dtype=torch.float64))
    # W2^2 of two distributions on the line: the mean squared gap between their quantile functions
    levels = (np.arange(200000) + 0.5) / 200000
    numeric = np.mean((norm.ppf(levels, 0.3, 0.5) - norm.ppf(levels, -1.0, 2.0)) ** 2)
    assert gaussian_w2(a, b).item() == pytest.approx(numeric, rel=1e-3)
    assert gaussian_w2(a, b).item() == pytest.approx(1.3**2 + 1.5**2)


def test_wasserstein_points_give_the_w2_geometry():
    generator = torch.Generator().manual_seed(0)
    a = Gaussian(torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator))
    b = Gaussian(torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator))
    distance = (wasserstein_points(a) - wasserstein_points(b)).pow(2).sum(-1)
    torch.testing.assert_close(distance, gaussian_w2(a, b))


def test_fused_gw_value_equals_pot_and_the_plan_has_uniform_marginals():
    import ot

    generator = torch.Generator().manual_seed(1)
    x, y = (
        torch.randn(7, 4, generator=generator, dtype=torch.float64),
        torch.randn(5, 4, generator=generator, dtype=torch.float64),
    )
    alpha = 0.3
    loss, plan = global_alignment(x, y, alpha)
    # the plan: every source user's mass 1, every target user's n / m
    torch.testing.assert_close(plan.sum(dim=1), torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(plan.sum(dim=0), torch.full((5,), 7 / 5, dtype=torch.float64))
    # the loss: POT's fused Gromov-Wasserstein objective of the same (mean-normalised) costs and plan
    from sieoug_recbole.matching import squared_euclidean_cost

    costs = [squared_euclidean_cost(u, v, "mean").numpy() for u, v in ((x, y), (x, x), (y, y))]
    T = plan.numpy() / 7
    structure = ot.gromov.gwloss(*ot.gromov.init_matrix(costs[1], costs[2], T.sum(1), T.sum(0), "square_loss"), T)
    assert loss.item() == pytest.approx((1 - alpha) * float((T * costs[0]).sum()) + alpha * float(structure), rel=1e-9)
    # the plan minimises it: the product coupling of the marginals (no matching at all) is worse
    independent = torch.full((7, 5), 1 / 35, dtype=torch.float64)
    costs = [torch.from_numpy(c) for c in costs]
    assert loss < fused_gw_value(independent, *costs, alpha)


def test_fused_gw_value_is_differentiable_in_the_costs():
    plan = torch.full((3, 2), 1 / 6, dtype=torch.float64)
    cost = torch.rand(3, 2, dtype=torch.float64, requires_grad=True)
    value = fused_gw_value(
        plan, cost, torch.zeros(3, 3, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64), 0.0
    )
    value.backward()
    torch.testing.assert_close(cost.grad, plan)  # d<T, M>/dM = T


def test_first_distinct_keeps_the_order_of_first_occurrence():
    rows = torch.tensor([5, 3, 5, 9, 3, 1])
    assert first_distinct(rows, 10).tolist() == [5, 3, 9, 1]
    assert first_distinct(rows, 2).tolist() == [5, 3]


def test_l2_normalized_rows():
    import scipy.sparse as sp

    matrix = sp.csr_matrix(np.array([[1, 1, 0, 1], [0, 0, 0, 0]], dtype=np.float32))
    np.testing.assert_allclose(
        l2_normalized_rows(matrix).toarray(), [[3**-0.5, 3**-0.5, 0, 3**-0.5], [0] * 4], rtol=1e-6
    )


# ----- the model ----------------------------------------------------------------------------
def _overlapped_rows(model, batch):
    rows = torch.cat([model.batch(d, batch)[0] for d in DOMAINS])
    return torch.unique(rows[(rows >= 1) & (rows < model.overlapped_num_users)])


def _train_on(model, batch, term, steps=20, lr=0.05):
    """A few gradient steps on one transfer term alone (0 = local, 1 = global)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.eval()  # no input dropout: the same posteriors for the same weights
    for _ in range(steps):
        optimizer.zero_grad()
        representations = {d: model.training_representations(d) for d in DOMAINS}
        model.transfer_loss(batch, representations)[term].backward()
        optimizer.step()


def test_local_alignment_pulls_an_overlapped_users_two_embeddings_together(fast_config):
    built = build_on_synthetic("VDEA", {**fast_config, "global_weight": 0.0})
    model, batch = built.model, built.batch
    model.eval()
    rows = _overlapped_rows(model, batch)
    assert len(rows) > 10

    def distances():
        with torch.no_grad():
            post = {d: model.training_representations(d) for d in DOMAINS}
        return gaussian_w2(post["source"].gaussian(rows), post["target"].gaussian(rows))

    before = distances()
    with torch.no_grad():  # the term is the mean of those distances
        post = {d: model.training_representations(d) for d in DOMAINS}
        local, global_ = model.transfer_loss(batch, post)
    torch.testing.assert_close(local, model.local_weight * before.mean())
    assert global_ == 0
    _train_on(model, batch, term=0)
    after = distances()
    assert after.mean() < 0.8 * before.mean()
    assert (after < before).float().mean() > 0.9


def test_global_alignment_draws_the_domains_users_together(fast_config):
    built = build_on_synthetic("VDEA", {**fast_config, "local_weight": 0.0, "global_weight": 1.0})
    model, batch = built.model, built.batch

    def value():
        with torch.no_grad():
            post = {d: model.training_representations(d) for d in DOMAINS}
            return model.transfer_loss(batch, post)[1]

    before = value()
    assert before > 0
    _train_on(model, batch, term=1, steps=10)
    assert value() < 0.9 * before


def test_without_alignment_the_domains_are_independent(fast_config):
    built = build_on_synthetic("VDEA", {**fast_config, "local_weight": 0.0, "global_weight": 0.0})
    model, batch = built.model, built.batch
    model.set_phase("BOTH")
    source_loss = sum(model.domain_loss("source", batch, model.training_representations("source")))
    source_loss.backward()
    assert all(p.grad is None for name, p in model.named_parameters() if "target" in name)
    # with the alignments on, a step couples them
    built = build_on_synthetic("VDEA", dict(fast_config))
    model = built.model
    sum(model.calculate_loss(built.batch)[4:]).backward()  # the two transfer terms
    assert model.encoder_items["target"].weight.grad.abs().sum() > 0
    assert model.encoder_items["source"].weight.grad.abs().sum() > 0


def test_bad_keys_are_clear_errors(fast_config):
    from sieoug_recbole.config_checks import ConfigError

    for key, value in (("global_alpha", 2.0), ("global_users", 1), ("input_dropout", 1.0), ("kl_weight", -1)):
        with pytest.raises(ConfigError, match=f"config key '{key}' must be"):
            build_on_synthetic("VDEA", {**fast_config, key: value})
