"""Guidance as a plug-in (sieoug_recbole/guidance.py): any model, one implementation.

The hook adds exactly lambda * L_C; lambda = 0 changes nothing; the registered X+GOUM models;
whole-population matching (ot_scope: global); and the bad settings, each one clear error.
"""

import warnings

import pytest
import torch
from conftest import SYNTHETIC_YAML, build_on_synthetic

import sieoug_recbole
from sieoug_recbole.config_checks import ConfigError
from sieoug_recbole.matching import goum, guide_mask, guided_contrastive_loss, squared_euclidean_cost
from sieoug_recbole.quick_start import make_config
from sieoug_recbole.registry import get_model_class, model_names


@pytest.fixture
def guided_config(fast_config, tmp_path):
    return {**fast_config, "graph_cache_dir": str(tmp_path / "graphs"), "n_clusters": 8}


@pytest.mark.parametrize("name", ["LightGCN+GOUM", "FREEDOM+GOUM"])
def test_the_hook_adds_exactly_lambda_times_the_guided_loss(name, guided_config):
    model, batch, _, _ = build_on_synthetic(name, {**guided_config, "guide_lambda": 0.7})
    assert model.guidance.kind == "goum" and model.guidance.active
    torch.manual_seed(0)
    terms = model.calculate_loss(batch)
    assert len(terms) == 3  # source, target, then the guidance term
    # L_C written out from the model's own step vectors, the batch's users and GOUM's plan
    g = model.guidance
    src, tgt = g.batch_users(model, batch)
    torch.manual_seed(0)
    user_src = model.domain_representations("source")[0][src]
    user_tgt = model.domain_representations("target")[0][tgt]
    guide = guide_mask(src, tgt, model.overlapped_num_users)
    cost = squared_euclidean_cost(user_src.detach(), user_tgt.detach(), normalize="mean")
    plan = goum(cost, guide, g.eps, max_iter=g.max_iter, tol=g.tol)
    expected = guided_contrastive_loss(user_src, user_tgt, plan, g.temperature, "dot")
    torch.testing.assert_close(terms[2], 0.7 * expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["LightGCN", "SIEOUG"])
