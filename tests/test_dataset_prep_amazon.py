"""dataset_prep.amazon: raw Amazon 2018 dumps -> generic tables -> convert, and image download."""

import gzip
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from dataset_prep import encoders
from dataset_prep.amazon import clean_text, convert_amazon, download_images, read_metadata, read_reviews
from dataset_prep.cli import main
from dataset_prep.convert import ConvertConfig, DomainInput, convert
from dataset_prep.errors import PrepError
from sieoug_formats.features import read_item_features

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "amazon")


def fixture(name):
    return os.path.join(FIXTURES, name)


DOMAINS = [
    ("grocery", fixture("Grocery.json"), fixture("meta_Grocery.json.gz")),
    ("kitchen", fixture("Kitchen.json.gz"), fixture("meta_Kitchen.json")),
]


def read(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)


def test_amazon_dumps_to_generic_tables(tmp_path):
    summary = convert_amazon(DOMAINS, str(tmp_path), progress=False)
    g = summary["domains"]["grocery"]
    assert g["reviews"]["reviews"] == 23 and g["reviews"]["lines"] == 23
    assert g["metadata"]["items"] == 20 and g["metadata"]["duplicate_asin"] == 1
    assert g["reviews_without_metadata"] == 1  # G99
    assert summary["domains"]["kitchen"]["reviews"]["reviews"] == 28
    inter = read(tmp_path / "grocery.inter.tsv")
    assert list(inter.columns) == ["user", "item", "rating", "timestamp"]
    assert inter.iloc[0].tolist() == ["U01", "G02", "4.0", "1500000000"]
    items = read(tmp_path / "grocery.items.tsv").set_index("item")
    assert list(items.columns) == ["title", "description", "image_url"]
    g01 = items.loc["G01"]
    assert g01["title"] == "Organic Green Tea, 100 bags"  # the duplicate line is ignored
    assert g01["description"] == "Smooth green tea. Caffeine & antioxidants."  # HTML cleaned
    assert g01["image_url"].endswith("/g01-hi.jpg")  # high resolution preferred
    assert items.loc["G03", "image_url"] == "" and items.loc["G03", "description"] == ""
    assert items.loc["G06", "title"] == "Earl Grey Tea"  # 2014 literal line
    assert items.loc["G06", "image_url"].endswith("/g06.jpg")
    with open(tmp_path / "amazon_summary.json", encoding="utf-8") as f:
        assert json.load(f)["domains"]["kitchen"]["metadata"]["items"] == 20


def test_amazon_end_to_end_through_convert(tmp_path):
    raw = tmp_path / "raw"
    assert (
        main(["amazon", "--out", str(raw), "--compress", "--quiet", "--domain", *DOMAINS[0], "--domain", *DOMAINS[1]])
        == 0
    )
    cfg = ConvertConfig(
        name="gk",
        out_dir=str(tmp_path / "out"),
        kcore=2,
        overlap_ratio=0.5,
        rating_threshold=4,
        properties_path=str(tmp_path / "gk.yaml"),
        cache_dir=str(tmp_path / "cache"),
        progress=False,
        modalities=["text=tfidf-word:title+description:dim=8", "chars=tfidf-char:title:dim=8"],
    )
    summary = convert(
        DomainInput("kitchen", str(raw / "kitchen.inter.tsv.gz"), str(raw / "kitchen.items.tsv.gz")),
        DomainInput("grocery", str(raw / "grocery.inter.tsv.gz"), str(raw / "grocery.items.tsv.gz")),
        cfg,
    )
    k, g = summary["domains"]["source"], summary["domains"]["target"]
    assert (k["users"], k["items"], k["interactions"]) == (8, 4, 24)
    assert (g["users"], g["items"], g["interactions"]) == (6, 4, 18)
    assert k["dropped"] == {
        "unparsable": 0,
        "below_threshold": 1,
        "duplicate": 0,
        "item_not_in_item_table": 0,
        "not_in_user_subset": 0,
        "not_common_user": 0,
        "kcore": 3,
    }
    assert g["dropped"] == {
        "unparsable": 0,
        "below_threshold": 2,
        "duplicate": 1,
        "item_not_in_item_table": 1,
        "not_in_user_subset": 0,
        "not_common_user": 0,
        "kcore": 1,
    }
    assert summary["overlap"]["common_users_input"] == 6
    assert summary["overlap"]["common_users_before"] == 4
    assert summary["overlap"]["overlapped_users_after"] == 2
    inter = pd.read_csv(tmp_path / "out" / "gk_grocery" / "gk_grocery.inter", sep="\t", dtype=str)
    assert list(inter.columns) == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert (inter["rating:float"].astype(float) >= 4).all()
    tokens, matrix = read_item_features(str(tmp_path / "out" / "gk_grocery" / "gk_grocery.text.feat.npz"))
    assert tokens.tolist() == ["G01", "G02", "G03", "G04"] and matrix.shape == (4, 8)
    assert g["item_table"]["items_without_interactions"] == 16


def test_bad_json_line_names_file_and_line_or_is_counted(tmp_path):
    path = tmp_path / "reviews.json"
    good = json.dumps({"reviewerID": "u", "asin": "a", "overall": 5.0, "unixReviewTime": 1})
    path.write_text(good + "\n{not json\n" + good.replace('"u"', '"v"') + "\n", encoding="utf-8")
    with pytest.raises(PrepError, match=r"reviews.json, line 2: not a JSON object"):
        read_reviews(str(path))
    frame, counts = read_reviews(str(path), skip_bad=True)
    assert len(frame) == 2 and counts["bad_json"] == 1 and counts["lines"] == 3


