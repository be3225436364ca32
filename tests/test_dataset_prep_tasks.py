"""dataset_prep.tasks: the paper's three Amazon 2018 tasks as yaml files, and their recipes."""

import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml
from test_dataset_prep import assert_training_block

from dataset_prep import tasks
from dataset_prep.cli import build_parser, main
from dataset_prep.errors import PrepError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: task -> (pair, source dataset, target dataset, source category, target category)
EXPECTED = {
    "clothes_sports": (
        "clothes_sports",
        "clothes_sports_clothes",
        "clothes_sports_sports",
        "Clothing_Shoes_and_Jewelry",
        "Sports_and_Outdoors",
    ),
    "clothes_home": (
        "clothes_home",
        "clothes_home_clothes",
        "clothes_home_home",
        "Clothing_Shoes_and_Jewelry",
        "Tools_and_Home_Improvement",
    ),
    "food_kitchen": (
        "amazon_food_kitchen",
        "amazon_food_kitchen_kitchen",
        "amazon_food_kitchen_food",
        "Home_and_Kitchen",
        "Grocery_and_Gourmet_Food",
    ),
}


def committed(key):
    with open(os.path.join(REPO, "properties", f"{key}.yaml"), encoding="utf-8") as f:
        return f.read()


def recipe_commands(text):
    """The command lines of a prepare_command (its other lines are shell comments)."""
    return [line for line in text.splitlines() if not line.startswith("#")]


def split_recipe(command):
    """The ``.venv/bin/python -m dataset_prep`` steps of a prepare_command, parsed by the real parser."""
    steps = []
    for step in recipe_commands(command):
        words = shlex.split(step)
        assert words[:3] == [tasks.PYTHON, "-m", "dataset_prep"], step
        steps.append(build_parser().parse_args(words[3:]))
    return steps


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_committed_task_yaml_is_the_generated_one(key):
    assert committed(key) == tasks.render_task_properties(key)


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_task_yaml_names_what_its_recipe_produces(key):
    text = committed(key)
    config = yaml.safe_load(text)
    pair, src_ds, tgt_ds, src_cat, tgt_cat = EXPECTED[key]
    amazon, *downloads, convert = split_recipe(config["prepare_command"])
    # the first comment lines are the recipe, step by step
    lines = text.splitlines()
    assert lines[0].startswith(f"# Paper task {tasks.TASKS[key].number} ")
    recipe_lines = [line.split(". ", 1)[-1].lstrip("# ").strip() for line in lines[2:6]]
    assert recipe_lines == recipe_commands(config["prepare_command"]) == tasks.task_recipe(key)
    # step 1: the Amazon 2018 files of the two categories
    assert amazon.command == "amazon"
    assert [tuple(d) for d in amazon.domain] == [
        (convert.source, f"{src_cat}.json.gz", f"meta_{src_cat}.json.gz"),
        (convert.target, f"{tgt_cat}.json.gz", f"meta_{tgt_cat}.json.gz"),
    ]
    # step 2: images of both item tables that convert reads
    assert [d.command for d in downloads] == ["download-images"] * 2
    assert [d.items for d in downloads] == [convert.source_items, convert.target_items]
    # step 3: reads the tables step 1 writes, with the paper's filters
    assert convert.command == "convert"
    for role in ("source", "target"):
        name = getattr(convert, role)
        assert getattr(convert, f"{role}_inter") == f"{amazon.out}/{name}.inter.tsv"
        assert getattr(convert, f"{role}_items") == f"{amazon.out}/{name}.items.tsv"
    assert (convert.rating_threshold, convert.kcore, convert.common_users_only) == (4, 10, True)
    assert convert.overlap_ratio == 0.5 and convert.seed == 0
    assert convert.modality == ["visual=clip-image:image_path", "text=clip-text:title"]
    # the datasets convert names <name>_<domain> are the ones the yaml loads
    assert convert.name == pair
    assert config["source_domain"]["dataset"] == f"{convert.name}_{convert.source}" == src_ds
    assert config["target_domain"]["dataset"] == f"{convert.name}_{convert.target}" == tgt_ds
    modalities = [m.split("=", 1)[0] for m in convert.modality]
    for role in ("source_domain", "target_domain"):
        block = config[role]
        assert block["modalities"] == modalities == ["visual", "text"]
        assert block["data_path"] == config["data_path"] == convert.out + "/"
        assert block["load_col"] == {"inter": ["user_id", "item_id"]}
        assert block["RATING_FIELD"] is None and block["TIME_FIELD"] is None
    # convert rewrites this very file
    assert (convert.properties or f"properties/{convert.name}.yaml") == f"properties/{key}.yaml"
    assert_training_block(text, config)
    for line in lines:
        assert "#" in line, f"uncommented yaml line: {line!r}"


def test_food_kitchen_task_cannot_collide_with_the_shipped_pairs():
    from dataset_prep import food_kitchen as fk

    config = yaml.safe_load(committed("food_kitchen"))
    names = {config[r]["dataset"] for r in ("source_domain", "target_domain")}
    for preset in list(fk.PRESETS) + [fk.default_name(0.5)]:
        assert not names & {f"{preset}_food", f"{preset}_kitchen"}
    assert all(n.startswith("amazon_food_kitchen_") for n in names)


