"""The whole item structure of one domain (kNN per modality -> RISGF -> SISHE) with a disk cache."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections import namedtuple
from typing import Mapping

import numpy as np
import scipy.sparse as sp

from sieoug_recbole.checks import integer_in_range, positive_number
from sieoug_recbole.jsonable import jsonable

from ._inputs import as_feature_matrix
from .clustering import sishe
from .fusion import risgf
from .knn import choose_backend, faiss_signature, knn_graph

#: bump when anything that changes the cached arrays changes (algorithm, defaults, layout)
CACHE_FORMAT_VERSION = 3

ItemStructure = namedtuple("ItemStructure", ["A", "gamma", "info"])
ItemStructure.__doc__ = """Result of build_item_structure: ``A`` (N, N) csr fused item graph,
``gamma`` (N, K) csr clustering, ``info`` dict (timings, sishe history, densities, cache)."""

# fixed knobs of the pipeline that are not arguments of build_item_structure; part of the key
# ('auto' is replaced by the backend it resolves to, see _resolved_params)
_PIPELINE_DEFAULTS = {
    "knn_backend": "auto",
    "risgf_max_iter": 100,
    "risgf_tol": 1e-6,
    "sishe_max_iter": 300,
    "sishe_tol": 1e-6,
    "sishe_inner_max_iter": 2000,
    "sishe_init": "spectral",
}


def _cache_key(features, params):
    h = hashlib.sha256()
    h.update(f"sieoug-item-structure-v{CACHE_FORMAT_VERSION}\0".encode())
    h.update(json.dumps(params, sort_keys=True).encode())
    for name in sorted(features):
        x = features[name]
        header = json.dumps([name, x.dtype.str, list(x.shape)])
        h.update(b"\0mod\0" + header.encode() + b"\0")
        h.update(memoryview(np.ascontiguousarray(x)).cast("B"))
    return h.hexdigest()


def _atomic_write(path, writer):
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _resolved_params(params, n):
    """params with the kNN backend that 'auto' picks for N items; a faiss build also records
    faiss's version and search settings (they change the graph)."""
    params = dict(params)
    if params["knn_backend"] == "auto":
        params["knn_backend"] = choose_backend(n)
    if params["knn_backend"] == "faiss":
        params["knn_faiss"] = faiss_signature()
    return params


def _load_cached(paths, key):
    """The cached ItemStructure, or None when any of its files is missing."""
    if not all(os.path.exists(p) for p in paths.values()):
        return None
    A = sp.load_npz(paths["A.npz"]).tocsr()
    gamma = sp.load_npz(paths["gamma.npz"]).tocsr()
    with open(paths["info.json"], encoding="utf-8") as fh:
        info = json.load(fh)
    info["cache_hit"] = True
    info["cache_key"] = key
    return ItemStructure(A, gamma, info)


def _store(paths, result):
    _atomic_write(paths["A.npz"], lambda p: sp.save_npz(p, result.A, compressed=True))
    _atomic_write(paths["gamma.npz"], lambda p: sp.save_npz(p, result.gamma, compressed=True))

    def write_info(p):
        with open(p, "w", encoding="utf-8") as fh:
            json.dump(result.info, fh)

    _atomic_write(paths["info.json"], write_info)


def _checked_features(features):
    """The modalities in sorted-name order as checked (N, d) arrays, and N."""
    if not isinstance(features, Mapping) or len(features) == 0:
        raise ValueError("features must be a non-empty dict: modality name -> (N, d) array")
    feats = {}
    for name in sorted(features, key=str):
        if not isinstance(name, str):
            raise ValueError(f"features: modality names must be strings, got {name!r}")
        feats[name] = as_feature_matrix(features[name], name=f"features[{name!r}]")
    ns = {name: x.shape[0] for name, x in feats.items()}
    if len(set(ns.values())) != 1:
        raise ValueError(f"features: all modalities must have the same number of rows, got {ns}")
    return feats, next(iter(ns.values()))


