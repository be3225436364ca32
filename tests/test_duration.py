"""DURation (sieoug_recbole/models/duration.py) and its alignment terms
(sieoug_recbole/transfer_losses.py): the kernel discrepancy and CORAL are zero exactly when
they should be, and the model's overlapped users have one unified vector."""

import pytest
import torch
from conftest import build_on_synthetic

from sieoug_recbole.models.base import DOMAINS
from sieoug_recbole.transfer_losses import coral, covariance, gaussian_mmd


# ----- pure functions ---------------------------------------------------------------------------
def test_distribution_alignment_is_zero_for_one_distribution_and_positive_otherwise():
    torch.manual_seed(0)
    x = torch.randn(200, 4)
    assert float(gaussian_mmd(x, x[torch.randperm(200)])) == pytest.approx(0.0, abs=1e-6)  # the same points
    same = float(gaussian_mmd(x[:100], x[100:]))  # two samples of one distribution: small
    shifted = float(gaussian_mmd(x, x + 1.0))
    wider = float(gaussian_mmd(x, 2.0 * torch.randn(200, 4)))  # same mean, other variance
    assert shifted > 5 * same and wider > 5 * same  # (the biased estimate of two samples is > 0)
    assert float(gaussian_mmd(x + 1.0, x)) == pytest.approx(shifted, rel=1e-5)  # symmetric


def test_distribution_alignment_pulls_the_samples_together():
    torch.manual_seed(0)
    x, y = torch.randn(50, 3), (torch.randn(50, 3) + 2.0).requires_grad_()
    gaussian_mmd(x, y).backward()
    # gradient descent moves y towards x: the step lowers the discrepancy
    with torch.no_grad():
        assert float(gaussian_mmd(x, y - 0.5 * y.grad)) < float(gaussian_mmd(x, y))


def test_correlation_alignment_equals_its_formula():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    y = torch.tensor([[0.0, 0.0], [2.0, 2.0], [1.0, 0.0], [0.0, 1.0]])
    centred = x - x.mean(0)
    torch.testing.assert_close(covariance(x), centred.T @ centred / 2)
    expected = ((covariance(x) - covariance(y)) ** 2).sum() / (4 * 2 * 2)
    torch.testing.assert_close(coral(x, y), expected)
    torch.manual_seed(0)
    z = torch.randn(100, 3)
    assert float(coral(z, z + 5.0)) == pytest.approx(0.0, abs=1e-6)  # a shift keeps the covariance
    assert float(coral(z, 3.0 * z)) > 0.1


# ----- the model ----------------------------------------------------------------------------------
def test_an_overlapped_user_has_one_vector_made_from_both_domains(fast_config):
    model = build_on_synthetic("DURation", fast_config).model
    n_o = model.overlapped_num_users
    source, target = model.user_vectors("source"), model.user_vectors("target")
    torch.testing.assert_close(source[1:n_o], target[1:n_o])  # unified
    assert not torch.allclose(source[n_o : n_o + 50], target[n_o : n_o + 50])  # different people
    # the source items reach an overlapped user's target vector, not a target-only user's
    rows = torch.tensor([1, 2, n_o, n_o + 1])
    model.user_vectors("target", rows).sum().backward()
    grad = model.item_input["source"].weight.grad
    assert grad.abs().sum() > 0
    model.zero_grad()
    model.user_vectors("target", rows[2:]).sum().backward()
    assert model.item_input["source"].weight.grad is None or model.item_input["source"].weight.grad.abs().sum() == 0


def test_user_vector_is_the_tower_over_its_items_inputs_scaled_by_sqrt_count(fast_config):
    model = build_on_synthetic("DURation", fast_config).model
    n_o = model.overlapped_num_users
    matrix = {d: torch.from_numpy(model.user_items[d].matrix.toarray()) for d in DOMAINS}
    for row in (1, n_o + 3):  # an overlapped user, a target-only user
        total = matrix["target"][row] @ model.item_input["target"].weight
        count = matrix["target"][row].sum()
        if row < n_o:
            total = total + matrix["source"][row] @ model.item_input["source"].weight
            count = count + matrix["source"][row].sum()
        expected = model.user_tower(total / count.sqrt())
        torch.testing.assert_close(model.user_vectors("target", torch.tensor([row]))[0], expected)


def test_alignment_terms_follow_their_weights(fast_config):
    built = build_on_synthetic("DURation", {**fast_config, "distribution_weight": 0.0, "correlation_weight": 0.0})
    parts = built.model.calculate_loss(built.batch)
    assert len(parts) == 4 and float(parts[2]) == 0.0 and float(parts[3]) == 0.0
    built = build_on_synthetic("DURation", {**fast_config, "distribution_weight": 1.0, "align_on": "items"})
    model = built.model
    distribution, _ = model.transfer_loss(built.batch, None)
    samples = model.alignment_samples(built.batch)
    assert len(samples) == 1  # items only
    torch.testing.assert_close(distribution, gaussian_mmd(*samples[0]))
    assert float(distribution) > 0
