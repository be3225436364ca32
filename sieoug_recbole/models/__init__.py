"""Every model of the package, registered by name on import (see :mod:`sieoug_recbole.registry`).

Adding a model: one module with its class, one ``<Name>.yaml`` beside it, and its class in
:data:`MODELS` below (in the paper's Table 1 row order; ``table1=False`` keeps it out of the
Table 1 grids). A registered model is then in the Table 1 grid, the registry's smoke test and
the learning test against popularity, with no other list to edit.
"""

import os

from sieoug_recbole.models.base import forced_variant
from sieoug_recbole.models.bitgcf import BiTGCF
from sieoug_recbole.models.cl_dtcdr import CLDTCDR
from sieoug_recbole.models.cmf import CMF
from sieoug_recbole.models.disencdr import DisenCDR
from sieoug_recbole.models.duration import DURation
from sieoug_recbole.models.etl import ETL
from sieoug_recbole.models.freedom import FREEDOM
from sieoug_recbole.models.lattice import LATTICE
from sieoug_recbole.models.lgmrec import LGMRec
from sieoug_recbole.models.lightgcn import LightGCN
from sieoug_recbole.models.motkd import MOTKD
from sieoug_recbole.models.neumf import NeuMF
from sieoug_recbole.models.pop import Pop
from sieoug_recbole.models.sieoug import SIEOUG
from sieoug_recbole.models.sieoug import VARIANTS as SIEOUG_VARIANTS
from sieoug_recbole.models.vdea import VDEA
from sieoug_recbole.registry import register_model

_HERE = os.path.dirname(os.path.abspath(__file__))

# (model class, in Table 1) in the paper's row order: single-domain, cross-domain, SIEOUG
MODELS = [
    (Pop, False),
    (NeuMF, True),
    (LightGCN, True),
    (LATTICE, True),
    (FREEDOM, True),
    (LGMRec, True),
    (CMF, True),
    (BiTGCF, True),
    (DisenCDR, True),
    (VDEA, True),
    (ETL, True),
    (DURation, True),
    (CLDTCDR, True),
    (MOTKD, True),
]
# baselines that also run with GOUM's guidance (the paper's Fig. 5 extension): "<Name>+GOUM"
GUIDED = [LightGCN, LATTICE, FREEDOM, LGMRec]


def _yaml(name):
    return os.path.join(_HERE, f"{name}.yaml")


for _model, _in_table1 in MODELS:
    register_model(_model, yaml_file=_yaml(_model.__name__), table1=_in_table1)
for _variant in SIEOUG_VARIANTS:  # SIEOUG-O, SIEOUG-M, SIEOUG-G: SIEOUG's yaml, keys forced
    register_model(_variant, yaml_file=_yaml("SIEOUG"), table1=True)
register_model(SIEOUG, yaml_file=_yaml("SIEOUG"), table1=True)
for _model in GUIDED:
    _guided = forced_variant(
        _model,
        f"{_model.__name__}+GOUM",
        f"{_model.__name__} with GOUM's overlapped user guidance (guidance: goum).",
        __name__,
        guidance="goum",
    )
    globals()[_guided.__name__] = _guided  # checkpoints pickle the class by its module and name
    register_model(_guided, yaml_file=_yaml(_model.__name__), table1=True)