def _compute(feats, params, key, progress):
    """Run the three steps (timed, with a tqdm bar); returns ItemStructure with a JSON-able info."""
    from tqdm.auto import tqdm

    n = next(iter(feats.values())).shape[0]
    z, include_self = params["z"], params["include_self"]
    info = {
        "params": params,
        "modalities": list(feats),
        "n_items": n,
        "timings": {},
        "knn_nnz": {},
        "cache_hit": False,
        "cache_key": key,
    }
    bar = tqdm(total=len(feats) + 2, desc="item structure", disable=not progress)

    def timed(label, fn):
        bar.set_postfix_str(label)
        t0 = time.perf_counter()
        out = fn()
        info["timings"][label] = time.perf_counter() - t0
        bar.update(1)
        return out

    try:
        graphs = []
        for name, x in feats.items():
            g = timed(
                f"knn[{name}]",
                lambda: knn_graph(
                    x,
                    min(z, n - 1 if not include_self else n),
                    include_self=include_self,
                    backend=params["knn_backend"],
                ),
            )
            info["knn_nnz"][name] = int(g.nnz)
            graphs.append(g)
        A, info["risgf"] = timed(
            "risgf",
            lambda: risgf(graphs, params["mu"], params["risgf_max_iter"], params["risgf_tol"], return_info=True),
        )
        gamma, info["sishe"] = timed(
            "sishe",
            lambda: sishe(
                A,
                params["n_clusters"],
                params["eta"],
                seed=params["seed"],
                max_iter=params["sishe_max_iter"],
                tol=params["sishe_tol"],
                inner_max_iter=params["sishe_inner_max_iter"],
                return_history=True,
                init=params["sishe_init"],
            ),
        )
    finally:
        bar.close()
    info["density"] = {"A": A.nnz / float(n * n), "gamma": gamma.nnz / float(n * params["n_clusters"])}
    return ItemStructure(A, gamma, jsonable(info))


def build_item_structure(
    features, z=5, mu=0.1, eta=0.1, n_clusters=15, seed=0, include_self=False, cache_dir=None, progress=True
):
    """kNN per modality -> RISGF -> SISHE, with an optional on-disk cache.

    Parameters
    ----------
    features : dict modality name -> (N, d) array (all modalities have the same N).  The
        modalities are processed in sorted-name order, so the dict order is irrelevant.
    z, mu, eta, n_clusters : paper's top-z, RISGF mu, SISHE eta and K (defaults 5, 0.1, 0.1, 15)
    seed : SISHE initialisation seed
    include_self : keep self-edges in the kNN graphs (see ``knn_graph``); z is capped at
        N - 1 (N with self-edges) for catalogues smaller than z + 1
    cache_dir : if given, results are stored as ``<key>_A.npz``, ``<key>_gamma.npz`` (scipy
        sparse npz, no pickle) and ``<key>_info.json``, where key = sha256 over a format
        version, every parameter (and the pipeline's fixed knobs) and, per modality, its
        name, dtype, shape and raw bytes.  A hit sets ``info['cache_hit'] = True``.
    progress : show a tqdm bar over the steps

    Returns
    -------
    ItemStructure(A, gamma, info)
    """
    feats, n = _checked_features(features)
    params = {
        "z": integer_in_range(z, "z", 1),
        "mu": positive_number(mu, "mu"),
        "eta": positive_number(eta, "eta"),
        "n_clusters": integer_in_range(n_clusters, "n_clusters", 1, n),
        "seed": integer_in_range(seed, "seed", 0),
        "include_self": bool(include_self),
        **_PIPELINE_DEFAULTS,
    }
    params = _resolved_params(params, n)
    if cache_dir is None:
        return _compute(feats, params, None, progress)
    # hash the caller's arrays as given (dtype included), not the converted copies
    key = _cache_key({name: np.asarray(features[name]) for name in feats}, params)
    os.makedirs(cache_dir, exist_ok=True)
    paths = {s: os.path.join(cache_dir, f"{key}_{s}") for s in ("A.npz", "gamma.npz", "info.json")}
    cached = _load_cached(paths, key)
    if cached is not None:
        return cached
    result = _compute(feats, params, key, progress)
    _store(paths, result)
    return result
