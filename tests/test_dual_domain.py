"""Dual-domain evaluation: the source hold-out never trains, and is scored like the target."""

import numpy as np
import pytest
from conftest import SYNTHETIC_YAML

import sieoug_recbole
from sieoug_recbole.dual_domain import holdout_ratios, split_by_user, split_counts
from sieoug_recbole.quick_start import build_run, make_config


@pytest.mark.parametrize(
    "total, expected", [(10, [8, 1, 1]), (3, [1, 1, 1]), (2, [1, 0, 1]), (1, [1, 0, 0]), (25, [21, 2, 2])]
)
def test_split_counts_follow_recbole_rounding(total, expected):
    assert split_counts(total, [0.8, 0.1, 0.1]) == expected


def test_split_by_user_partitions_each_users_rows():
    users = np.repeat(np.arange(5), [10, 3, 1, 7, 20])
    parts = split_by_user(users, [0.8, 0.1, 0.1], np.random.default_rng(0))
    rows = np.concatenate(parts)
    assert sorted(rows.tolist()) == list(range(len(users)))
    for u, n in zip(range(5), [10, 3, 1, 7, 20]):
        assert [int((users[p] == u).sum()) for p in parts] == split_counts(n, [0.8, 0.1, 0.1])


def test_holdout_ratios_are_scaled_as_recbole_scales_them():
    assert holdout_ratios({"RS": [8, 1, 1]}) == pytest.approx([0.8, 0.1, 0.1])
    assert holdout_ratios({"RS": [0.7, 0.15, 0.15]}) == pytest.approx([0.7, 0.15, 0.15])
    users = np.repeat(np.arange(3), [10, 25, 4])
    same = [
        split_by_user(users, r, np.random.default_rng(0)) for r in (holdout_ratios({"RS": [8, 1, 1]}), [0.8, 0.1, 0.1])
    ]
    assert all(np.array_equal(a, b) for a, b in zip(*same))


@pytest.mark.parametrize(
    "split",
    [
        {"RS": [0.8, 0.2]},
        {"RS": [0.8, -0.1, 0.3]},
        {"RS": [0.8, 0.2, 0]},
        {"RS": ["a", 1, 1]},
        {"LS": "valid_and_test"},
        None,
    ],
)
def test_holdout_ratios_reject_what_cannot_split(split):
    with pytest.raises(ValueError, match="eval_args.split"):
        holdout_ratios(split)


def test_source_holdout_is_removed_from_training(fast_config):
    fast_config["dual_domain_eval"] = True
    config = make_config("LightGCN", [SYNTHETIC_YAML], fast_config)
    dataset, train_data = build_run(config)[:2]
    holdout = dataset.source_holdout
    source = dataset.source_domain_dataset
    trained = set(
        zip(source.inter_feat[source.uid_field].numpy().tolist(), source.inter_feat[source.iid_field].numpy().tolist())
    )
    for split in ("valid", "test"):
        held = set(zip(*[a.tolist() for a in holdout[split]]))
        assert held and not held & trained
    graph = train_data.dataset.inter_matrix(form="coo", domain="source")
    assert graph.nnz == len(trained)  # the model's source graph holds the training part only


def test_dual_domain_run_scores_both_domains(fast_config):
    fast_config.update(dual_domain_eval=True, learning_rate=0.01, train_epochs=["BOTH:15"])
    learned = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], dict(fast_config), verbose=False)
    pop = sieoug_recbole.run("Pop", [SYNTHETIC_YAML], {**fast_config, "train_epochs": ["BOTH:1"]}, verbose=False)
    by_domain = learned["metrics_by_domain"]
    assert by_domain["target"]["test"] == learned["test_result"]
    for split in ("valid", "test"):
        source = by_domain["source"][split]
        assert set(source) == {"hit@10", "ndcg@10"} and 0 < source["ndcg@10"] <= source["hit@10"] <= 1
    # observed: source test hit@10 ~0.45 (LightGCN) vs ~0.11 (Pop)
    assert by_domain["source"]["test"]["hit@10"] > pop["metrics_by_domain"]["source"]["test"]["hit@10"] + 0.15


def test_without_the_flag_no_source_metrics(fast_config):
    result = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], fast_config, verbose=False)
    assert result["metrics_by_domain"] is None


def test_source_scores_do_not_depend_on_the_user_batch(fast_config):
    from conftest import build_on_synthetic

    from sieoug_recbole.dual_domain import evaluate_source

    built = build_on_synthetic("LightGCN", dict(fast_config, dual_domain_eval=True))
    whole = evaluate_source(built.model, built.dataset, "test", [5, 10], ["hit", "ndcg"])
    assert evaluate_source(built.model, built.dataset, "test", [5, 10], ["hit", "ndcg"], batch_size=7) == whole
    assert 0 < whole["ndcg@10"] <= whole["hit@10"] and whole["hit@5"] <= whole["hit@10"]
