"""The grid of a benchmark: models x tasks x seeds, its run specs and their identity.

A *spec* is one training run as a plain dict (it travels as JSON to the worker process)::

    {"model": "LightGCN", "task": "food_kitchen", "k_u": 0.1,
     "config_files": ["properties/food_kitchen_ku10.yaml"], "seed": 2022,
     "overrides": {"train_epochs": ["BOTH:300"]}, "sweep": null}

``overrides`` are every config value the grid sets on top of the task's yaml files (grid-wide
``config``, ``epochs``, the model's ``model_config``, a sweep value), except the seed and what the
harness always sets itself (see :data:`HARNESS_KEYS`). A run is identified by
:func:`run_key`: (model, task, K_u, seed, hash of the overrides); the results file holds at most
one finished run per key that counts (see :mod:`.records`).
"""

import hashlib
import itertools
import json
import os
import re

import yaml


def table1_models():
    """The models of the Table 1 grids: every model registered with ``table1=True``, in
    registration order (the paper's row order; :mod:`sieoug_recbole.models`)."""
    import sieoug_recbole  # noqa: F401  (registers the models)
    from sieoug_recbole.registry import table1_models as registered

    return registered()


DEFAULT_SEEDS = [2022, 2023, 2024]
FAMILY_PREFIX = "SIEOUG"  # SIEOUG and its variants; every other model is a baseline

# Config keys the harness sets for every run (not part of a run's identity).
HARNESS_KEYS = (
    "seed",
    "dual_domain_eval",
    "checkpoint_dir",
    "training_state_file",
    "end_at_training_state",
    "show_progress",
)

# Paper symbols accepted for config keys in --sweep and --sensitivity.
KEY_ALIASES = {
    "lambda": "guide_lambda",
    "eps": "ot_eps",
    "epsilon": "ot_eps",
    "K": "n_clusters",
    "clusters": "n_clusters",
    "z": "knn_k",
    "mu": "risgf_mu",
    "eta": "sishe_eta",
}

GRID_KEYS = {"models", "tasks", "seeds", "epochs", "config", "model_config", "sweep"}


class GridError(ValueError):
    """A malformed grid file or command-line grid option."""


def resolve_key(key):
    """A config key from a paper symbol (``lambda`` -> ``guide_lambda``) or the key itself."""
    return KEY_ALIASES.get(key, key)


