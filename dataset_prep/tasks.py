"""The paper's three tasks (SIEOUG, WWW'25, Sec 4.1 and App. C) as ready configurations.

Each task is a pair of Amazon Review Data (2018) categories. :func:`task_recipe` gives the
commands that build its data from the raw Amazon 2018 files (``amazon``, then
``download-images`` for the visual modality, then ``convert``) and :func:`render_task_properties`
the yaml (``properties/<task>.yaml``) that names the datasets that recipe produces, with the
recipe in its first comment lines and, with where to download the Amazon 2018 files, as
``prepare_command`` (:func:`prepare_text`: what the run script prints when the data is
missing). The ``convert`` step rewrites that yaml with the built pair's statistics (same keys).

Settings (the paper's): ratings >= 4 are positives, the rest dropped; users and items with
fewer than 10 interactions removed (10-core, per domain); only users with interactions in both
domains (the paper's Table 2 gives one user count per task, the overlapped-user setting of
its reference [23]); K_u = 0.5 unless asked; modalities ``visual`` (CLIP image) and ``text``
(CLIP text, on the title); seed 0.
"""

import json
import os
import shlex
from dataclasses import dataclass
from types import SimpleNamespace

from dataset_prep.errors import PrepError
from dataset_prep.properties import TRAINING_BLOCK, _domain_block, _line, write_text_atomic


@dataclass(frozen=True)
class Domain:
    """One Amazon 2018 category: ``name`` (used in dataset names) and its file stem."""

    name: str
    category: str  # file stem of the 2018 release: <category>.json.gz, meta_<category>.json.gz
    label: str  # human-readable name
    table2: tuple  # the paper's Table 2: (items, ratings)

    @property
    def reviews(self):
        return f"{self.category}.json.gz"

    @property
    def meta(self):
        return f"meta_{self.category}.json.gz"


@dataclass(frozen=True)
class Task:
    """A task of the paper: a source and a target category, and where its yaml goes."""

    key: str  # properties/<key>.yaml (K_u = 0.5) and the raw folder raw/<key>/
    number: int  # the paper's task number
    pair: str  # pair name at K_u = 0.5: datasets <pair>_<source>, <pair>_<target>
    source: Domain
    target: Domain
    table2_users: int  # the paper's Table 2: users (one count per task)


_CLOTHES = "Clothing_Shoes_and_Jewelry", "Clothing, Shoes and Jewelry"
TASKS = {
    "clothes_sports": Task(
        "clothes_sports",
        1,
        "clothes_sports",
        Domain("clothes", *_CLOTHES, (10652, 83130)),
        Domain("sports", "Sports_and_Outdoors", "Sports and Outdoors", (10219, 84013)),
        9202,
    ),
    "clothes_home": Task(
        "clothes_home",
        2,
        "clothes_home",
        Domain("clothes", *_CLOTHES, (7266, 55789)),
        Domain("home", "Tools_and_Home_Improvement", "Tools and Home Improvement", (8418, 71171)),
        6548,
    ),
    # The shipped Food-Kitchen slice makes pairs named food_kitchen_*: this one is prefixed
    # amazon_ so the two can never share a dataset folder.
    "food_kitchen": Task(
        "food_kitchen",
        3,
        "amazon_food_kitchen",
        Domain("kitchen", "Home_and_Kitchen", "Home and Kitchen", (14680, 154152)),
        Domain("food", "Grocery_and_Gourmet_Food", "Grocery and Gourmet Food", (9949, 135634)),
        9815,
    ),
}

#: Where the Amazon Review Data (2018) files are downloaded (Jianmo Ni, UCSD / McAuley lab).
AMAZON_2018_URL = "https://nijianmo.github.io/amazon/index.html"
#: The interpreter of the recipe's commands: the repository's virtual environment (see README).
PYTHON = ".venv/bin/python"
RATING_THRESHOLD = 4
KCORE = 10
COMMON_USERS_ONLY = True
DEFAULT_OVERLAP_RATIO = 0.5
SEED = 0
#: (name, encoder, column) of each modality; the paper's CLIP visual and text features.
MODALITIES = (("visual", "clip-image", "image_path"), ("text", "clip-text", "title"))


