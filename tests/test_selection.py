"""Model selection (sieoug_recbole/trainer.py): per domain or on the target, early stopping."""

import pytest
import torch
from conftest import SYNTHETIC_YAML

import sieoug_recbole
from sieoug_recbole.checkpoint import load_checkpoint
from sieoug_recbole.trainer import DomainSelection


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))


def test_domain_selection_keeps_the_best_weights_and_counts_stale_evaluations():
    model = _Model()
    optimizer = torch.optim.Adam(model.parameters())
    selection = DomainSelection(bigger=True)
    for epoch, (score, value) in enumerate([(0.1, 1.0), (0.3, 2.0), (0.2, 3.0), (0.3, 4.0), (0.25, 5.0)]):
        with torch.no_grad():
            model.w.fill_(value)
        selection.update(epoch, score, {"ndcg@10": score}, model, optimizer)
    # a tie counts as an improvement (the later epoch is kept, as in RecBole)
    assert (selection.epoch, selection.score, selection.stale) == (3, 0.3, 1)
    assert torch.equal(selection.state["w"], torch.full((2,), 4.0))
    smaller = DomainSelection(bigger=False)
    for epoch, score in enumerate([0.5, 0.4, 0.6]):
        smaller.update(epoch, score, {}, model, optimizer)
    assert (smaller.epoch, smaller.stale) == (1, 1)


def _run(fast_config, tmp_path, **overrides):
    config = {
        **fast_config,
        "dual_domain_eval": True,
        "learning_rate": 0.01,
        "checkpoint_dir": str(tmp_path / "saved"),
        **overrides,
    }
    return sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], config, verbose=False)


def test_per_domain_selection_tests_each_domain_at_its_own_best_epoch(fast_config, tmp_path):
    result = _run(fast_config, tmp_path, train_epochs=["BOTH:12"], stopping_step=100)
    history = result["valid_history"]
    assert len(history) == 12 and all("source" in entry for entry in history)
    assert [entry["epoch"] for entry in history] == list(range(1, 13))
    best = {
        "target": max(range(12), key=lambda i: (history[i]["ndcg@10"], i)),
        "source": max(range(12), key=lambda i: (history[i]["source"]["ndcg@10"], i)),
    }
    assert result["best_epoch_by_domain"] == {d: e + 1 for d, e in best.items()}
    assert result["selection"] == ["source", "target"]
    metrics = result["metrics_by_domain"]
    assert metrics["target"]["valid"]["ndcg@10"] == pytest.approx(history[best["target"]]["ndcg@10"])
    assert metrics["source"]["valid"]["ndcg@10"] == pytest.approx(history[best["source"]]["source"]["ndcg@10"])
    # the checkpoint holds the target's best weights and the source's under domain_state_dicts
    checkpoint = load_checkpoint(result["saved_model_file"])
    assert checkpoint["epoch"] == best["target"] and checkpoint["domain_epochs"] == best
    source_state = checkpoint["domain_state_dicts"]["source"]
    config, model, dataset, _, _, _ = sieoug_recbole.load_data_and_model(result["saved_model_file"])
    model.load_state_dict(source_state)
    from sieoug_recbole.dual_domain import evaluate_source

    source_test = evaluate_source(model, dataset, "test", config["topk"], config["metrics"])
    assert source_test == metrics["source"]["test"]


def test_target_selection_scores_both_domains_at_the_targets_epoch(fast_config, tmp_path):
    result = _run(fast_config, tmp_path, train_epochs=["BOTH:8"], stopping_step=100, selection="target")
    assert result["selection"] == ["target"] and set(result["best_epoch_by_domain"]) == {"target"}
    assert all("source" not in entry for entry in result["valid_history"])
    checkpoint = load_checkpoint(result["saved_model_file"])
    assert "source" not in checkpoint["domain_state_dicts"]


def test_early_stopping_waits_for_both_domains_and_the_minimum(fast_config, tmp_path):
    result = _run(fast_config, tmp_path, train_epochs=["BOTH:40"], stopping_step=1, stopping_min_epochs=0)
    history = result["valid_history"]

    def stale_at(values):  # evaluations since the last improvement (ties improve), per evaluation
        best, stale, out = None, 0, []
        for v in values:
            stale = 0 if best is None or v >= best else stale + 1
            best = v if best is None or v >= best else best
            out.append(stale)
        return out

    target = stale_at([e["ndcg@10"] for e in history])
    source = stale_at([e["source"]["ndcg@10"] for e in history])
    stops = [i for i in range(len(history)) if target[i] > 1 and source[i] > 1]
    assert len(history) == (stops[0] + 1 if stops else 40)  # stopped at the first evaluation where both were stale

    short = _run(fast_config, tmp_path, train_epochs=["BOTH:40"], stopping_step=0, stopping_min_epochs=9)
    assert len(short["valid_history"]) >= 9


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("selection", "source", "config key 'selection' must be one of"),
        ("stopping_min_epochs", -1, "config key 'stopping_min_epochs'"),
    ],
)
def test_bad_selection_settings_fail_when_the_config_is_read(key, value, match, fast_config):
    from sieoug_recbole.config_checks import ConfigError
    from sieoug_recbole.quick_start import make_config

    with pytest.raises(ConfigError, match=match):
        make_config("LightGCN", [SYNTHETIC_YAML], {**fast_config, key: value})


def test_learning_rate_schedule_and_a_slower_source(fast_config):
    from conftest import build_on_synthetic
    from recbole_cdr.utils import get_trainer

    built = build_on_synthetic(
        "LightGCN", {**fast_config, "learning_rate": 0.01, "learning_rate_decay": 0.5, "lr_scale_source": 0.1}
    )
    trainer = get_trainer(built.config["MODEL_TYPE"], built.config["model"])(built.config, built.model)
    groups = trainer.optimizer.param_groups
    names = {id(p): n for n, p in built.model.named_parameters()}
    source_group = next(g for g in groups if g["lr"] == pytest.approx(0.001))
    assert {names[id(p)] for p in source_group["params"]} == {
        "user_embedding.source.weight",
        "item_embedding.source.weight",
    }
    from sieoug_recbole.quick_start import build_run

    _, train_data, _, _, _, _ = build_run(built.config)
    train_data.set_mode(train_data.state)
    trainer._train_epoch(train_data, 0)
    assert sorted(g["lr"] for g in groups) == pytest.approx([0.0005, 0.005])  # halved after the epoch