class _Loader(yaml.SafeLoader):
    """YAML as RecBole's config reads it: ``1e-3`` is a float (YAML 1.1, PyYAML's default,
    wants a dot in the mantissa and would give the string '1e-3')."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_yaml(stream):
    """A yaml document (text or open file) with exponent floats read as numbers."""
    return yaml.load(stream, Loader=_Loader)


def parse_value(text):
    """A command-line value as yaml reads it: ``0.6`` -> 0.6, ``1e-3`` -> 0.001, ``True`` ->
    True, ``[a]`` -> list."""
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def parse_assignment(text):
    """``key=value`` -> (key, parsed value)."""
    if "=" not in text:
        raise GridError(f"expected key=value, got '{text}'")
    key, value = text.split("=", 1)
    if not key.strip():
        raise GridError(f"empty key in '{text}'")
    return key.strip(), parse_value(value)


def parse_k_u(text):
    """K_u from ``0.1`` or ``10%``; None for an empty string."""
    text = str(text).strip()
    if text in ("", "~", "None", "null"):
        return None
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise GridError(f"K_u must be a number in [0, 1] or a percentage, got '{text}'") from None
    if not 0.0 <= value <= 1.0:
        raise GridError(f"K_u must be in [0, 1], got {value}")
    return round(value, 6)


def parse_task(text):
    """A task from ``label:K_u=a.yaml[,b.yaml]`` (``label=a.yaml`` when there is no K_u)."""
    if "=" not in text:
        raise GridError(f"a task is label:K_u=path.yaml, got '{text}'")
    head, paths = text.split("=", 1)
    label, _, k_u = head.partition(":")
    files = [p.strip() for p in paths.split(",") if p.strip()]
    return make_task(label.strip(), parse_k_u(k_u), files)


def make_task(label, k_u, files):
    if not label:
        raise GridError("a task needs a label")
    if isinstance(files, str):
        files = [files]
    if not files:
        raise GridError(f"task '{label}' has no yaml file")
    return {
        "label": str(label),
        "k_u": None if k_u is None else parse_k_u(k_u),
        "config_files": [str(f) for f in files],
    }


def parse_seeds(text):
    """``2022,2023`` -> [2022, 2023]."""
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise GridError(f"seeds are comma-separated integers, got '{text}'") from None
    if not seeds:
        raise GridError("no seeds given")
    return seeds


def parse_sweep(text):
    """``guide_lambda=0,0.2,0.6`` -> ('guide_lambda', [0, 0.2, 0.6]) (aliases resolved)."""
    if "=" not in text:
        raise GridError(f"a sweep is key=v1,v2,..., got '{text}'")
    key, values = text.split("=", 1)
    values = [parse_value(v) for v in values.split(",") if v.strip()]
    if not key.strip() or not values:
        raise GridError(f"a sweep is key=v1,v2,..., got '{text}'")
    return resolve_key(key.strip()), values


def load_grid(path):
    """Read a grid yaml (see docs/benchmark.md) into a normalised dict.

    Relative task yaml paths are kept as written when they exist from the current directory,
    else taken relative to the grid file's folder.
    """
    try:
        with open(path, encoding="utf-8") as f:
            raw = load_yaml(f) or {}
    except OSError as exc:
        raise GridError(f"grid file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise GridError(f"grid file {path} is not valid yaml: {exc}") from None
    if not isinstance(raw, dict):
        raise GridError(f"{path}: a grid file is a mapping")
    unknown = set(raw) - GRID_KEYS
    if unknown:
        raise GridError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(GRID_KEYS)}")
    grid = {}
    if "models" in raw:
        models = raw["models"]
        if isinstance(models, str) or not all(isinstance(m, str) for m in models or []):
            raise GridError(f"{path}: models is a list of names")
        grid["models"] = list(models)
    if "tasks" in raw:
        tasks = []
        for entry in raw["tasks"] or []:
            if not isinstance(entry, dict) or "label" not in entry or "yaml" not in entry:
                raise GridError(f"{path}: each task needs label, yaml (and k_u), got {entry!r}")
            files = entry["yaml"] if isinstance(entry["yaml"], list) else [entry["yaml"]]
            files = [_locate(f, path) for f in files]
            tasks.append(make_task(entry["label"], entry.get("k_u"), files))
        grid["tasks"] = tasks
    if "seeds" in raw:
        seeds = raw["seeds"]
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
            raise GridError(f"{path}: seeds is a non-empty list of integers")
        grid["seeds"] = seeds
    if raw.get("epochs") is not None:
        epochs = raw["epochs"]
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise GridError(f"{path}: epochs is a positive integer, got {epochs!r}")
        grid["epochs"] = epochs
    for key in ("config", "model_config"):
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            raise GridError(f"{path}: {key} is a mapping")
        grid[key] = value
    for name, block in grid.get("model_config", {}).items():
        if not isinstance(block, dict):
            raise GridError(f"{path}: model_config.{name} is a mapping")
        if "models" in grid and name not in grid["models"]:
            raise GridError(f"{path}: model_config.{name}: {name} is not in the grid's models")
    if raw.get("sweep"):
        if not isinstance(raw["sweep"], dict):
            raise GridError(f"{path}: sweep is a mapping key -> list of values")
        grid["sweep"] = {resolve_key(k): (v if isinstance(v, list) else [v]) for k, v in raw["sweep"].items()}
    return grid


def _locate(file, grid_path):
    """``file`` as written if it exists from here, else from the grid's folder or the nearest
    folder above it where it exists (a grid in benchmarks/ names repo-root paths)."""
    if os.path.isabs(file) or os.path.exists(file):
        return file
    folder = os.path.dirname(os.path.abspath(grid_path))
    while True:
        candidate = os.path.join(folder, file)
        if os.path.exists(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return file
        folder = parent


def epochs_override(epochs):
    return {"train_epochs": [f"BOTH:{int(epochs)}"]}


def expand(models, tasks, seeds, config=None, model_config=None, epochs=None, sweep=None, takes=None):
    """Every spec of a grid, seed-major (a finished seed gives a complete table first).

    ``sweep``: {key: [values]}; each combination of values is one more override (the runs are
    tagged with ``sweep`` so that :mod:`.report` leaves them out of Table 1). ``takes(model,
    key)``: whether a sweep key applies to a model (default: every key to every model); a model
    is swept over the keys it takes only, and one that takes none runs once, unswept.
    """
    config = dict(config or {})
    model_config = model_config or {}
    for key in HARNESS_KEYS:
        for where, block in [("config", config)] + [(f"model_config.{m}", b) for m, b in model_config.items()]:
            if key in block:
                raise GridError(
                    f"{where}: '{key}' is set by the harness (use seeds for the seed, "
                    "run --finish for end_at_training_state)"
                )

    def combos_of(model):
        items = [(k, v) for k, v in (sweep or {}).items() if takes is None or takes(model, k)]
        return (
            [dict(zip([k for k, _ in items], values)) for values in itertools.product(*[v for _, v in items])]
            if items
            else [None]
        )

    combos = {model: combos_of(model) for model in models}
    specs = []
    for seed in seeds:
        for task in tasks:
            for model in models:
                for combo in combos[model]:
                    overrides = dict(config)
                    if epochs is not None:
                        overrides.update(epochs_override(epochs))
                    overrides.update(model_config.get(model, {}))
                    if combo:
                        overrides.update(combo)
                    specs.append(
                        {
                            "model": model,
                            "task": task["label"],
                            "k_u": task["k_u"],
                            "config_files": list(task["config_files"]),
                            "seed": int(seed),
                            "overrides": overrides,
                            "sweep": combo,
                        }
                    )
    return specs


def _canonical(value):
    """Numbers as floats (1 and 1.0 are one setting), mappings sorted: for hashing only."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return str(value)


