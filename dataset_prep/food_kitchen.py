"""The real Amazon Food <-> Kitchen pair, shipped in compact form, and named ready-made pairs.

Shipped data (``dataset_prep/data/food_kitchen/``, made by ``pack-food-kitchen`` from the
text-only slice described in its README): per domain an xz-compressed generic interaction
table (``user item timestamp``; the timestamp is the position in the user's sequence, the
slice has no dates and no ratings) and an item table (``item title``).

Pairs built from it (``food-kitchen`` subcommand, :func:`build`, :func:`ensure_dataset`):

- direction: source = kitchen (dense), target = food (the paper reports both directions;
  ``--target kitchen`` flips it);
- modalities: ``text_word`` = tfidf-word on the title, ``text_char`` = tfidf-char on the title
  (the slice has no images, so the paper's visual modality cannot be built); ``--minilm`` adds
  ``text_minilm`` (optional extra);
- filtering: every row is a positive (no ratings); by default only users with rows in both
  domains (``--common-users-only``; ``--all-users`` keeps the others) and a per-domain iterative
  3-core: the shape closest to the paper's Table 2, which gives one user count per task (the
  paper's 10-core leaves 51 Kitchen users here: ``--kcore 10`` still works);
- named pairs: ``food_kitchen_ku10`` / ``_ku50`` / ``_ku90`` (full data, common users only,
  3-core, K_u = 0.1 / 0.5 / 0.9) and ``food_kitchen_demo`` (3,000 sampled common users + 750
  single-domain users per domain, all users, 3-core, K_u = 0.5): small enough to train in a
  few minutes on 2 CPU cores.
"""

import hashlib
import json
import os
import re

import pandas as pd

from dataset_prep.convert import SUMMARY_VERSION, ConvertConfig, DomainInput, convert, summary_path
from dataset_prep.errors import PrepError
from dataset_prep.locking import pair_lock

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "food_kitchen")
DOMAINS = ("food", "kitchen")
MODALITIES = ["text_word=tfidf-word:title", "text_char=tfidf-char:title"]
MINILM_MODALITY = "text_minilm=minilm:title"
DEFAULT_KCORE = 3
DEFAULT_COMMON_USERS_ONLY = True
DEFAULT_SEED = 0
COMPRESSION = {"method": "xz", "preset": 9}  # of the shipped tables (xz has no timestamp)
SUFFIX = ".tsv.xz"


def _ku_preset(overlap_ratio):
    return {"overlap_ratio": overlap_ratio, "kcore": DEFAULT_KCORE, "common_users_only": DEFAULT_COMMON_USERS_ONLY}


#: The default of every setting a preset may leave out.
SETTING_DEFAULTS = {
    "subset_users": None,
    "subset_single_users": None,
    "seed": DEFAULT_SEED,
    "target": "food",
    "minilm": False,
    "common_users_only": DEFAULT_COMMON_USERS_ONLY,
}

#: Named pairs: the settings each is built with (everything else default).
PRESETS = {
    "food_kitchen_demo": {
        "overlap_ratio": 0.5,
        "kcore": 3,
        "subset_users": 3000,
        "subset_single_users": 750,
        "common_users_only": False,
    },
    "food_kitchen_ku10": _ku_preset(0.1),
    "food_kitchen_ku50": _ku_preset(0.5),
    "food_kitchen_ku90": _ku_preset(0.9),
}
_KU_NAME = re.compile(r"^food_kitchen_ku(\d{1,3})$")
_DEMO_KU_NAME = re.compile(r"^food_kitchen_demo_ku(\d{1,3})$")  # the demo subset at K_u = NN%