def test_lambda_zero_leaves_the_model_bit_identical(name, guided_config, tmp_path):
    base = {**guided_config, "dual_domain_eval": True, "train_epochs": ["BOTH:3"]}
    without = sieoug_recbole.run(
        name, [SYNTHETIC_YAML], {**base, "guidance": "none", "checkpoint_dir": str(tmp_path / "a")}, verbose=False
    )
    with_hook = sieoug_recbole.run(
        name,
        [SYNTHETIC_YAML],
        {**base, "guidance": "goum", "guide_lambda": 0.0, "checkpoint_dir": str(tmp_path / "b")},
        verbose=False,
    )
    assert with_hook["metrics_by_domain"] == without["metrics_by_domain"]
    assert with_hook["valid_history"] == without["valid_history"]
    a = torch.load(without["saved_model_file"], weights_only=False)["state_dict"]
    b = torch.load(with_hook["saved_model_file"], weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_registered_guided_models():
    for base in ("LightGCN", "LATTICE", "FREEDOM"):
        cls = get_model_class(f"{base}+GOUM")
        assert cls.forced_config == {"guidance": "goum"} and issubclass(cls, get_model_class(base))
        assert f"{base}+GOUM" in model_names()


@pytest.mark.parametrize(
    "model, overrides, match",
    [
        ("LightGCN", {"guidance": "wasserstein"}, "config key 'guidance' must be one of"),
        ("LightGCN", {"ot_scope": "everyone"}, "config key 'ot_scope'"),
        ("LightGCN", {"ot_refresh": 0}, "config key 'ot_refresh' must be an integer >= 1"),
        ("LightGCN", {"ot_eps": 0}, "config key 'ot_eps'"),
    ],
)
def test_bad_guidance_settings_fail_when_the_config_is_read(model, overrides, match, guided_config):
    with pytest.raises(ConfigError, match=match):
        make_config(model, [SYNTHETIC_YAML], {**guided_config, **overrides})


@pytest.mark.parametrize("model", ["NeuMF", "Pop"])
def test_guidance_on_a_model_without_user_vectors_is_a_clear_error(model, guided_config):
    with pytest.raises(ConfigError, match=f"config key 'guidance': {model} has no user vectors"):
        build_on_synthetic(model, {**guided_config, "guidance": "goum"})


def test_global_scope_needs_goum_and_a_plan_that_fits(guided_config):
    with pytest.raises(ConfigError, match="global matching solves GOUM"):
        build_on_synthetic("SIEOUG-G", {**guided_config, "ot_scope": "global"})
    with pytest.raises(ConfigError, match=r"dense plan of .* above ot_dense_limit .* set ot_global_plan: sparse"):
        build_on_synthetic("SIEOUG", {**guided_config, "ot_scope": "global", "ot_dense_limit": 1000})
    build_on_synthetic(
        "SIEOUG", {**guided_config, "ot_scope": "global", "ot_dense_limit": 1000, "ot_global_plan": "sparse"}
    )  # the sparse plan is fine


def test_a_pair_without_overlapped_users_warns_and_the_record_says_so(tmp_path, fast_config):
    from sieoug_recbole.synthetic import generate_pair

    generate_pair(str(tmp_path / "data"), name="synthetic", overlap_ratio=0.0, seed=0)
    config = {
        **fast_config,
        "data_path": str(tmp_path / "data") + "/",
        "graph_cache_dir": str(tmp_path / "g"),
        "n_clusters": 8,
        "train_epochs": ["BOTH:1"],
    }
    with pytest.warns(RuntimeWarning, match="without overlapped users: nothing anchors the matching"):
        result = sieoug_recbole.run("LightGCN+GOUM", [SYNTHETIC_YAML], config, verbose=False)
    assert result["guidance"]["anchored"] is False and result["guidance"]["overlapped_users"] == 0
    with warnings.catch_warnings():  # SIEOUG-G (unguided FGW) needs no anchor: no warning
        warnings.simplefilter("error", RuntimeWarning)
        build_on_synthetic("SIEOUG-G", config)


@pytest.mark.parametrize("plan", ["dense", "sparse"])
def test_global_scope_trains_with_a_refreshed_population_plan(plan, guided_config):
    config = {
        **guided_config,
        "ot_scope": "global",
        "ot_global_plan": plan,
        "ot_refresh": 1,
        "train_epochs": ["BOTH:2"],
    }
    result = sieoug_recbole.run("SIEOUG", [SYNTHETIC_YAML], config, verbose=False)
    for stats in result["epoch_stats"]:  # one refresh an epoch, a converged plan, guided batches
        assert stats["plan_iterations"] >= 0 and stats["plan_marginal_error"] < 1e-2
        assert stats["loss_guide"] > 0 and stats["plan_kept_mass"] > 0.5
    assert result["guidance"]["ot_scope"] == "global"


def test_global_scope_loss_uses_population_rows(guided_config):
    model, batch, _, _ = build_on_synthetic("SIEOUG", {**guided_config, "ot_scope": "global"})
    model.train()
    terms = model.calculate_loss(batch)
    assert len(terms) == 3 and float(terms[2]) > 0
    plan = model.guidance.population_plan
    n_src = model.layout.ranges.domain_size("user", "source") - 1
    n_tgt = model.layout.ranges.domain_size("user", "target") - 1
    assert plan["plan"].shape == (n_src, n_tgt) and plan["plan"].info["marginal_error"] < 1e-3
    kept = plan["plan"].by_source.to_dense().sum(1)  # each row keeps its ot_keep largest entries
    assert float(kept.max()) <= 1 + 1e-3 and abs(float(kept.mean()) - plan["plan"].info["kept_mass"]) < 1e-4
    terms[2].backward()  # gradients reach users outside the batch through the barycentres
    grad = model.user_embedding["target"].weight.grad
    in_batch = set(model.user_rows("target", batch[model.TARGET_USER_ID]).tolist())
    outside = [r for r in range(1, n_tgt + 1) if r not in in_batch]
    assert grad[outside].abs().sum() > 0


def test_a_guidance_schedule_starts_late_and_aligns_the_anchors_first(guided_config):
    config = {**guided_config, "guide_start_epoch": 2, "guide_anchor_epochs": 1}
    model, batch, _, _ = build_on_synthetic("SIEOUG", config)
    for epoch, expected in ((0, None), (1, None), (2, "overlap_only"), (3, "goum"), (9, "goum")):
        model.start_epoch(epoch)
        assert model.guidance.kind_now() == expected
        terms = model.calculate_loss(batch)
        assert len(terms) == 3  # the same terms every epoch (a zero one before the start)
        stats = model.collect_epoch_statistics()
        if expected is None:
            assert float(terms[2]) == 0.0 and "loss_guide" not in stats
        else:
            assert float(terms[2]) > 0 and ("goum_iterations" in stats) == (expected == "goum")


@pytest.mark.parametrize("kind", ["orthogonal", "linear"])
def test_the_user_map_recovers_a_planted_map(kind):
    from sieoug_recbole.guidance import fit_user_map

    g = torch.Generator().manual_seed(0)
    source = torch.randn(200, 8, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    planted = rotation if kind == "orthogonal" else rotation * torch.linspace(0.5, 2.0, 8)
    mapped = fit_user_map(source, source @ planted, kind)
    torch.testing.assert_close(mapped, planted, atol=1e-3, rtol=1e-3)
    if kind == "orthogonal":
        torch.testing.assert_close(mapped @ mapped.T, torch.eye(8), atol=1e-5, rtol=0)


def test_with_a_map_the_plan_matches_rotated_user_spaces(guided_config):
    """Target user vectors are the source's rotated: without a map GOUM matches badly, with the
    orthogonal map fitted on the anchors every person in the batch finds itself."""
    model, batch, _, _ = build_on_synthetic(
        "SIEOUG",
        {
            **guided_config,
            "ot_map": "orthogonal",
            "ot_eps": 0.02,
            "n_layers": 0,
            "use_item_graph": False,
            "use_hypergraph": False,
        },
    )
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        source = model.user_embedding["source"].weight
        n = min(len(source), model.n_users["target"])
        model.user_embedding["target"].weight[:n] = source[:n] @ rotation  # (rows 0..n-1 in both tables)
    g = model.guidance
    reps = {d: model.training_representations(d) for d in ("source", "target")}
    src, tgt = g.batch_users(model, batch)
    shared = [(i, int((tgt == r).nonzero()[0])) for i, r in enumerate(src.tolist()) if r in tgt.tolist()]
    user_src, user_tgt = reps["source"].users(src).detach(), reps["target"].users(tgt).detach()
    guide = torch.zeros(len(src), len(tgt), dtype=torch.bool)  # no help from the mask
    plain = g.batch_plan(user_src, user_tgt, guide)
    mapped = g.batch_plan(user_src @ g.user_map(model, reps), user_tgt, guide)
    found = lambda plan: sum(int(plan[i].argmax()) == j for i, j in shared) / len(shared)  # noqa: E731
    assert found(mapped) > 0.95 and found(plain) < 0.5
