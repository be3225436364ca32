"""Every model of the package, registered by name on import (see :mod:`sieoug_recbole.registry`).

Adding a model: one module with its class, one ``<Name>.yaml`` beside it, one line below.
"""
import os

from sieoug_recbole.models.bitgcf import BiTGCF
from sieoug_recbole.models.cmf import CMF
from sieoug_recbole.models.freedom import FREEDOM
from sieoug_recbole.models.lattice import LATTICE
from sieoug_recbole.models.lightgcn import LightGCN
from sieoug_recbole.models.neumf import NeuMF
from sieoug_recbole.models.pop import Pop
from sieoug_recbole.models.sieoug import SIEOUG
from sieoug_recbole.models.sieoug import VARIANTS as SIEOUG_VARIANTS
from sieoug_recbole.registry import register_model

_HERE = os.path.dirname(os.path.abspath(__file__))


def _yaml(name):
    return os.path.join(_HERE, f"{name}.yaml")


register_model(Pop, yaml_file=_yaml("Pop"))
register_model(LightGCN, yaml_file=_yaml("LightGCN"))
register_model(NeuMF, yaml_file=_yaml("NeuMF"))
register_model(LATTICE, yaml_file=_yaml("LATTICE"))
register_model(FREEDOM, yaml_file=_yaml("FREEDOM"))
register_model(CMF, yaml_file=_yaml("CMF"))
register_model(BiTGCF, yaml_file=_yaml("BiTGCF"))
register_model(SIEOUG, yaml_file=_yaml("SIEOUG"))
for _variant in SIEOUG_VARIANTS:  # SIEOUG-O, SIEOUG-M, SIEOUG-G: the same yaml, keys forced
    register_model(_variant, yaml_file=_yaml("SIEOUG"))