def shipped_paths(domain, data_dir=SHIPPED_DIR):
    """``(interactions, items)`` paths of a shipped domain table."""
    return (os.path.join(data_dir, f"{domain}.inter{SUFFIX}"), os.path.join(data_dir, f"{domain}.items{SUFFIX}"))


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pack(src_dir, data_dir=SHIPPED_DIR):
    """Write the shipped tables from the original slice in ``src_dir``; returns the manifest.

    ``src_dir`` holds ``interactions.tsv`` (``user domain asin position``) and
    ``food_items.tsv`` / ``kitchen_items.tsv`` (``asin title``). Output files are xz (preset
    9; the format has no timestamp), so packing twice gives identical bytes.
    """

    def load(name, columns):
        path = os.path.join(src_dir, name)
        from dataset_prep.tables import read_table, require_columns

        table = read_table(path, sep="\t", what="Food-Kitchen source")
        require_columns(table, path, {c: c for c in columns}, what="Food-Kitchen source")
        return table

    inter = load("interactions.tsv", ["user", "domain", "asin", "position"])
    unknown = sorted(set(inter["domain"]) - set(DOMAINS))
    if unknown:
        raise PrepError(f"{src_dir}/interactions.tsv: unknown domain value(s) {unknown}")
    os.makedirs(data_dir, exist_ok=True)
    manifest = {"source": os.path.basename(os.path.abspath(src_dir)), "files": {}, "counts": {}}
    for domain in DOMAINS:
        rows = inter[inter["domain"] == domain]
        table = pd.DataFrame({"user": rows["user"], "item": rows["asin"], "timestamp": rows["position"]})
        items = load(f"{domain}_items.tsv", ["asin", "title"]).rename(columns={"asin": "item"})
        inter_path, items_path = shipped_paths(domain, data_dir)
        table.to_csv(inter_path, sep="\t", index=False, lineterminator="\n", compression=COMPRESSION)
        items[["item", "title"]].to_csv(
            items_path, sep="\t", index=False, quoting=3, lineterminator="\n", compression=COMPRESSION
        )
        manifest["counts"][domain] = {
            "interactions": int(len(table)),
            "users": int(table["user"].nunique()),
            "items": int(len(items)),
        }
        for path in (inter_path, items_path):
            manifest["files"][os.path.basename(path)] = {"bytes": os.path.getsize(path), "sha256": _sha256(path)}
    with open(os.path.join(data_dir, "MANIFEST.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


def _manifest(data_dir=SHIPPED_DIR):
    path = os.path.join(data_dir, "MANIFEST.json")
    if not os.path.isfile(path):
        raise PrepError(
            f"the shipped Food-Kitchen data is missing ({path}); rebuild it with "
            "`python -m dataset_prep pack-food-kitchen --src <folder of the slice>`"
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def preset(name):
    """The settings of a named pair (``food_kitchen_demo``, ``food_kitchen_kuNN``)."""
    if name in PRESETS:
        return dict(PRESETS[name])
    match = _KU_NAME.match(name)
    if match and 0 <= int(match.group(1)) <= 100:
        return _ku_preset(int(match.group(1)) / 100)
    match = _DEMO_KU_NAME.match(name)
    if match and 0 <= int(match.group(1)) <= 100:
        return dict(PRESETS["food_kitchen_demo"], overlap_ratio=int(match.group(1)) / 100)
    raise PrepError(
        f"unknown Food-Kitchen pair {name!r}; known: {', '.join(sorted(PRESETS))} "
        "(or food_kitchen_kuNN / food_kitchen_demo_kuNN for K_u = NN%)"
    )


def command_for(
    name,
    out_dir,
    overlap_ratio,
    kcore,
    subset_users=None,
    subset_single_users=None,
    seed=DEFAULT_SEED,
    target="food",
    minilm=False,
    common_users_only=DEFAULT_COMMON_USERS_ONLY,
):
    """The exact command line that builds a pair with these settings (every filter explicit)."""
    parts = [
        "python -m dataset_prep food-kitchen",
        f"--out {out_dir}",
        f"--name {name}",
        f"--overlap-ratio {overlap_ratio:g}",
        f"--kcore {kcore}",
    ]
    if subset_users is not None:
        parts.append(f"--subset-users {subset_users}")
        if subset_single_users is not None:
            parts.append(f"--subset-single-users {subset_single_users}")
    parts.append("--common-users-only" if common_users_only else "--all-users")
    parts.append(f"--seed {seed}")
    if target != "food":
        parts.append(f"--target {target}")
    if minilm:
        parts.append("--minilm")
    return " ".join(parts)


def _recipe(
    overlap_ratio,
    kcore,
    subset_users,
    subset_single_users,
    seed,
    target,
    minilm,
    data_dir,
    common_users_only=DEFAULT_COMMON_USERS_ONLY,
):
    files = _manifest(data_dir)["files"]
    return {
        "overlap_ratio": float(overlap_ratio),
        "kcore": int(kcore),
        "common_users_only": bool(common_users_only),
        "subset_users": subset_users,
        "subset_single_users": subset_single_users,
        "seed": int(seed),
        "target": target,
        "minilm": bool(minilm),
        "data_sha256": {k: v["sha256"] for k, v in sorted(files.items())},
    }


def build(
    out_dir="dataset",
    name=None,
    overlap_ratio=0.5,
    kcore=DEFAULT_KCORE,
    subset_users=None,
    subset_single_users=None,
    seed=DEFAULT_SEED,
    target="food",
    minilm=False,
    common_users_only=DEFAULT_COMMON_USERS_ONLY,
    properties_path=None,
    cache_dir=None,
    progress=True,
    data_dir=SHIPPED_DIR,
):
    """Build a Food-Kitchen pair from the shipped tables; returns the summary dict.

    ``name`` defaults to :func:`default_name` (``food_kitchen_kuNN`` with the default
    settings). ``properties_path``: None writes ``properties/<name>.yaml``; '' writes none.
    """
    if target not in DOMAINS:
        raise PrepError(f"--target must be one of {DOMAINS}, got {target!r}")
    from dataset_prep.filtering import check_overlap_ratio

    overlap_ratio = check_overlap_ratio(overlap_ratio)
    if name is None:
        name = default_name(
            overlap_ratio, kcore, subset_users, target, minilm, common_users_only, subset_single_users, seed
        )
    source = "kitchen" if target == "food" else "food"
    recipe = _recipe(
        overlap_ratio, kcore, subset_users, subset_single_users, seed, target, minilm, data_dir, common_users_only
    )
    doms = [DomainInput(d, *shipped_paths(d, data_dir)) for d in (source, target)]
    for dom in doms:
        for path in (dom.inter_path, dom.items_path):
            if not os.path.isfile(path):
                raise PrepError(f"shipped Food-Kitchen file missing: {path}")
    cfg = ConvertConfig(
        name=name,
        out_dir=out_dir,
        modalities=MODALITIES + ([MINILM_MODALITY] if minilm else []),
        user_col="user",
        item_col="item",
        rating_col="",
        time_col="timestamp",
        rating_threshold=None,
        kcore=kcore,
        common_users_only=common_users_only,
        overlap_ratio=overlap_ratio,
        seed=seed,
        subset_users=subset_users,
        subset_single_users=subset_single_users,
        cache_dir=cache_dir,
        properties_path=properties_path,
        progress=progress,
        command=command_for(
            name,
            out_dir,
            overlap_ratio,
            kcore,
            subset_users,
            subset_single_users,
            seed,
            target,
            minilm,
            common_users_only,
        ),
        recipe=recipe,
    )
    return convert(doms[0], doms[1], cfg)


def default_name(
    overlap_ratio,
    kcore=DEFAULT_KCORE,
    subset_users=None,
    target="food",
    minilm=False,
    common_users_only=DEFAULT_COMMON_USERS_ONLY,
    subset_single_users=None,
    seed=DEFAULT_SEED,
):
    """``food_kitchen_kuNN`` with the default settings; each other setting adds a tag
    (``sub<N>``, ``single<M>``, ``<K>core``, ``allusers``, ``to_kitchen``, ``minilm``,
    ``seed<S>``) before ``kuNN`` (``ku12p5`` for 12.5%), so pairs built with different settings
    never share a name by default."""
    tags = ["food_kitchen"]
    if subset_users is not None:
        tags.append(f"sub{subset_users}")
        if subset_single_users is not None:
            tags.append(f"single{subset_single_users}")
    if kcore != DEFAULT_KCORE:
        tags.append(f"{kcore}core")
    if not common_users_only:
        tags.append("allusers")
    if target != "food":
        tags.append(f"to_{target}")
    if minilm:
        tags.append("minilm")
    if seed != DEFAULT_SEED:
        tags.append(f"seed{seed}")
    percent = f"{100 * overlap_ratio:.6g}".replace(".", "p")  # 0.125 -> 12p5, 0.5 -> 50
    return "_".join(tags + [f"ku{percent}"])


def is_built(name, out_dir="dataset", recipe=None):
    """Whether pair ``name`` exists in ``out_dir`` (with ``recipe``, built with exactly it)."""
    path = summary_path(out_dir, name)
    if not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return False
    if recipe is not None and summary.get("recipe") != recipe:
        return False
    if summary.get("version") != SUMMARY_VERSION:  # made by an older dataset_prep (e.g. without links)
        return False
    links = summary.get("overlap", {}).get("links_file")
    if links and not os.path.isfile(os.path.join(out_dir, links)):
        return False
    for role in ("source", "target"):
        dataset = summary["domains"][role]["dataset"]
        folder = os.path.join(out_dir, dataset)
        needed = [f"{dataset}.inter"] + [f"{dataset}.{m}.feat.npz" for m in summary["modalities"]]
        if not all(os.path.isfile(os.path.join(folder, n)) for n in needed):
            return False
    return True


def ensure_dataset(name, out_dir="dataset", properties_path="", progress=False, **overrides):
    """Build the named pair in ``out_dir`` unless it is already there; returns its summary path.

    Idempotent and cheap when present (reads one small JSON file and checks the files exist).
    Safe to call from several processes at once: one builds, the others wait and find it built.
    A pair built with other settings or from other shipped data is rebuilt. ``overrides`` may
    change the preset's settings (``seed``, ``target``, ``minilm``, ``cache_dir``, ...).
    ``properties_path``: '' (default) writes no yaml; None writes ``properties/<name>.yaml``.
    """
    settings = {**preset(name), **overrides}
    cache_dir = settings.pop("cache_dir", None)
    data_dir = settings.pop("data_dir", SHIPPED_DIR)
    keys = (
        "overlap_ratio",
        "kcore",
        "subset_users",
        "subset_single_users",
        "seed",
        "target",
        "minilm",
        "common_users_only",
    )
    unknown = sorted(set(settings) - set(keys))
    if unknown:
        raise PrepError(f"ensure_dataset: unknown setting(s) {unknown}; accepted: {list(keys)}")
    full = {**SETTING_DEFAULTS, **settings}
    recipe = _recipe(
        full["overlap_ratio"],
        full["kcore"],
        full["subset_users"],
        full["subset_single_users"],
        full["seed"],
        full["target"],
        full["minilm"],
        data_dir,
        full["common_users_only"],
    )
    with pair_lock(out_dir, name):  # a concurrent ensure_dataset waits, then finds it built
        if not is_built(name, out_dir, recipe):
            build(
                out_dir=out_dir,
                name=name,
                properties_path=properties_path,
                cache_dir=cache_dir,
                progress=progress,
                data_dir=data_dir,
                **full,
            )
    return summary_path(out_dir, name)
