"""Registration: the framework's own lookups find our models; every model trains and evaluates."""

import os

import pytest
from conftest import SYNTHETIC_YAML, build_on_synthetic

import sieoug_recbole
from sieoug_recbole.registry import model_names


def test_stock_lookups_find_our_models_and_trainers():
    from recbole_cdr.utils import get_model, get_trainer
    from recbole_cdr.utils.enum_type import ModelType

    from sieoug_recbole.trainer import PluginTrainer

    for name in model_names():
        cls = get_model(name)
        assert cls is sieoug_recbole.get_model_class(name)
        assert issubclass(get_trainer(ModelType.CROSSDOMAIN, name), PluginTrainer)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="registered models"):
        sieoug_recbole.get_model_class("NoSuchModel")


def test_stock_run_recbole_cdr_equals_ours(fast_config):
    from recbole_cdr.quick_start import run_recbole_cdr

    ours = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], dict(fast_config), verbose=False)
    stock = run_recbole_cdr(model="LightGCN", config_file_list=[SYNTHETIC_YAML], config_dict=dict(fast_config))
    assert {k: float(v) for k, v in stock["test_result"].items()} == ours["test_result"]


def test_run_accepts_a_model_class(fast_config):
    from sieoug_recbole.models.lightgcn import LightGCN

    by_class = sieoug_recbole.run(LightGCN, [SYNTHETIC_YAML], dict(fast_config), verbose=False)
    by_name = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], dict(fast_config), verbose=False)
    assert by_class["test_result"] == by_name["test_result"]


@pytest.mark.parametrize("name", model_names())
def test_every_registered_model_trains_and_evaluates(name, fast_config):
    fast_config["train_epochs"] = ["BOTH:1"]
    result = sieoug_recbole.run(name, [SYNTHETIC_YAML], fast_config, verbose=False)
    for metrics in (result["best_valid_result"], result["test_result"]):
        assert set(metrics) == {"hit@10", "ndcg@10"}
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert result["test_result"]["hit@10"] > 0.0


@pytest.mark.parametrize(
    "model, key, value",
    [
        ("LightGCN", "n_layers", -1),
        ("LightGCN", "n_layers", 2.5),
        ("NeuMF", "reg_weight", -0.1),
        ("FREEDOM", "embedding_size", 0),
        ("BiTGCF", "reg_weight", "high"),
        ("SIEOUG", "temperature", 0),
        ("SIEOUG", "guide_lambda", -1.0),
        ("LATTICE", "init_graph_weight", 1.5),
        ("BiTGCF", "transfer_lambda", -0.5),
        ("CMF", "alpha", 2),
    ],
)
def test_bad_model_key_is_a_clear_error(model, key, value, fast_config):
    # each would otherwise train silently wrong (a negative lambda maximises the guided loss,
    # n_layers = -2 negates the embeddings, ...)
    with pytest.raises(ValueError, match=f"config key '{key}' must be"):
        build_on_synthetic(model, dict(fast_config, **{key: value}))


def test_a_registered_model_yaml_declares_its_keys(fast_config, tmp_path, monkeypatch):
    """A model a user registers with its own yaml: its keys pass the override warning and a
    harness sweep over one of them applies to that model only."""
    import warnings

    from sieoug_recbole import registry
    from sieoug_recbole.benchmark.runner import model_takes_key
    from sieoug_recbole.models.lightgcn import LightGCN
    from sieoug_recbole.quick_start import make_config

    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))  # unregistered after the test
    yaml_file = tmp_path / "TinyGCN.yaml"
    yaml_file.write_text(
        "embedding_size: 8   # width\nn_layers: 1   # layers\nreg_weight: 0.0001\n"
        "tiny_knob: 3   # a key of this model only\n"
    )
    registry.register_model(type("TinyGCN", (LightGCN,), {}), yaml_file=str(yaml_file))
    assert registry.model_yaml_keys("TinyGCN") == {"embedding_size", "n_layers", "reg_weight", "tiny_knob"}
    assert registry.model_yaml_keys("NoSuchModel") == frozenset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = make_config("TinyGCN", [SYNTHETIC_YAML], dict(fast_config, tiny_knob=5))
    assert config["tiny_knob"] == 5 and config["n_layers"] == 1
    assert model_takes_key("TinyGCN", "tiny_knob") and not model_takes_key("LightGCN", "tiny_knob")
    assert model_takes_key("LightGCN", "learning_rate")  # a key of no model's yaml: every model
    # an edited yaml is read again; a relative path keeps naming the registered file
    yaml_file.write_text(yaml_file.read_text() + "other_knob: 1   # added later\n")
    os.utime(yaml_file, ns=(0, os.stat(yaml_file).st_mtime_ns + 10**9))
    assert "other_knob" in registry.model_yaml_keys("TinyGCN")
    monkeypatch.chdir(tmp_path)
    registry.register_model(type("TinyGCN", (LightGCN,), {}), yaml_file="TinyGCN.yaml")
    monkeypatch.chdir(os.path.dirname(__file__))
    assert registry.model_yaml("TinyGCN") == str(yaml_file) and "tiny_knob" in registry.model_yaml_keys("TinyGCN")


def test_the_documented_model_example_trains(fast_config, tmp_path, monkeypatch):
    """The fifteen-line model of docs/architecture.md, as written, registers a model that
    trains and is scored in both domains."""
    import re
    import sys
    import types

    from sieoug_recbole import registry

    page = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "architecture.md")
    with open(page, encoding="utf-8") as f:
        text = f.read()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "class MF(" in block)
    setup, run_line = snippet.split("result = ")
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "MF.yaml").write_text("embedding_size: 64\nreg_weight: 0.0001\n")
    module = types.ModuleType("readme_example")  # checkpoints pickle the class by module and name
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(setup, "docs/architecture.md", "exec"), module.__dict__)
    assert "properties/synthetic.yaml" in run_line and "dual_domain_eval" in run_line
    fast_config.update(dual_domain_eval=True, train_epochs=["BOTH:3"])
    result = sieoug_recbole.run("MF", [SYNTHETIC_YAML], fast_config, verbose=False)
    assert set(result["metrics_by_domain"]) == {"source", "target"}
    assert result["test_result"]["hit@10"] > 0


def test_the_model_writing_api_is_public():
    """What a model file needs comes from the package itself (the objects of models.base)."""
    from sieoug_recbole import (
        BPRDomainLoss,
        CrossDomainModel,
        domain_id_embeddings,
        forced_variant,
        keep_domain_rows,
        register_model,
        registry,
    )
    from sieoug_recbole.models import base

    assert (CrossDomainModel, BPRDomainLoss, domain_id_embeddings, keep_domain_rows, forced_variant) == (
        base.CrossDomainModel,
        base.BPRDomainLoss,
        base.domain_id_embeddings,
        base.keep_domain_rows,
        base.forced_variant,
    )
    assert register_model is registry.register_model
    assert {
        "CrossDomainModel",
        "BPRDomainLoss",
        "domain_id_embeddings",
        "keep_domain_rows",
        "forced_variant",
        "register_model",
    } <= set(sieoug_recbole.__all__)
    variant = forced_variant(CrossDomainModel, "Forced", "doc", __name__, guide_lambda=0)
    assert issubclass(variant, CrossDomainModel) and variant.forced_config == {"guide_lambda": 0}
