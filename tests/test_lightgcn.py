"""LightGCN learns: it beats the popularity ranking on the planted synthetic data."""

from conftest import SYNTHETIC_YAML

import sieoug_recbole


def test_lightgcn_beats_popularity(fast_config):
    fast_config.update(learning_rate=0.01, train_epochs=["BOTH:25"], embedding_size=32)
    lightgcn = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], dict(fast_config), verbose=False)
    pop = sieoug_recbole.run("Pop", [SYNTHETIC_YAML], {**fast_config, "train_epochs": ["BOTH:1"]}, verbose=False)
    # observed: ~0.38 vs ~0.15 hit@10
    assert lightgcn["test_result"]["hit@10"] > pop["test_result"]["hit@10"] + 0.1
    assert lightgcn["test_result"]["ndcg@10"] > pop["test_result"]["ndcg@10"] + 0.05