def test_other_overlap_ratio_and_cli(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    assert main(["paper-task", "clothes_home", "--overlap-ratio", "0.1", "--properties", str(path)]) == 0
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert config["target_domain"]["dataset"] == "clothes_home_ku10_home"
    *_, convert = split_recipe(config["prepare_command"])
    assert (convert.name, convert.overlap_ratio, convert.properties) == ("clothes_home_ku10", 0.1, str(path))
    assert tasks.properties_path("food_kitchen", 0.9) == "properties/amazon_food_kitchen_ku90.yaml"
    capsys.readouterr()
    assert main(["paper-task", "food_kitchen", "--print-recipe"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == tasks.task_recipe("food_kitchen")
    text_only = tasks.task_recipe("clothes_sports", images=False)
    assert len(text_only) == 2 and "clip-image" not in text_only[-1]
    with pytest.raises(PrepError, match="unknown paper task"):
        tasks.task("books")
    assert main(["paper-task", "clothes_sports", "--overlap-ratio", "1.5", "--properties", str(path)]) == 2


def test_runner_prints_the_recipe_when_the_data_is_missing(tmp_path):
    """run_sieoug.py with a task yaml and no dataset/: fails with a short recipe: where to
    download the four Amazon 2018 files, then the commands, one per line."""
    yaml_path = os.path.join(REPO, "properties", "clothes_sports.yaml")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "run_sieoug.py"), "--model=LightGCN", f"--config_files={yaml_path}"],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert not (tmp_path / "dataset").exists()
    assert done.stderr.startswith("run_sieoug.py: error: source_domain dataset 'clothes_sports_clothes' not found")
    lines = done.stderr.splitlines()
    assert lines[0].endswith("does not exist; make it with:") and 6 <= len(lines) <= 10
    assert tasks.AMAZON_2018_URL == "https://nijianmo.github.io/amazon/index.html"
    assert any(tasks.AMAZON_2018_URL in line for line in lines[1:4])
    files = [
        "Clothing_Shoes_and_Jewelry.json.gz",
        "meta_Clothing_Shoes_and_Jewelry.json.gz",
        "Sports_and_Outdoors.json.gz",
        "meta_Sports_and_Outdoors.json.gz",
    ]
    assert any(all(f in line for f in files) for line in lines[1:4])
    commands = [line.strip() for line in lines if line.startswith("  .venv/bin/python -m dataset_prep ")]
    assert commands == tasks.task_recipe("clothes_sports")
    assert [shlex.split(c)[3] for c in commands] == ["amazon", "download-images", "download-images", "convert"]


def test_task_recipe_runs_end_to_end_on_small_dumps(tmp_path, monkeypatch):
    """The food_kitchen recipe, step by step, on the small fixture dumps named as the Amazon
    2018 files (stand-in CLIP model, local file:// image URLs, k-core 1 for the tiny data):
    the yaml ``convert`` rewrites names the same datasets and modalities as the committed one,
    and their files exist."""
    pytest.importorskip("torch")
    import gzip

    import pandas as pd
    from PIL import Image
    from test_dataset_prep import tiny_clip_loader

    from dataset_prep import encoders

    t = tasks.task("food_kitchen")
    fixtures = os.path.join(REPO, "tests", "fixtures", "amazon")
    for src, dst in (
        ("Kitchen.json.gz", t.source.reviews),
        ("meta_Kitchen.json", t.source.meta),
        ("Grocery.json", t.target.reviews),
        ("meta_Grocery.json.gz", t.target.meta),
    ):
        with open(os.path.join(fixtures, src), "rb") as f:
            data = f.read()
        (tmp_path / dst).write_bytes(data if src.endswith(".gz") else gzip.compress(data, mtime=0))
    monkeypatch.chdir(tmp_path)
    record = []
    monkeypatch.setattr(encoders, "load_open_clip", tiny_clip_loader(record))
    amazon, *downloads, convert = [shlex.split(step)[3:] + ["--quiet"] for step in tasks.task_recipe("food_kitchen")]
    assert main(amazon) == 0
    remote = tmp_path / "remote"
    remote.mkdir()
    for d in (t.source, t.target):  # point the image URLs at local files
        path = tmp_path / "raw" / t.key / f"{d.name}.items.tsv"
        items = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
        urls = []
        for i, url in enumerate(items["image_url"]):
            if url:
                name = f"{d.name}{i}.png"
                Image.new("RGB", (8, 8), (i * 20 % 256, 90, 160)).save(remote / name)
                url = (remote / name).as_uri()
            urls.append(url)
        items["image_url"] = urls
        items.to_csv(path, sep="\t", index=False, quoting=3)
    for step in downloads:
        assert main(step) == 0
    convert[convert.index("--kcore") + 1] = "1"  # the fixtures are far too small for 10-core
    assert main(convert) == 0
    assert {r[3] for r in record} == {"visual", "text"}
    old = yaml.safe_load(committed("food_kitchen"))
    with open(tmp_path / "properties" / "food_kitchen.yaml", encoding="utf-8") as f:
        new = yaml.safe_load(f)
    assert new["data_path"] == old["data_path"]
    for role in ("source_domain", "target_domain"):
        assert new[role]["dataset"] == old[role]["dataset"]
        assert new[role]["modalities"] == old[role]["modalities"]
        dataset = new[role]["dataset"]
        folder = tmp_path / new["data_path"] / dataset
        assert (folder / f"{dataset}.inter").is_file()
        for modality in new[role]["modalities"]:
            assert (folder / f"{dataset}.{modality}.feat.npz").is_file()
    assert {k: new[k] for k in ("seed", "eval_args", "metrics", "topk")} == {
        k: old[k] for k in ("seed", "eval_args", "metrics", "topk")
    }
    with open(tmp_path / "dataset" / f"{t.pair}.summary.json", encoding="utf-8") as f:
        summary = json.load(f)
    for role in ("source", "target"):
        info = summary["domains"][role]
        assert info["features"]["visual"]["empty_inputs"] < info["items"]  # images were used
        assert info["dropped"]["below_threshold"] > 0  # the rating >= 4 threshold applied