def task(key):
    """The :class:`Task` named ``key`` (``clothes_sports``, ``clothes_home``, ``food_kitchen``)."""
    if key not in TASKS:
        raise PrepError(f"unknown paper task {key!r}; known: {', '.join(TASKS)}")
    return TASKS[key]


def _ku_tag(overlap_ratio):
    return f"ku{round(100 * overlap_ratio):d}"


def pair_name(key, overlap_ratio=DEFAULT_OVERLAP_RATIO):
    """The pair name: the task's at K_u = 0.5, else ``<pair>_kuNN``."""
    t = task(key)
    if abs(overlap_ratio - DEFAULT_OVERLAP_RATIO) < 1e-12:
        return t.pair
    return f"{t.pair}_{_ku_tag(overlap_ratio)}"


def properties_path(key, overlap_ratio=DEFAULT_OVERLAP_RATIO):
    """``properties/<task>.yaml`` at K_u = 0.5, else ``properties/<pair>.yaml``."""
    if abs(overlap_ratio - DEFAULT_OVERLAP_RATIO) < 1e-12:
        return f"properties/{task(key).key}.yaml"
    return f"properties/{pair_name(key, overlap_ratio)}.yaml"


def task_recipe(
    key, overlap_ratio=DEFAULT_OVERLAP_RATIO, out_dir="dataset", raw_dir="raw", images=True, properties=None
):
    """The commands (a list of strings) that build the task's pair from the Amazon 2018 files
    (``<category>.json.gz`` and ``meta_<category>.json.gz`` in the current folder).

    ``raw_dir/<task>/`` gets the generic tables, ``raw_dir/images/<domain>/`` the images
    (shared by the tasks that use a category). ``images=False`` leaves out the downloads and
    the visual modality (text only). ``properties``: the yaml ``convert`` writes (default
    :func:`properties_path`).
    """
    from dataset_prep.filtering import check_overlap_ratio

    overlap_ratio = check_overlap_ratio(overlap_ratio)
    t = task(key)
    tables = f"{raw_dir}/{t.key}"
    doms = (t.source, t.target)
    steps = [
        f"{PYTHON} -m dataset_prep amazon "
        + shlex.join(["--out", tables] + [a for d in doms for a in ("--domain", d.name, d.reviews, d.meta)])
    ]
    if images:
        for d in doms:
            steps.append(
                f"{PYTHON} -m dataset_prep download-images "
                + shlex.join(["--items", f"{tables}/{d.name}.items.tsv", "--image-dir", f"{raw_dir}/images/{d.name}"])
            )
    name = pair_name(key, overlap_ratio)
    args = ["--name", name, "--out", out_dir]
    for role, d in (("source", t.source), ("target", t.target)):
        args += [
            f"--{role}",
            d.name,
            f"--{role}-inter",
            f"{tables}/{d.name}.inter.tsv",
            f"--{role}-items",
            f"{tables}/{d.name}.items.tsv",
        ]
    args += ["--rating-threshold", f"{RATING_THRESHOLD:g}", "--kcore", str(KCORE)]
    if COMMON_USERS_ONLY:
        args.append("--common-users-only")
    args += ["--overlap-ratio", f"{overlap_ratio:g}", "--seed", str(SEED)]
    props = (properties or properties_path(key, overlap_ratio)).replace(os.sep, "/")
    if props != f"properties/{name}.yaml":
        args += ["--properties", props]
    for mod, encoder, column in modalities(images):
        args += ["--modality", f"{mod}={encoder}:{column}"]
    steps.append(f"{PYTHON} -m dataset_prep convert " + shlex.join(args))
    return steps


def prepare_text(key, overlap_ratio=DEFAULT_OVERLAP_RATIO, out_dir="dataset", raw_dir="raw", properties=None):
    """The task's ``prepare_command``: where to download its four Amazon 2018 files, then the
    commands of :func:`task_recipe`, one per line (a shell script: the other lines are comments)."""
    t = task(key)
    files = " ".join(f for d in (t.source, t.target) for f in (d.reviews, d.meta))
    return "\n".join(
        [
            "# 1. download these Amazon Review Data (2018) files (per category: 'reviews' and 'metadata')",
            f"#    from {AMAZON_2018_URL} into the current folder:",
            f"#    {files}",
            "# 2. run (download-images fetches the images of the visual modality):",
            *task_recipe(key, overlap_ratio, out_dir, raw_dir, properties=properties),
        ]
    )


