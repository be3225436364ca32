"""Shared fixtures: a synthetic pair on disk and a fast config for it."""

import os
from typing import NamedTuple

import pytest
import torch

import sieoug_recbole  # noqa: F401  (repairs the framework, registers models)
from sieoug_recbole.quick_start import build_run, make_config
from sieoug_recbole.synthetic import generate_pair

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC_YAML = os.path.join(REPO, "properties", "synthetic.yaml")

torch.set_num_threads(1)  # small ops are much faster with one thread on 2-core machines


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    generate_pair(str(out), name="synthetic", seed=0)
    return str(out)


@pytest.fixture
def fast_config(synthetic_dir, tmp_path):
    """Config overrides for quick runs on the synthetic pair (a fresh checkpoint dir per test)."""
    return {
        "data_path": synthetic_dir + os.sep,
        "checkpoint_dir": str(tmp_path / "saved"),
        "train_epochs": ["BOTH:2"],
        "show_progress": False,
        "state": "ERROR",
        "embedding_size": 16,
        "stopping_min_epochs": 0,  # short runs on the small pair: early stopping as soon as it triggers
    }


class Built(NamedTuple):
    model: object
    batch: object  # the first training batch of the BOTH phase (source and target fields)
    dataset: object
    config: object


def build_on_synthetic(name, overrides):
    """Model ``name`` built on the synthetic pair with config ``overrides``, with the first
    training batch taken once (so that a test's steps and checks all see the same batch)."""
    config = make_config(name, [SYNTHETIC_YAML], overrides)
    dataset, train_data, _, _, model, _ = build_run(config)
    train_data.set_mode(train_data.state)  # BOTH
    return Built(model, next(iter(train_data)), dataset, config)
