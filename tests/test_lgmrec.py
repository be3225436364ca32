"""LGMRec (sieoug_recbole/models/lgmrec.py): its pieces against their formulas, the model's
local part alone, the hypergraph's training step, and LGMRec+GOUM."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import build_on_synthetic
from recbole.data.interaction import Interaction

from sieoug_recbole.models.base import DOMAINS
from sieoug_recbole.models.lgmrec import gumbel_softmax_rows, hypergraph_contrastive_loss, hypergraph_propagation
from sieoug_recbole.models.lightgcn import lightgcn_propagation


# ----- pure functions ---------------------------------------------------------------------------
@pytest.mark.parametrize("noise", ["gumbel", "logistic", None])
def test_relaxed_dependencies_are_distributions_over_hyperedges(noise):
    torch.manual_seed(0)
    logits = torch.randn(50, 4) * 3
    rows = gumbel_softmax_rows(logits, 0.2, noise)
    assert rows.shape == (50, 4) and (rows >= 0).all()
    torch.testing.assert_close(rows.sum(dim=1), torch.ones(50))
    if noise is None:
        torch.testing.assert_close(rows, torch.softmax(logits / 0.2, dim=1))


def test_gumbel_noise_samples_hyperedges_by_their_softmax():
    # the Gumbel-max property: at a low temperature a row is nearly one-hot on hyperedge k
    # with probability softmax(logits)_k
    torch.manual_seed(0)
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5])
    draws = gumbel_softmax_rows(logits.expand(20000, 4).clone(), 0.01, "gumbel")
    assert (draws.max(dim=1).values > 0.9).float().mean() > 0.95
    frequencies = torch.bincount(draws.argmax(dim=1), minlength=4).float() / 20000
    torch.testing.assert_close(frequencies, torch.softmax(logits, dim=0), atol=0.015, rtol=0)


def test_hypergraph_propagation_follows_its_formula():
    torch.manual_seed(0)
    h_items, h_users, x0 = torch.rand(6, 3), torch.rand(5, 3), torch.randn(6, 4)
    users, items = hypergraph_propagation(h_items, h_users, x0, 2)
    x1 = h_items @ h_items.T @ x0
    torch.testing.assert_close(items, h_items @ h_items.T @ x1)
    torch.testing.assert_close(users, h_users @ h_items.T @ x1)  # users read the last layer's hyperedges
    with pytest.raises(ValueError, match="at least one layer"):
        hypergraph_propagation(h_items, h_users, x0, 0)


def test_contrastive_loss_equals_its_formula():
    torch.manual_seed(0)
    candidates_a, candidates_b = torch.randn(5, 3), torch.randn(5, 3)
    batch = [3, 0, 3]
    loss = hypergraph_contrastive_loss(candidates_a[batch], candidates_b, torch.tensor(batch), 0.2)

    def cos(x, y):
        return float(x @ y / (x.norm() * y.norm()))

    expected = 0.0
    for node in batch:
        a = candidates_a[node]
        numerator = math.exp(cos(a, candidates_b[node]) / 0.2)
        expected -= math.log(numerator / sum(math.exp(cos(a, c) / 0.2) for c in candidates_b))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


# ----- the model ----------------------------------------------------------------------------------
def modal_embedding_by_hand(model, dataset, domain):
    """E^m of each modality written out with dense matrices: users start at the mean of their
    items' projected features, then K propagations (layer K)."""
    interactions = torch.from_numpy((model.training_matrix(dataset, domain) > 0).toarray().astype("float32"))
    mean = interactions / interactions.sum(dim=1, keepdim=True).clamp_min(1)
    adjacency = model.adjacency[domain].to_dense()
    state = model.domains[domain]
    out = []
    for m in state.modalities:
        items = model.feature_projection[domain][m](state.features[m])[state.feature_rows]
        x = torch.cat([mean @ items, items])
        for _ in range(model.n_modal_layers):
            x = adjacency @ x
        out.append(x)
    return out


def test_without_the_hypergraph_it_is_its_local_part(fast_config):
    built = build_on_synthetic("LGMRec", {**fast_config, "use_hypergraph": False})
    model = built.model
    model.eval()
    with torch.no_grad():
        for domain in DOMAINS:
            step = model.training_representations(domain)
            assert step.global_parts is None and step.global_ is None
            users, items = model.domain_representations(domain)
            cge_users, cge_items = lightgcn_propagation(
                model.adjacency[domain],
                model.user_embedding[domain].weight,
                model.item_embedding[domain].weight,
                model.n_layers,
            )
            local = torch.cat([cge_users, cge_items]) + sum(
                F.normalize(e, dim=1) for e in modal_embedding_by_hand(model, built.dataset, domain)
            )
            torch.testing.assert_close(torch.cat([users, items]), local, rtol=1e-4, atol=1e-5)
    model.train()
    terms = model.calculate_loss(built.batch)
    assert len(terms) == 4 and terms[1] == 0 and terms[3] == 0  # no contrastive term


