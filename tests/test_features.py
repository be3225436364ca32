"""The on-disk item-feature format and its alignment to the framework's item ids."""

import numpy as np
import pytest
from conftest import SYNTHETIC_YAML

from sieoug_recbole.features import (
    FeatureFileError,
    align_item_features,
    feature_path,
    read_item_features,
    write_item_features,
)


def _write_raw(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_round_trip_and_alignment_by_token(tmp_path):
    path = str(tmp_path / "d.text.feat.npz")
    write_item_features(path, ["b", "a", "c"], np.array([[2.0, 2], [1, 1], [3, 3]]))
    tokens, matrix = read_item_features(path)
    assert tokens.tolist() == ["b", "a", "c"] and matrix.dtype == np.float32
    aligned = align_item_features(path, ["a", "c"])  # extra rows (b) are ignored
    np.testing.assert_array_equal(aligned, [[1, 1], [3, 3]])


def test_missing_item_is_an_error_or_zero_with_warning(tmp_path):
    path = str(tmp_path / "d.text.feat.npz")
    write_item_features(path, ["a"], np.ones((1, 2)))
    with pytest.raises(FeatureFileError, match=r"1 item\(s\) of the data have no feature row, e.g. 'z'"):
        align_item_features(path, ["a", "z"])
    with pytest.warns(UserWarning, match=r"1 item\(s\) have no feature row"):
        aligned = align_item_features(path, ["a", "z"], missing="zero")
    np.testing.assert_array_equal(aligned, [[1, 1], [0, 0]])


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"item_id": np.array(["a", "b"]), "feature": np.array([[1.0], [np.nan]])}, "NaN or inf"),
        ({"item_id": np.array(["a", "a"]), "feature": np.ones((2, 2))}, "duplicate item id"),
        ({"item_id": np.array(["a", "b"]), "feature": np.ones(2)}, "must be 2-D"),
        ({"item_id": np.array(["a", "b"]), "feature": np.ones((3, 2))}, "2 item ids but 3 feature rows"),
        ({"item_id": np.array(["a"]), "feature": np.array([[1]])}, "must be float"),
        ({"tokens": np.array(["a"]), "feature": np.ones((1, 2))}, "missing array"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path, arrays, message):
    path = _write_raw(tmp_path / "bad.npz", **arrays)
    with pytest.raises(FeatureFileError, match=message) as info:
        read_item_features(path)
    assert "bad.npz" in str(info.value)


def test_ragged_rows_and_missing_file(tmp_path):
    with pytest.raises(FeatureFileError, match="not found"):
        read_item_features(str(tmp_path / "nope.npz"))
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = [1.0, 2.0], [1.0]
    path = _write_raw(tmp_path / "ragged.npz", item_id=np.array(["a", "b"]), feature=ragged)
    with pytest.raises(FeatureFileError, match="ragged.npz"):
        read_item_features(path)


def test_domain_features_follow_internal_item_ids(fast_config, synthetic_dir):
    from sieoug_recbole.domain_data import domain_features
    from sieoug_recbole.quick_start import build_run, make_config

    config = make_config("LightGCN", [SYNTHETIC_YAML], fast_config)
    dataset = build_run(config)[0]
    for domain in ("source", "target"):
        ids, features = domain_features(config, dataset, domain)
        single = getattr(dataset, f"{domain}_domain_dataset")
        token_of = {v: k for k, v in single.field2token_id[single.iid_field].items()}
        name = f"synthetic_{domain}"
        tokens, raw = read_item_features(feature_path(f"{synthetic_dir}/{name}", name, "visual"))
        row_of = {t: i for i, t in enumerate(tokens)}
        expected = raw[[row_of[token_of[i]] for i in ids]]
        np.testing.assert_array_equal(features["visual"], expected)
        assert set(features) == {"visual", "text"}


def test_unconfigured_modalities_are_a_clear_error(fast_config):
    from sieoug_recbole.domain_data import domain_features
    from sieoug_recbole.quick_start import build_run, make_config

    fast_config["target_domain"] = {"modalities": []}
    config = make_config("LightGCN", [SYNTHETIC_YAML], fast_config)
    with pytest.raises(FeatureFileError, match="no modalities configured"):
        domain_features(config, build_run(config)[0], "target")
