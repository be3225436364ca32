"""MOTKD: the proxy transport, the bridge it builds, the attention, the distillation terms, and
how the model wires them (the learning test against popularity is in test_baselines.py)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import build_on_synthetic

from sieoug_recbole.models.base import DOMAINS
from sieoug_recbole.models.lightgcn import lightgcn_propagation
from sieoug_recbole.models.mm_graph import DomainModalities
from sieoug_recbole.models.motkd import (
    bridge_counterparts,
    channel_attention,
    preference_distillation,
    proxy_cost,
    proxy_plan,
    proxy_prototypes,
    representation_distillation,
)


# ----- pure functions ------------------------------------------------------------------------
def test_proxy_plan_has_uniform_marginals():
    torch.manual_seed(0)
    users, proxies = torch.randn(50, 8), torch.randn(7, 8)
    cost = proxy_cost(users, proxies)
    assert cost.min() >= 0 and cost.max() <= 4 + 1e-6
    plan, error = proxy_plan(cost, eps=0.1, tol=1e-6)
    assert plan.shape == (50, 7) and (plan >= 0).all()
    torch.testing.assert_close(plan.sum(1), torch.full((50,), 1 / 50), rtol=1e-4, atol=0)
    torch.testing.assert_close(plan.sum(0), torch.full((7,), 1 / 7), rtol=1e-4, atol=0)
    assert error < 1e-4


def test_proxy_plan_sends_each_user_to_its_own_proxy():
    # users sitting on distinct proxies: with a small eps the plan is the assignment (identity / n)
    proxies = F.normalize(torch.randn(6, 5, generator=torch.Generator().manual_seed(1)), dim=1)
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    plan, _ = proxy_plan(proxy_cost(proxies[order] * 2.0, proxies), eps=0.01)  # the scale does not matter
    assert plan.argmax(1).tolist() == order.tolist()
    assert (plan.max(1).values * 6 > 0.99).all()


def test_bridge_glues_the_two_plans_at_the_proxies():
    torch.manual_seed(2)
    proxies = torch.randn(4, 3)
    source, target = torch.randn(10, 3), torch.randn(6, 3)
    plan_s, _ = proxy_plan(proxy_cost(source, proxies), eps=0.2)
    plan_t, _ = proxy_plan(proxy_cost(target, proxies), eps=0.2)
    counterparts = bridge_counterparts(plan_s, proxy_prototypes(plan_t, target))
    # the source-target coupling of the bridge: plan_s diag(K) plan_t^T, marginals 1/n and 1/m
    coupling = plan_s @ torch.diag(torch.full((4,), 4.0)) @ plan_t.T
    torch.testing.assert_close(coupling.sum(1), torch.full((10,), 1 / 10), rtol=1e-4, atol=0)
    torch.testing.assert_close(coupling.sum(0), torch.full((6,), 1 / 6), rtol=1e-4, atol=0)
    # each counterpart is the barycentre of the target users under that coupling
    torch.testing.assert_close(counterparts, 10 * coupling @ target, rtol=1e-4, atol=1e-6)
    # a convex combination: constant target vectors are their own counterparts
    ones = torch.ones(6, 3)
    torch.testing.assert_close(
        bridge_counterparts(plan_s, proxy_prototypes(plan_t, ones)), torch.ones(10, 3), rtol=1e-4, atol=0
    )


def test_channel_attention_weights_are_a_distribution():
    torch.manual_seed(3)
    channels = torch.randn(5, 3, 4)
    project = torch.nn.Linear(4, 2)
    fused, weights = channel_attention(channels, project, torch.randn(2))
    assert weights.shape == (5, 3) and (weights > 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    torch.testing.assert_close(fused, (weights.unsqueeze(-1) * channels).sum(1))
    # a zero query weighs the channels alike: the mean
    fused, weights = channel_attention(channels, project, torch.zeros(2))
    torch.testing.assert_close(weights, torch.full((5, 3), 1 / 3))
    torch.testing.assert_close(fused, channels.mean(1))


def test_distillation_is_zero_when_the_student_is_the_teacher():
    torch.manual_seed(4)
    x, margin = torch.randn(8, 4), torch.randn(8) * 3
    assert float(representation_distillation(x, x)) == pytest.approx(0, abs=1e-6)
    assert float(representation_distillation(2 * x, x)) == pytest.approx(0, abs=1e-6)  # direction only
    assert float(preference_distillation(margin, margin, 0.5)) == pytest.approx(0, abs=1e-6)
    assert representation_distillation(torch.randn(8, 4), x) > 0.1
    assert preference_distillation(-margin, margin, 0.5) > 0.1
    # the prediction term's gradient moves the student's margin towards the teacher's
    student = torch.zeros(8, requires_grad=True)
    preference_distillation(student, margin, 1.0).backward()
    assert (torch.sign(-student.grad) == torch.sign(margin)).all()


# ----- the model ---------------------------------------------------------------------------
def build(fast_config, **overrides):
    built = build_on_synthetic("MOTKD", {**fast_config, **overrides})
    return built.model, built.batch


def test_multimodal_attention_over_id_and_modality_channels(fast_config):
    model, batch = build(fast_config)
    for domain in DOMAINS:
        step = model.training_representations(domain)
        assert model.domains[domain].modalities == ["text", "visual"]
        users, items = model.domain_representations(domain)
        assert users.shape == (model.n_users[domain], model.embedding_size)
        assert items.shape == (model.n_items[domain], model.embedding_size)
        for kind in ("user", "item"):
            weights = step.weights(kind)
            assert weights.shape[1] == 3  # ID, text, visual
            torch.testing.assert_close(weights.sum(1), torch.ones(len(weights)))
        rows = torch.tensor([1, 2, 5])
        torch.testing.assert_close(step.users(rows), users[rows])
    # the modality features are trained through the graph
    sum(model.calculate_loss(batch)).backward()
    for domain in DOMAINS:
        for projection in model.feature_projection[domain].values():
            assert projection.weight.grad.abs().sum() > 0
        assert model.modality_attention[domain].query.grad.abs().sum() > 0


@pytest.mark.parametrize("start", ["id", "zero"])
def test_content_channels_equal_propagating_the_projected_features(start, fast_config):
    # the propagated features are computed once and projected per row: by linearity the same
    # as propagating [users' start; X W_m] over the graph every step
    built = build_on_synthetic("MOTKD", {**fast_config, "content_user_start": start})
    model = built.model
    for domain in DOMAINS:
        items = DomainModalities(built.config, built.dataset, domain, model.layout)
        feature_rows = torch.from_numpy(items.feature_rows(model.n_items[domain]))
        step = model.training_representations(domain)
        users_0 = model.user_embedding[domain].weight
        for index, (modality, features) in enumerate(items.padded_features().items(), start=1):
            items_0 = model.feature_projection[domain][modality](F.normalize(features, dim=1)[feature_rows])
            start_0 = users_0 if start == "id" else torch.zeros_like(users_0)
            users, item_vectors = lightgcn_propagation(model.adjacency[domain], start_0, items_0, model.n_layers)
            torch.testing.assert_close(step.channels("user")[:, index], users, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(step.channels("item")[:, index], item_vectors, rtol=1e-4, atol=1e-6)
        ids = lightgcn_propagation(
            model.adjacency[domain], users_0, model.item_embedding[domain].weight, model.n_layers
        )
        torch.testing.assert_close(step.channels("user")[:, 0], ids[0], rtol=1e-4, atol=1e-6)


def test_transfer_terms_couple_the_domains_through_proxies_and_teacher(fast_config):
    model, batch = build(fast_config)
    losses = model.calculate_loss(batch)
    assert len(losses) == 2 + 4  # a BPR term per domain, then OT, teacher, and the two KD terms
    model.zero_grad()
    sum(losses[2:]).backward()
    assert model.proxies.grad.abs().sum() > 0
    for domain in DOMAINS:
        assert model.user_embedding[domain].weight.grad.abs().sum() > 0
        assert model.teacher_attention[domain].query.grad.abs().sum() > 0
    # the OT term is <P, C> of both domains' plans to the proxies
    reps = {d: model.training_representations(d) for d in DOMAINS}
    expected = 0.0
    for domain in DOMAINS:
        users = reps[domain].users(model.batch(domain, batch)[0])
        cost = proxy_cost(users, model.proxies).detach()
        plan, _ = proxy_plan(cost, model.proxy_eps, model.proxy_max_iter, model.proxy_tol)
        expected += float((plan * cost).sum())
    assert float(model.transfer_loss(batch, reps)[0]) == pytest.approx(model.ot_weight * expected, rel=1e-5)


def test_without_transfer_terms_the_domains_train_apart(fast_config):
    model, batch = build(
        fast_config, ot_weight=0.0, teacher_weight=0.0, kd_representation_weight=0.0, kd_prediction_weight=0.0
    )
    losses = model.calculate_loss(batch)
    assert all(float(term) == 0 for term in losses[2:])
    model.zero_grad()
    losses[1].backward()  # the target's own BPR
    assert model.user_embedding["source"].weight.grad is None


@pytest.mark.parametrize("mode", ["identity", "proxy"])
def test_overlapped_users_counterpart(mode, fast_config):
    model, batch = build(fast_config, overlap_counterpart=mode)
    reps = {d: model.training_representations(d) for d in DOMAINS}
    users = model.batch("target", batch)[0]
    overlapped = (users >= 1) & (users < model.overlapped_num_users)
    assert overlapped.any() and not overlapped.all()
    students = {d: reps[d].users(model.batch(d, batch)[0]) for d in DOMAINS}
    plan, _ = proxy_plan(proxy_cost(students["target"], model.proxies), model.proxy_eps)
    source_plan, _ = proxy_plan(proxy_cost(students["source"], model.proxies), model.proxy_eps)
    bridged = bridge_counterparts(plan, proxy_prototypes(source_plan, students["source"]))
    counterparts = model.counterparts(users, plan, proxy_prototypes(source_plan, students["source"]), reps["source"])
    torch.testing.assert_close(counterparts[~overlapped], bridged[~overlapped])
    expected = reps["source"].users(users[overlapped]) if mode == "identity" else bridged[overlapped]
    torch.testing.assert_close(counterparts[overlapped], expected)


@pytest.mark.parametrize(
    "key, value", [("proxy_eps", 0), ("n_proxies", 0), ("overlap_counterpart", "both"), ("kd_prediction_weight", -1.0)]
)
def test_bad_keys_are_clear_errors(key, value, fast_config):
    with pytest.raises(ValueError, match=f"config key '{key}' must be"):
        build(fast_config, **{key: value})
