"""dataset_prep.food_kitchen: the shipped real pair, named pairs, ensure_dataset, their yamls."""

import hashlib
import json
import os
import time

import pandas as pd
import pytest
import yaml
from test_dataset_prep import assert_training_block

from dataset_prep import food_kitchen as fk
from dataset_prep.cli import main
from dataset_prep.errors import PrepError
from sieoug_formats.features import read_item_features

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_shipped_files_are_small_and_match_the_manifest():
    with open(os.path.join(fk.SHIPPED_DIR, "MANIFEST.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    total = 0
    for name, meta in manifest["files"].items():
        path = os.path.join(fk.SHIPPED_DIR, name)
        with open(path, "rb") as f:
            data = f.read()
        assert hashlib.sha256(data).hexdigest() == meta["sha256"], name
        total += len(data)
    assert total <= 5 * 1024 * 1024
    assert sorted(manifest["files"]) == sorted(os.path.basename(p) for d in fk.DOMAINS for p in fk.shipped_paths(d))
    assert all(name.endswith(".tsv.xz") for name in manifest["files"])
    # the counts of the slice's README
    assert manifest["counts"]["food"] == {"interactions": 98316, "users": 14870, "items": 8661}
    assert manifest["counts"]["kitchen"] == {"interactions": 337811, "users": 47589, "items": 27637}


def test_shipped_tables_are_generic_tables():
    inter_path, items_path = fk.shipped_paths("food")
    inter = pd.read_csv(inter_path, sep="\t", dtype=str, nrows=5)
    assert list(inter.columns) == ["user", "item", "timestamp"]
    items = pd.read_csv(items_path, sep="\t", dtype=str, nrows=5, quoting=3)
    assert list(items.columns) == ["item", "title"]


def test_small_subset_pair_end_to_end(tmp_path):
    summary = fk.build(
        out_dir=str(tmp_path / "ds"),
        name="fk_small",
        overlap_ratio=0.5,
        kcore=2,
        subset_users=120,
        subset_single_users=30,
        seed=1,
        common_users_only=False,
        properties_path=str(tmp_path / "fk_small.yaml"),
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )
    src, tgt = summary["domains"]["source"], summary["domains"]["target"]
    assert (src["name"], tgt["name"]) == ("kitchen", "food")  # default direction
    assert summary["subset"]["common_users_sampled"] == 120
    assert summary["subset"]["source_only_users_sampled"] == 30
    for info in (src, tgt):
        assert info["input_rows"] == info["interactions"] + sum(info["dropped"].values())
        assert info["dropped"]["below_threshold"] == 0  # no ratings in the slice
        assert set(info["features"]) == {"text_word", "text_char"}
    o = summary["overlap"]
    assert o["overlapped_users_after"] == round(0.5 * o["common_users_before"])
    folder = tmp_path / "ds" / "fk_small_food"
    inter = pd.read_csv(folder / "fk_small_food.inter", sep="\t", dtype=str)
    assert list(inter.columns) == ["user_id:token", "item_id:token", "timestamp:float"]
    tokens, matrix = read_item_features(str(folder / "fk_small_food.text_char.feat.npz"))
    assert sorted(tokens) == sorted(inter["item_id:token"].unique()) and matrix.shape[1] == 64
    config = yaml.safe_load((tmp_path / "fk_small.yaml").read_text(encoding="utf-8"))
    assert config["target_domain"]["dataset"] == "fk_small_food"
    assert config["source_domain"]["modalities"] == ["text_word", "text_char"]


def test_ensure_dataset_is_idempotent_and_rebuilds_on_other_settings(tmp_path):
    out = str(tmp_path / "ds")
    small = dict(subset_users=60, subset_single_users=10, kcore=1, cache_dir=str(tmp_path / "cache"))
    path = fk.ensure_dataset("food_kitchen_demo", out_dir=out, **small)
    assert path == os.path.join(out, "food_kitchen_demo.summary.json")
    stamp = os.path.getmtime(path)
    started = time.perf_counter()
    assert fk.ensure_dataset("food_kitchen_demo", out_dir=out, **small) == path
    assert time.perf_counter() - started < 1.0
    assert os.path.getmtime(path) == stamp  # not rebuilt
    fk.ensure_dataset("food_kitchen_demo", out_dir=out, **dict(small, seed=5))
    with open(path, encoding="utf-8") as f:
        assert json.load(f)["recipe"]["seed"] == 5  # other settings: rebuilt
    os.remove(os.path.join(out, "food_kitchen_demo_food", "food_kitchen_demo_food.text_word.feat.npz"))
    assert not fk.is_built("food_kitchen_demo", out)
    fk.ensure_dataset("food_kitchen_demo", out_dir=out, **dict(small, seed=5))
    assert fk.is_built("food_kitchen_demo", out)


def test_pack_is_reproducible_xz(tmp_path):
    src = tmp_path / "slice"
    src.mkdir()
    (src / "interactions.tsv").write_text(
        "user\tdomain\tasin\tposition\nu1\tfood\tf1\t0\nu1\tkitchen\tk1\t1\nu2\tkitchen\tk1\t0\nu2\tkitchen\tk2\t1\n",
        encoding="utf-8",
    )
    (src / "food_items.tsv").write_text("asin\ttitle\nf1\tgreen tea\n", encoding="utf-8")
    (src / "kitchen_items.tsv").write_text('asin\ttitle\nk1\tpan\nk2\tpot "lid"\n', encoding="utf-8")
    first = fk.pack(str(src), str(tmp_path / "a"))
    second = fk.pack(str(src), str(tmp_path / "b"))
    assert first["files"] == second["files"]  # byte-identical (sha256)
    assert sorted(first["files"]) == [
        "food.inter.tsv.xz",
        "food.items.tsv.xz",
        "kitchen.inter.tsv.xz",
        "kitchen.items.tsv.xz",
    ]
    assert first["counts"]["kitchen"] == {"interactions": 3, "users": 2, "items": 2}
    inter_path, items_path = fk.shipped_paths("kitchen", str(tmp_path / "a"))
    from dataset_prep.tables import read_table

    assert read_table(inter_path)["item"].tolist() == ["k1", "k1", "k2"]
    assert read_table(items_path)["title"].tolist() == ["pan", 'pot "lid"']


def test_presets_and_names():
    ku = {"kcore": 3, "common_users_only": True}
    assert fk.preset("food_kitchen_ku10") == {"overlap_ratio": 0.1, **ku}
    assert fk.preset("food_kitchen_ku30") == {"overlap_ratio": 0.3, **ku}
    assert fk.preset("food_kitchen_demo") == {
        "overlap_ratio": 0.5,
        "kcore": 3,
        "subset_users": 3000,
        "subset_single_users": 750,
        "common_users_only": False,
    }
    # the demo subset at another K_u (the demo Table-1 grid's pairs)
    assert fk.preset("food_kitchen_demo_ku10") == dict(fk.preset("food_kitchen_demo"), overlap_ratio=0.1)
    # default names: kuNN with the default settings, a tag for each other setting
    assert fk.default_name(0.5) == "food_kitchen_ku50"
    assert fk.default_name(0.5, kcore=5, common_users_only=False) == "food_kitchen_5core_allusers_ku50"
    assert (
        fk.default_name(0.1, subset_users=100, target="kitchen", minilm=True)
        == "food_kitchen_sub100_to_kitchen_minilm_ku10"
    )
    # every setting that changes the data changes the name: seed, single users, K_u's digits
    assert fk.default_name(0.5, seed=1) == "food_kitchen_seed1_ku50"
    assert fk.default_name(0.5, subset_users=3000, subset_single_users=10) == "food_kitchen_sub3000_single10_ku50"
    assert fk.default_name(0.125) == "food_kitchen_ku12p5" != fk.default_name(0.12) == "food_kitchen_ku12"
    with pytest.raises(PrepError, match="unknown Food-Kitchen pair 'food_kitchen_x'"):
        fk.preset("food_kitchen_x")
    with pytest.raises(PrepError, match="unknown setting"):
        fk.ensure_dataset("food_kitchen_ku50", out_dir="unused", kcores=3)


@pytest.mark.parametrize(
    "argv, name",
    [
        (["--preset", "food_kitchen_ku50"], "food_kitchen_ku50"),
        (["--preset", "food_kitchen_ku50", "--overlap-ratio", "0.5", "--seed", "0"], "food_kitchen_ku50"),
        (["--preset", "food_kitchen_ku50", "--overlap-ratio", "0.9"], "food_kitchen_ku90"),
        (["--preset", "food_kitchen_ku50", "--seed", "1"], "food_kitchen_seed1_ku50"),
        (["--preset", "food_kitchen_demo"], "food_kitchen_demo"),
        (
            ["--preset", "food_kitchen_demo", "--subset-single-users", "10"],
            "food_kitchen_sub3000_single10_allusers_ku50",
        ),
        (["--preset", "food_kitchen_ku50", "--seed", "1", "--name", "mine"], "mine"),
        (["--seed", "1"], "food_kitchen_seed1_ku50"),
    ],
)
def test_cli_names_a_pair_by_what_it_builds(argv, name, monkeypatch):
    # a preset's name only for the preset's own settings: otherwise another build's files
    # (and its committed properties yaml) would be overwritten
    built = {}
    monkeypatch.setattr(fk, "convert", lambda source, target, cfg: built.setdefault("name", cfg.name))
    assert (
        main(["food-kitchen", "--out", "unused", "--quiet", "--properties", "none", "--cache-dir", "none"] + argv) == 0
    )
    assert built["name"] == name


@pytest.mark.parametrize("name", sorted(fk.PRESETS) + ["food_kitchen_demo_ku10", "food_kitchen_demo_ku90"])
def test_committed_yaml_matches_its_preset(name):
    path = os.path.join(REPO, "properties", f"{name}.yaml")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    command = fk.command_for(name, "dataset", **fk.preset(name))
    assert text.splitlines()[0].endswith(f"written by `{command}`")
    config = yaml.safe_load(text)
    assert config["prepare_command"] == command and config["data_path"] == "dataset/"
    assert config["source_domain"]["dataset"] == f"{name}_kitchen"
    assert config["target_domain"]["dataset"] == f"{name}_food"
    assert config["target_domain"]["modalities"] == ["text_word", "text_char"]
    assert_training_block(text, config)
    if name.startswith("food_kitchen_ku"):
        assert "--kcore 3 --common-users-only" in command
    else:
        assert "--all-users" in command  # the demo keeps single-domain users


def test_cli_command_of_a_preset_rebuilds_it(tmp_path):
    """The yaml's command, run as is (small subset), gives the preset's recipe."""
    from dataset_prep.cli import build_parser

    command = fk.command_for("food_kitchen_demo", "dataset", **fk.preset("food_kitchen_demo"))
    args = build_parser().parse_args(command.split()[3:])
    assert (args.kcore, args.common_users_only, args.subset_users) == (3, False, 3000)
    command = fk.command_for("food_kitchen_ku10", "dataset", **fk.preset("food_kitchen_ku10"))
    args = build_parser().parse_args(command.split()[3:])
    assert (args.kcore, args.common_users_only, args.overlap_ratio) == (3, True, 0.1)
    # with no options the command line builds the kuNN preset under its name (its recipe)
    out = str(tmp_path / "ds")
    assert (
        main(
            [
                "food-kitchen",
                "--out",
                out,
                "--overlap-ratio",
                "0.5",
                "--quiet",
                "--properties",
                "none",
                "--cache-dir",
                "none",
            ]
        )
        == 0
    )
    assert fk.is_built(
        "food_kitchen_ku50",
        out,
        fk._recipe(
            **fk.preset("food_kitchen_ku50"),
            **{
                "subset_users": None,
                "subset_single_users": None,
                "seed": 0,
                "target": "food",
                "minilm": False,
                "data_dir": fk.SHIPPED_DIR,
            },
        ),
    )
    with open(os.path.join(out, "food_kitchen_ku50.summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    src, tgt, o = summary["domains"]["source"], summary["domains"]["target"], summary["overlap"]
    # the numbers of docs/dataset_prep.md: every user is in both domains
    assert src["users"] == tgt["users"] == o["common_users_before"] == 6001
    assert (src["items"], src["interactions"], tgt["items"], tgt["interactions"]) == (5519, 41247, 4364, 43668)
    assert o["overlapped_users_after"] == 3000


def test_cli_food_kitchen_bad_ratio_and_target(tmp_path, capsys):
    assert main(["food-kitchen", "--out", str(tmp_path), "--overlap-ratio", "2", "--quiet"]) == 2
    assert "must be in [0, 1]" in capsys.readouterr().err
    assert (
        main(
            [
                "food-kitchen",
                "--out",
                str(tmp_path),
                "--kcore",
                "40",
                "--quiet",
                "--properties",
                "none",
                "--cache-dir",
                "none",
            ]
        )
        == 2
    )
    assert "is empty after the 40-core filter" in capsys.readouterr().err


@pytest.mark.parametrize("seed", ["-1", "x"])
def test_cli_bad_seed_is_an_argument_error(seed, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["food-kitchen", "--out", str(tmp_path), "--seed", seed, "--quiet"])
    assert exit_info.value.code == 2
    assert f"argument --seed: expected an integer >= 0, got '{seed}'" in capsys.readouterr().err
