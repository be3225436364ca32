"""What every model shares (models/base.py): the evaluation cache, phases, config checks."""

import pytest
import torch
from conftest import build_on_synthetic
from recbole.data.interaction import Interaction


def test_loading_weights_clears_the_evaluation_cache(fast_config):
    model, _, _, _ = build_on_synthetic("LightGCN", fast_config)
    other = {k: v + 0.5 * torch.randn_like(v) for k, v in model.state_dict().items()}
    model.eval()
    users = Interaction({model.TARGET_USER_ID: torch.tensor([1, 2, 3])})
    before = model.full_sort_predict(users)  # fills the cache
    model.load_state_dict(other)  # still in eval mode
    after = model.full_sort_predict(users)
    assert not torch.equal(before, after)
    model._eval_cache.clear()
    torch.testing.assert_close(after, model.full_sort_predict(users))  # what fresh vectors give


def test_an_overlap_phase_in_train_epochs_is_a_clear_error(fast_config):
    fast_config["train_epochs"] = ["BOTH:1", "OVERLAP:3"]
    with pytest.raises(ValueError, match=r"config key 'train_epochs' \('OVERLAP:3'\): the OVERLAP phase trains"):
        build_on_synthetic("LightGCN", fast_config)


def test_dynamic_negative_sampling_is_a_clear_error(fast_config):
    fast_config["neg_sampling"] = {"uniform": 1, "dynamic": 3}
    with pytest.raises(ValueError, match="config key 'neg_sampling': dynamic negative sampling"):
        build_on_synthetic("LightGCN", fast_config)


def test_nothing_trains_in_the_overlap_phase(fast_config):
    model, batch, _, _ = build_on_synthetic("LightGCN", fast_config)
    model.set_phase("OVERLAP")  # the framework's trainer sets it after the last phase
    with pytest.raises(RuntimeError, match="nothing to train in the OVERLAP phase"):
        model.calculate_loss(batch)
    with pytest.raises(ValueError, match="unknown training phase 'BOTHH'"):
        model.set_phase("BOTHH")