def modalities(images=True):
    """The task modalities (name, encoder, column); without images, text only."""
    return [m for m in MODALITIES if images or m[1] != "clip-image"]


def _table2(d, users=None):
    head = f"{users:,} users, " if users else ""
    return f"{head}{d.table2[0]:,} items, {d.table2[1]:,} ratings"


def render_task_properties(key, overlap_ratio=DEFAULT_OVERLAP_RATIO, out_dir="dataset", raw_dir="raw", path=None):
    """The yaml text of a paper task (what ``properties/<task>.yaml`` holds), every key
    commented; its first comment lines are the recipe (:func:`task_recipe`). ``path``: where
    the yaml will be (the recipe's ``convert`` rewrites it; default :func:`properties_path`)."""
    t = task(key)
    steps = task_recipe(key, overlap_ratio, out_dir, raw_dir, properties=path)
    name = pair_name(key, overlap_ratio)
    data_path = out_dir.replace(os.sep, "/").rstrip("/") + "/"
    files = ", ".join(f for d in (t.source, t.target) for f in (d.reviews, d.meta))
    ku = _ku_tag(0.1)
    other = f"properties/{t.pair}_{ku}.yaml"
    lines = [
        f"# Paper task {t.number} (SIEOUG WWW'25, Sec 4.1 and App. C): dataset pair {name}, "
        f"source {t.source.name} ({t.source.label}) -> target {t.target.name} ({t.target.label})",
        "# Make the data from the Amazon Review Data (2018) files in the current folder "
        f"({files}; from {AMAZON_2018_URL}):",
        f"#   1. {steps[0]}",
        f"#   2. {steps[1]}",
        f"#      {steps[2]}",
        f"#   3. {steps[3]}",
        "# Step 2 fetches the item images for the visual modality; for text only skip it and "
        "leave out --modality visual=... (then the modalities below are [text]).",
        f"# Step 3 rewrites this file with the pair's statistics (same keys). Settings: Amazon "
        f"2018, ratings >= {RATING_THRESHOLD} are positives (the rest dropped), {KCORE}-core per "
        "domain, only users in both domains (Table 2 lists one user count per task), "
        f"K_u = {overlap_ratio:g}, seed {SEED}, CLIP image and text features.",
        f"# Another K_u (the paper uses 0.1, 0.5, 0.9): `{PYTHON} -m dataset_prep paper-task {t.key} "
        f"--overlap-ratio 0.1` writes {other} (pair {t.pair}_{ku}) with its recipe; or run step 3 "
        f"with --overlap-ratio 0.1 --name {t.pair}_{ku} and without --properties.",
        f"# The paper's Table 2 for this task: {t.table2_users:,} users; {t.source.name} "
        f"{_table2(t.source)}; {t.target.name} {_table2(t.target)}.",
        _line(
            "prepare_command",
            json.dumps(prepare_text(key, overlap_ratio, out_dir, raw_dir, path)),
            "how to make the data if it is missing",
        ),
        _line("data_path", data_path, "folder holding one sub-folder per domain dataset"),
    ]
    lines += TRAINING_BLOCK.splitlines()
    cfg = SimpleNamespace(keep_below_threshold=False, rating_threshold=float(RATING_THRESHOLD))
    info = {"rating_column": "rating", "time_column": "timestamp", "kcore": KCORE}
    mods = [m[0] for m in modalities()]
    for role, d in (("source", t.source), ("target", t.target)):
        comment = f"{d.name}: Amazon 2018 {d.category} (paper's Table 2: {_table2(d, t.table2_users)})"
        lines += _domain_block(role, info, cfg, f"{name}_{d.name}", mods, data_path, comment)
    return "\n".join(lines) + "\n"


def write_task_properties(key, overlap_ratio=DEFAULT_OVERLAP_RATIO, path=None, out_dir="dataset", raw_dir="raw"):
    """Write a paper task's yaml (default :func:`properties_path`); returns the path."""
    path = path or properties_path(key, overlap_ratio)
    return write_text_atomic(path, render_task_properties(key, overlap_ratio, out_dir, raw_dir, path))
