"""Each repair of recbole 1.0.1 / recbole-cdr 0.1.0: the defect, then the repair."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SYNTHETIC_YAML

import sieoug_recbole
from sieoug_recbole import compat
from sieoug_recbole.checkpoint import load_checkpoint
from sieoug_recbole.quick_start import build_run, make_config


def test_apply_is_idempotent():
    before = dict(compat.ORIGINALS)
    compat.apply()
    compat.apply()
    assert compat.ORIGINALS == before


def test_numpy_float_alias_needed_and_set():
    code = (
        "import numpy as np\n"
        "from recbole.evaluator.metrics import NDCG\n"
        "try:\n    np.zeros_like(np.ones(2), dtype=np.float)\n    print('ok')\n"
        "except AttributeError:\n    print('missing')\n"
    )
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert plain.stdout.strip() == "missing"  # the defect: numpy 2 has no np.float
    repaired = subprocess.run([sys.executable, "-c", "import sieoug_recbole\n" + code], capture_output=True, text=True)
    assert repaired.stdout.strip() == "ok"
    assert np.float is float


def test_checkpoint_needs_repaired_loader(fast_config):
    result = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], fast_config, verbose=False)
    path = result["saved_model_file"]
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 6):
        with pytest.raises(Exception):
            torch.load(path)  # the defect: weights_only=True refuses the pickled Config
    checkpoint = load_checkpoint(path)
    assert checkpoint["config"]["model"] == "LightGCN"
    assert "state_dict" in checkpoint


def _source_sampler(fast_config, repaired):
    from recbole_cdr.sampler.crossdomain_sampler import CrossDomainSourceSampler

    config = make_config("LightGCN", [SYNTHETIC_YAML], fast_config)
    dataset = build_run(config)[0]
    if repaired:
        return dataset, CrossDomainSourceSampler("train", dataset, [], "uniform")
    sampler = CrossDomainSourceSampler.__new__(CrossDomainSourceSampler)
    compat.ORIGINALS["CrossDomainSourceSampler.__init__"](sampler, "train", dataset, [], "uniform")
    return dataset, sampler


def test_source_sampler_off_by_one(fast_config):
    dataset, original = _source_sampler(fast_config, repaired=False)
    first_target_only = dataset.num_overlap_item
    assert dataset.num_target_only_item > 0
    assert first_target_only in original.item_id_list  # the defect: a target item is drawable

    dataset, sampler = _source_sampler(fast_config, repaired=True)
    source_items = set(
        dataset.source_domain_dataset.inter_feat[dataset.source_domain_dataset.iid_field].numpy().tolist()
    )
    target_only = set(range(dataset.num_overlap_item, dataset.num_overlap_item + dataset.num_target_only_item))
    candidates = set(sampler.item_id_list.tolist())
    assert candidates == set(range(1, dataset.num_overlap_item)) | set(
        range(dataset.num_overlap_item + dataset.num_target_only_item, dataset.num_total_item)
    )
    assert source_items <= candidates and not candidates & target_only
    np.random.seed(0)
    draws = set(sampler.sampling(20000).tolist())
    assert not draws & target_only and 0 not in draws
    assert dataset.num_total_item - 1 in draws  # the last source item is drawable again


@pytest.mark.parametrize("dual", [False, True])
def test_source_graph_holds_source_validation(dual, fast_config):
    # with a SOURCE phase the framework validates that phase on a part of the source data
    fast_config.update(train_epochs=["SOURCE:1", "BOTH:1"], dual_domain_eval=dual)
    config = make_config("LightGCN", [SYNTHETIC_YAML], fast_config)
    _, train_data, valid_data, _, model, _ = build_run(config)
    source_valid = valid_data[0].dataset
    held = set(
        zip(
            source_valid.inter_feat[source_valid.uid_field].numpy().tolist(),
            source_valid.inter_feat[source_valid.iid_field].numpy().tolist(),
        )
    )
    trained = train_data.source_dataset  # what the SOURCE and BOTH phases train on
    trained = set(
        zip(
            trained.inter_feat[trained.uid_field].numpy().tolist(),
            trained.inter_feat[trained.iid_field].numpy().tolist(),
        )
    )
    original = compat.ORIGINALS["CrossDomainDataset.inter_matrix"](train_data.dataset, form="coo", domain="source")
    assert held <= set(zip(original.row.tolist(), original.col.tolist()))  # the defect
    graph = train_data.dataset.inter_matrix(form="coo", domain="source")
    edges = set(zip(graph.row.tolist(), graph.col.tolist()))
    assert held and edges == trained and not edges & held
    assert model.adjacency["source"].nnz == 2 * len(trained)  # the model's graph: both directions


def test_id2token_maps_back_through_token_ids(fast_config):
    config = make_config("LightGCN", [SYNTHETIC_YAML], fast_config)
    dataset = build_run(config)[0]
    single = dataset.target_domain_dataset
    field = single.iid_field
    ids = np.arange(1, 6)
    ours = sieoug_recbole.id2token(single, field, ids)
    assert [single.field2token_id[field][tok] for tok in ours] == ids.tolist()
    framework = [single.id2token(field, int(i)) for i in ids]
    assert framework != ours.tolist()  # the defect: shifted / unordered tokens
    with pytest.raises(ValueError, match="out of range"):
        sieoug_recbole.id2token(single, field, [10**6])


def test_config_defaults_and_top_level_data_path(fast_config, synthetic_dir):
    from recbole_cdr.config import CDRConfig

    config = CDRConfig(model="LightGCN", config_file_list=[SYNTHETIC_YAML], config_dict=fast_config)
    assert (config["USER_ID_FIELD"], config["ITEM_ID_FIELD"], config["NEG_PREFIX"]) == (
        "target_user_id",
        "target_item_id",
        "neg_",
    )
    assert config["source_domain"]["data_path"].startswith(synthetic_dir)
    assert config["target_domain"]["data_path"].startswith(synthetic_dir)
    assert config["n_layers"] == 3  # our model's own yaml was read

    # the defect: without the repair, sample.yaml's 'dataset/' wins over the top-level path
    original = compat.ORIGINALS["CDRConfig._load_internal_config_dict"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CDRConfig, "_load_internal_config_dict", original)
        stock = CDRConfig(model="LightGCN", config_file_list=[SYNTHETIC_YAML], config_dict=fast_config)
    assert stock["source_domain"]["data_path"].startswith("dataset/")
    assert stock["USER_ID_FIELD"] is None and stock["n_layers"] is None


def test_sampled_evaluation_needs_top_level_fields(fast_config):
    fast_config["eval_args"] = {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": "RO", "mode": "uni100"}
    fast_config["train_epochs"] = ["BOTH:1"]
    result = sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], fast_config, verbose=False)
    assert 0.0 < result["test_result"]["hit@10"] <= 1.0

    from recbole_cdr.config import CDRConfig

    original = compat.ORIGINALS["CDRConfig._load_internal_config_dict"]
    fast_config.update(n_layers=2, reg_weight=1e-4)  # the stock config would not read our yaml
    # nor honour the top-level data_path (sample.yaml's per-domain 'dataset/' wins): set both
    fast_config.update(source_data_path=fast_config["data_path"], target_data_path=fast_config["data_path"])
    with pytest.MonkeyPatch.context() as mp:  # the defect: without the keys it cannot run
        mp.setattr(CDRConfig, "_load_internal_config_dict", original)
        with pytest.raises((KeyError, TypeError)):  # None field names deep inside recbole
            sieoug_recbole.run("LightGCN", [SYNTHETIC_YAML], fast_config, verbose=False)


def test_chained_fillna_still_fills_on_pandas_2_and_is_quiet():
    import warnings

    import pandas as pd

    assert int(pd.__version__.split(".")[0]) < 3  # pandas 3 turns recbole's fillna into a no-op
    frame = pd.DataFrame({"a": [None, 1.0]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compat.quiet_pandas_chained_fillna_warning()  # the filter goes in front of "always"
        frame["a"].fillna(value=0, inplace=True)  # what recbole's Dataset._fill_nan does
    assert frame["a"].tolist() == [0.0, 1.0]
    assert not [w for w in caught if "copy of a DataFrame" in str(w.message)]
