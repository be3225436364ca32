"""Similarity item exploration (SIEOUG, WWW'25, Sec. 3.1 and Appendix A).

Pure functions over numpy / scipy arrays; nothing here imports RecBole.

Pipeline (one domain)::

    features[m] --knn_graph--> S_m   (Eq 1-2, one directed top-z graph per modality)   knn.py
    {S_m}       --risgf-----> A     (Eq 3-5, robust fusion, values in [0, 1])        fusion.py
    A           --sishe-----> gamma (Eq 6-10, balanced sparse soft clustering, N x K) clustering.py
                                     (inner transport problem, Eq 7-10: transport.py)

plus the two operators the model propagates with (operators.py): ``normalize_item_graph``
(Eq 12) and ``hypergraph_factors`` (Eq 13, kept factored).  ``build_item_structure``
(pipeline.py) runs the whole pipeline with an on-disk cache.  Design decisions are
documented in ``docs/similarity.md``.
"""

from .clustering import sishe
from .fusion import risgf
from .knn import knn_graph
from .operators import hypergraph_factors, normalize_item_graph
from .pipeline import CACHE_FORMAT_VERSION, ItemStructure, build_item_structure
from .transport import Transport, regularised_transport

__all__ = [
    "knn_graph",
    "risgf",
    "sishe",
    "regularised_transport",
    "Transport",
    "normalize_item_graph",
    "hypergraph_factors",
    "build_item_structure",
    "ItemStructure",
    "CACHE_FORMAT_VERSION",
]