def test_review_missing_field_or_bad_number(tmp_path):
    path = tmp_path / "reviews.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"reviewerID": "u", "asin": "a", "overall": 5.0, "unixReviewTime": 1}) + "\n")
        f.write(json.dumps({"reviewerID": "u", "asin": "b", "unixReviewTime": 1}) + "\n")
        f.write(json.dumps({"reviewerID": "u", "asin": "c", "overall": "great", "unixReviewTime": 1}) + "\n")
    with pytest.raises(PrepError, match=r"reviews.json.gz, line 2: review missing field\(s\) \['overall'\]"):
        read_reviews(str(path))
    frame, counts = read_reviews(str(path), skip_bad=True)
    assert len(frame) == 1 and counts["missing_field"] == 1 and counts["bad_number"] == 1


def test_metadata_without_asin(tmp_path):
    path = tmp_path / "meta.json"
    path.write_text('{"title": "x"}\n{"asin": "A1", "title": "y"}\n', encoding="utf-8")
    with pytest.raises(PrepError, match=r"meta.json, line 1: metadata without 'asin'"):
        read_metadata(str(path))
    frame, counts = read_metadata(str(path), skip_bad=True)
    assert frame["item"].tolist() == ["A1"] and counts["missing_asin"] == 1


def test_missing_dump_file(tmp_path):
    with pytest.raises(PrepError, match="file not found"):
        convert_amazon(
            [("x", str(tmp_path / "none.json"), fixture("meta_Kitchen.json"))], str(tmp_path), progress=False
        )


def test_clean_text():
    assert clean_text(["<p>A &amp; B</p>", "  two\tlines\n"]) == "A & B two lines"
    assert clean_text(None) == ""


def test_download_images_resumable_with_failures_then_clip(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from PIL import Image

    try:  # pytest puts tests/ on sys.path (rootdir-relative import as a fallback)
        from test_dataset_prep import tiny_clip_loader
    except ImportError:
        from tests.test_dataset_prep import tiny_clip_loader

    convert_amazon(DOMAINS, str(tmp_path / "raw"), progress=False)
    remote = tmp_path / "remote"
    remote.mkdir()
    for name, colour in (("k01.jpg", (200, 10, 10)), ("k02.jpg", (10, 200, 10)), ("k03-hi.jpg", (10, 10, 200))):
        Image.new("RGB", (12, 12), colour).save(remote / name)
    items_path = tmp_path / "raw" / "kitchen.items.tsv"
    items = read(items_path)
    # point the URLs at local files (file:// is fetched by urllib like http://); k05/k06 missing
    items["image_url"] = [
        u.replace("https://images.example.com/images/I/", remote.as_uri() + "/") if u else ""
        for u in items["image_url"]
    ]
    items.to_csv(items_path, sep="\t", index=False, quoting=3)
    stats = download_images(str(items_path), str(tmp_path / "raw" / "images"), progress=False)
    assert (stats["downloaded"], stats["failed"], stats["no_url"], stats["existing"]) == (3, 2, 15, 0)
    assert len(stats["first_failures"]) == 2 and "K05" in stats["first_failures"][0]
    table = read(items_path).set_index("item")
    assert table.loc["K01", "image_path"] == "images/K01.jpg" and table.loc["K05", "image_path"] == ""
    # resumable: present files are not fetched again (even when the source is gone)
    shutil.rmtree(remote)
    again = download_images(str(items_path), str(tmp_path / "raw" / "images"), progress=False)
    assert (again["downloaded"], again["existing"], again["failed"]) == (0, 3, 2)
    assert not any(name.endswith(".part") for name in os.listdir(tmp_path / "raw" / "images"))
    # the image paths feed the clip-image encoder
    record = []
    monkeypatch.setattr(encoders, "load_open_clip", tiny_clip_loader(record))
    cfg = ConvertConfig(
        name="img",
        out_dir=str(tmp_path / "out"),
        kcore=0,
        progress=False,
        properties_path="",
        cache_dir=str(tmp_path / "cache"),
        modalities=["visual=clip-image:image_path:pretrained=none,batch_size=2"],
    )
    grocery = tmp_path / "raw" / "grocery.items.tsv"
    g_items = read(grocery)
    g_items["image_path"] = ""
    g_items.to_csv(grocery, sep="\t", index=False, quoting=3)
    summary = convert(
        DomainInput("kitchen", str(tmp_path / "raw" / "kitchen.inter.tsv"), str(items_path)),
        DomainInput("grocery", str(tmp_path / "raw" / "grocery.inter.tsv"), str(grocery)),
        cfg,
    )
    # K04 has no image URL, K05 and K06 failed to download
    assert summary["domains"]["source"]["features"]["visual"]["empty_inputs"] == 3
    tokens, matrix = read_item_features(str(tmp_path / "out" / "img_kitchen" / "img_kitchen.visual.feat.npz"))
    norms = dict(zip(tokens.tolist(), np.linalg.norm(matrix, axis=1)))
    assert norms["K01"] == pytest.approx(1, abs=1e-5) and norms["K05"] == 0


def test_image_urls_in_clip_column_are_rejected(tmp_path):
    convert_amazon(DOMAINS, str(tmp_path / "raw"), progress=False)
    cfg = ConvertConfig(
        name="img",
        out_dir=str(tmp_path / "out"),
        kcore=0,
        progress=False,
        properties_path="",
        cache_dir="",
        modalities=["visual=clip-image:image_url:pretrained=none"],
    )
    raw = tmp_path / "raw"
    with pytest.raises(PrepError, match="holds URLs.*download-images"):
        convert(
            DomainInput("kitchen", str(raw / "kitchen.inter.tsv"), str(raw / "kitchen.items.tsv")),
            DomainInput("grocery", str(raw / "grocery.inter.tsv"), str(raw / "grocery.items.tsv")),
            cfg,
        )