def test_zero_global_weight_leaves_the_local_part(fast_config):
    local = build_on_synthetic("LGMRec", {**fast_config, "use_hypergraph": False}).model
    fused = build_on_synthetic("LGMRec", {**fast_config, "global_weight": 0.0}).model
    for model in (local, fused):
        model.eval()
    with torch.no_grad():
        for domain in DOMAINS:
            for a, b in zip(local.domain_representations(domain), fused.domain_representations(domain)):
                torch.testing.assert_close(a, b)


def test_a_step_fuses_only_the_rows_it_reads_and_agrees_with_the_full_tables(fast_config):
    model = build_on_synthetic("LGMRec", fast_config).model
    model.eval()  # noise-free: both calls see the same hypergraph
    rows = torch.tensor([3, 1, 3, 7])
    with torch.no_grad():
        for domain in DOMAINS:
            users, items = model.domain_representations(domain)
            step = model.training_representations(domain)
            torch.testing.assert_close(step.users(rows), users[rows])
            torch.testing.assert_close(step.items(rows), items[rows])
            torch.testing.assert_close(model.step_user_vectors(domain, step), users)


def test_hypergraph_step_contrasts_the_modalities_and_trains_the_hyperedges(fast_config):
    built = build_on_synthetic("LGMRec", {**fast_config, "cl_weight": 0.5})
    model, batch = built.model, built.batch
    torch.manual_seed(0)
    terms = model.calculate_loss(batch)
    # the contrastive term of each domain, recomputed from the same step's global vectors
    torch.manual_seed(0)
    for position, domain in zip((1, 3), DOMAINS):
        global_parts = model.training_representations(domain).global_parts
        state = model.domains[domain]
        assert state.modalities == ["text", "visual"]
        (users_t, items_t), (users_v, items_v) = global_parts["text"], global_parts["visual"]
        assert users_t.shape == (len(state.user_rows), model.embedding_size)  # the domain's own users
        users, pos, _ = model.batch(domain, batch)
        users, pos = state.user_position[users], state.item_position[pos]
        assert (users >= 0).all() and (pos >= 0).all()
        expected = hypergraph_contrastive_loss(users_t[users], users_v, users, 0.2) + hypergraph_contrastive_loss(
            items_t[pos], items_v, pos, 0.2
        )
        torch.testing.assert_close(terms[position], 0.5 * expected)
        assert terms[position] > 0
    sum(terms).backward()
    for domain in DOMAINS:
        for m in ("text", "visual"):
            assert model.hyperedges[domain][m].grad.abs().sum() > 0
            assert model.feature_projection[domain][m].weight.grad.abs().sum() > 0
        assert model.hyperedges[domain]["text"].shape[0] == model.n_hyperedges


def test_dependencies_are_thin_and_scores_noise_free_at_evaluation(fast_config):
    model = build_on_synthetic("LGMRec", fast_config).model
    state = model.domains["target"]
    logits = state.raw_features("text") @ model.hyperedges["target"]["text"].T
    assert logits.shape == (len(state.item_rows), model.n_hyperedges)  # items x A, not items x items
    model.eval()
    torch.testing.assert_close(model.dependency(logits).sum(dim=1), torch.ones(len(logits)))
    users = Interaction({model.TARGET_USER_ID: torch.tensor([1, 2, 3])})
    with torch.no_grad():
        first = model.full_sort_predict(users)
        model._eval_cache.clear()
        torch.testing.assert_close(model.full_sort_predict(users), first, rtol=0, atol=0)
        model.hyperedge_noise_at_eval = True  # the released code's behaviour: noisy scores
        model._eval_cache.clear()
        assert not torch.equal(model.full_sort_predict(users), first)


def test_guided_lgmrec_adds_the_guidance_term(fast_config):
    built = build_on_synthetic("LGMRec+GOUM", {**fast_config, "guide_lambda": 0.7})
    model = built.model
    assert model.guidance.kind == "goum" and model.guidance.active
    terms = model.calculate_loss(built.batch)
    assert len(terms) == 5 and terms[4] > 0  # (BPR, contrast) per domain, then lambda * L_C
    sum(terms).backward()
    assert model.user_embedding["source"].weight.grad.abs().sum() > 0
