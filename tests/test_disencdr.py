"""DisenCDR: its KL terms, the joint encoder's mixing, and one shared part per overlapped user."""

import numpy as np
import pytest
import torch
from conftest import build_on_synthetic
from torch.distributions import Normal, kl_divergence

from sieoug_recbole.models.base import DOMAINS
from sieoug_recbole.models.disencdr import Gaussian, gaussian_kl, mix_overlapped, row_normalized


def _gaussian(rows, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    return Gaussian(torch.randn(rows, dim, generator=generator), torch.randn(rows, dim, generator=generator))


def test_gaussian_kl_equals_its_closed_form():
    q = Gaussian(torch.tensor([[0.5, -1.0]]), torch.tensor([[0.0, float(np.log(4.0))]]))
    # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1 - log s^2) / 2 per dimension
    expected = 0.5 * ((1 + 0.25 - 1 - 0) + (4 + 1 - 1 - np.log(4.0)))
    torch.testing.assert_close(gaussian_kl(q), torch.tensor([expected], dtype=torch.float32))
    # against N(1, 2^2) in every dimension: log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2
    p = Gaussian(torch.ones(1, 2), torch.full((1, 2), float(np.log(4.0))))
    expected = (np.log(2.0) + (1 + 0.25) / 8 - 0.5) + (0.0 + (4 + 4) / 8 - 0.5)
    torch.testing.assert_close(gaussian_kl(q, p), torch.tensor([expected], dtype=torch.float32))


def test_gaussian_kl_matches_torch_distributions():
    q, p = _gaussian(5, 3, 0), _gaussian(5, 3, 1)
    for prior in (p, None):
        ref = p if prior is not None else Gaussian(torch.zeros(5, 3), torch.zeros(5, 3))
        expected = kl_divergence(
            Normal(q.mean, (0.5 * q.logvar).exp()), Normal(ref.mean, (0.5 * ref.logvar).exp())
        ).sum(-1)
        torch.testing.assert_close(gaussian_kl(q, prior), expected)
    assert torch.allclose(gaussian_kl(q, q), torch.zeros(5), atol=1e-6)


def test_mix_overlapped_mixes_only_the_overlapped_rows():
    source, target = torch.arange(10.0).view(5, 2), -torch.arange(12.0).view(6, 2)
    weight = torch.tensor([[0.25], [1.0]])  # rows 1 and 2 are overlapped (n_overlap = 3)
    mixed_source, mixed_target = mix_overlapped(source, target, weight, 3)
    expected = torch.stack([0.25 * source[1] + 0.75 * target[1], source[2]])
    torch.testing.assert_close(mixed_source[1:3], expected)
    torch.testing.assert_close(mixed_target[1:3], expected)
    torch.testing.assert_close(mixed_source[[0, 3, 4]], source[[0, 3, 4]])
    torch.testing.assert_close(mixed_target[[0, 3, 4, 5]], target[[0, 3, 4, 5]])


def test_row_normalized_rows_are_means():
    import scipy.sparse as sp

    matrix = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 0], [0, 1, 0]], dtype=np.float32))
    np.testing.assert_allclose(row_normalized(matrix).toarray(), [[0.5, 0.5, 0], [0, 0, 0], [0, 1, 0]])


@pytest.fixture
def built(fast_config):
    return build_on_synthetic("DisenCDR", dict(fast_config))


def test_source_weight_is_each_overlapped_users_share_of_source_interactions(built):
    model, dataset = built.model, built.dataset
    n_o = model.overlapped_num_users
    counts = {}
    for d in DOMAINS:
        matrix = model.training_matrix(dataset, d)
        matrix.data[:] = 1.0
        counts[d] = np.asarray(matrix.sum(axis=1)).ravel()[1:n_o]
    expected = counts["source"] / (counts["source"] + counts["target"])
    np.testing.assert_allclose(model.source_weight.squeeze(1).numpy(), expected, rtol=1e-6)
    assert 0 < expected.min() and expected.max() < 1  # both domains count


@pytest.mark.parametrize("training", [False, True])
def test_an_overlapped_user_has_one_shared_part_in_both_domains(built, training):
    model = built.model
    model.train(training)
    n_o = model.overlapped_num_users
    with torch.no_grad():
        post = model.posteriors()
    for field in ("mean", "logvar"):
        source, target = getattr(post["source"].shared, field), getattr(post["target"].shared, field)
        torch.testing.assert_close(source[1:n_o], target[1:n_o], rtol=0, atol=0)
        for d in DOMAINS:  # a user seen in one domain: the single-domain shared encoder's posterior
            torch.testing.assert_close(getattr(post[d].shared, field)[n_o:], getattr(post[d].single, field)[n_o:])
            assert not torch.allclose(getattr(post[d].shared, field)[1:n_o], getattr(post[d].single, field)[1:n_o])
    if not training:  # scoring: shared mean + the domain's specific mean, different per domain
        users = {d: model.domain_representations(d)[0] for d in DOMAINS}
        for d in DOMAINS:
            torch.testing.assert_close(users[d], post[d].shared.mean + post[d].specific_user.mean)
        assert not torch.allclose(users["source"][1:n_o], users["target"][1:n_o])


def test_kl_term_equals_its_formula_on_a_batch(built):
    model, batch = built.model, built.batch
    model.eval()  # no dropout: the posteriors are a function of the weights
    post = model.posteriors()
    beta = model.beta
    for domain in DOMAINS:
        users, pos, neg = model.batch(domain, batch)
        p = post[domain]
        expected = (
            gaussian_kl(p.specific_user.rows(users)).mean()
            + gaussian_kl(p.specific_item.rows(pos)).mean()
            + gaussian_kl(p.specific_item.rows(neg)).mean()
            + (1 - beta) * gaussian_kl(p.shared.rows(users)).mean()
            + beta * gaussian_kl(p.shared.rows(users), p.single.rows(users)).mean()
        )
        _, kl = model.domain_loss(domain, batch, p)
        torch.testing.assert_close(kl, model.kl_weight * expected)
        # the beta term counts the overlapped users only (the others' two posteriors are one)
        overlapped = users < model.overlapped_num_users
        kl_rows = gaussian_kl(p.shared.rows(users), p.single.rows(users))
        assert overlapped.any() and (~overlapped).any()
        assert torch.all(kl_rows[~overlapped] == 0) and torch.all(kl_rows[overlapped] > 0)


def test_a_target_step_reaches_the_source_through_the_joint_encoder(built):
    model, batch = built.model, built.batch
    model.set_phase("TARGET")
    sum(model.calculate_loss(batch)).backward()
    assert model.shared_user_embedding["source"].weight.grad.abs().sum() > 0
    assert model.joint_shared_encoder["source"].layers[0].out_hop.weight.grad.abs().sum() > 0
    # the source's specific encoders and items are not in a target step
    assert model.user_embedding["source"].weight.grad is None
    assert model.item_embedding["source"].weight.grad is None


def test_bad_keys_are_clear_errors(fast_config):
    from sieoug_recbole.config_checks import ConfigError

    for key, value in (("beta", 1.5), ("loss_type", "mse"), ("n_layers", 0), ("dropout", 1.0)):
        with pytest.raises(ConfigError, match=f"config key '{key}' must be"):
            build_on_synthetic("DisenCDR", {**fast_config, key: value})