def overrides_hash(overrides):
    """A short stable hash of a run's overrides (key order and 1 vs 1.0 do not matter)."""
    text = json.dumps(_canonical(overrides or {}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def norm_k_u(k_u):
    return None if k_u is None else round(float(k_u), 6)


def run_key(spec):
    """(model, task, K_u, seed, overrides hash): what makes two runs the same run."""
    return (
        spec["model"],
        spec["task"],
        norm_k_u(spec.get("k_u")),
        int(spec["seed"]),
        spec.get("overrides_hash") or overrides_hash(spec.get("overrides")),
    )


def run_id(spec):
    """A folder name for a run: readable and unique per key."""
    k_u = "" if spec.get("k_u") is None else f"-ku{norm_k_u(spec['k_u']):g}"
    text = f"{spec['model']}-{spec['task']}{k_u}-s{spec['seed']}-{run_key(spec)[4][:8]}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def is_family(model, prefix=FAMILY_PREFIX):
    """SIEOUG and its variants (SIEOUG-O, -M, -G)."""
    return model == prefix or model.startswith(prefix + "-")


GUIDED_SUFFIX = "+GOUM"  # X+GOUM: model X with SIEOUG's guidance (sieoug_recbole/models/__init__.py)


def guided_base(model, models):
    """X when ``model`` is ``X+GOUM`` and X is among ``models``; else None."""
    base = model[: -len(GUIDED_SUFFIX)]
    return base if model.endswith(GUIDED_SUFFIX) and base in models else None


def family_of(ours):
    """The family whose models are not baselines of ``ours`` (the model a report's gains and
    paired tests are about): SIEOUG's (SIEOUG, SIEOUG-*) for ours in it, else ``ours`` and its
    ``<ours>-*`` variants."""
    return FAMILY_PREFIX if is_family(ours) else ours
