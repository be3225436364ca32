"""On-disk multi-modal item features, and their alignment to the framework's item ids.

Format (one file per domain and modality, beside the domain's ``.inter`` file)::

    <data_path>/<dataset>/<dataset>.<modality>.feat.npz
        item_id : 1-D unicode array, the raw item tokens (as in the .inter file)
        feature : 2-D float array (n_items, d), row i belongs to item_id[i]

Rows are keyed by the raw token, never by row order. A domain may have any number of
named modalities (the paper uses ``visual`` and ``text``); the domain's config block lists
them under ``modalities``. The framework's own ``.item`` loading is not used (it crashes
and corrupts ids in recbole-cdr 0.1.0).

This module imports numpy only (no torch, no framework): the glue passes the tokens it wants
rows for, and data preparation writes the files through it without loading the framework.
"""

import os
import warnings

import numpy as np

FEATURE_SUFFIX = ".feat.npz"


class FeatureFileError(ValueError):
    """A feature file is missing or does not hold what the format above promises."""


def feature_path(dataset_dir, dataset, modality):
    """Path of the feature file of ``modality`` for ``dataset`` stored in ``dataset_dir``."""
    return os.path.join(dataset_dir, f"{dataset}.{modality}{FEATURE_SUFFIX}")


def write_item_features(path, item_tokens, features):
    """Write one modality's features, row i for ``item_tokens[i]``; validates before writing."""
    tokens = np.asarray([str(t) for t in item_tokens], dtype=str)
    matrix = np.asarray(features, dtype=np.float32)
    _validate(path, tokens, matrix)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, item_id=tokens, feature=matrix)
    os.replace(tmp, path)


def read_item_features(path):
    """Return ``(tokens, matrix)`` of a feature file, with clear errors for bad content."""
    if not os.path.isfile(path):
        raise FeatureFileError(f"feature file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"item_id", "feature"} - set(data.files)
            if missing:
                raise FeatureFileError(f"{path}: missing array(s) {sorted(missing)}; expected 'item_id' and 'feature'")
            tokens = data["item_id"].astype(str)
            matrix = data["feature"]
    except FeatureFileError:
        raise
    except Exception as exc:  # a corrupt zip, a pickled object array, ...
        raise FeatureFileError(f"{path}: not a readable .npz feature file ({exc})") from exc
    _validate(path, tokens, matrix)
    return tokens, matrix


def _validate(path, tokens, matrix):
    if tokens.ndim != 1:
        raise FeatureFileError(f"{path}: 'item_id' must be 1-D, got shape {tokens.shape}")
    if matrix.ndim != 2:
        raise FeatureFileError(
            f"{path}: 'feature' must be 2-D (items x dims), got shape {matrix.shape}; "
            "rows of different lengths are not allowed"
        )
    if matrix.shape[0] != tokens.shape[0]:
        raise FeatureFileError(f"{path}: {tokens.shape[0]} item ids but {matrix.shape[0]} feature rows")
    if not np.issubdtype(matrix.dtype, np.floating):
        raise FeatureFileError(f"{path}: 'feature' must be float, got {matrix.dtype}")
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise FeatureFileError(f"{path}: {int(bad.sum())} row(s) hold NaN or inf, first for item '{tokens[bad][0]}'")
    unique, counts = np.unique(tokens, return_counts=True)
    if (counts > 1).any():
        dup = unique[counts > 1]
        raise FeatureFileError(
            f"{path}: {len(dup)} duplicate item id(s), e.g. '{dup[0]}' appears {counts[counts > 1][0]} times"
        )


def align_item_features(path, item_tokens, missing="error"):
    """Rows of the file at ``path`` for ``item_tokens``, in that order, as float32 (len, d).

    Feature rows for items not in ``item_tokens`` are ignored. An item with no row is an
    error by default; ``missing='zero'`` fills zeros and warns with the count.
    """
    if missing not in ("error", "zero"):
        raise ValueError(f"missing must be 'error' or 'zero', got {missing!r}")
    tokens, matrix = read_item_features(path)
    row_of = {tok: i for i, tok in enumerate(tokens.tolist())}
    wanted = [str(t) for t in item_tokens]
    rows = np.array([row_of.get(tok, -1) for tok in wanted], dtype=np.int64)
    absent = rows < 0
    if absent.any():
        first = wanted[int(np.flatnonzero(absent)[0])]
        if missing == "error":
            raise FeatureFileError(
                f"{path}: {int(absent.sum())} item(s) of the data have no feature row, "
                f"e.g. '{first}' (set feature_missing: zero to fill zeros)"
            )
        warnings.warn(f"{path}: {int(absent.sum())} item(s) have no feature row (e.g. '{first}'); filled with zeros")
    out = np.zeros((len(wanted), matrix.shape[1]), dtype=np.float32)
    out[~absent] = matrix[rows[~absent]]
    return out


def load_modalities(dataset_dir, dataset, modalities, item_tokens, missing="error"):
    """``{modality: (len(item_tokens), d) float32}`` for a domain's items, in token order."""
    if not modalities:
        raise FeatureFileError(
            f"no modalities configured for dataset '{dataset}': list them under 'modalities' "
            "in the domain's config block"
        )
    return {m: align_item_features(feature_path(dataset_dir, dataset, m), item_tokens, missing) for m in modalities}
