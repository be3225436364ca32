"""Our models, by name, made visible to RecBole-CDR's own lookups.

RecBole-CDR finds a model by importing ``recbole_cdr.model.cross_domain_recommender.<name
lowercased>`` and a trainer as ``recbole_cdr.trainer.<Name>Trainer``. Its wheel ships neither
that package nor any model, so :func:`register_model` installs a small alias module per model
under that package name (and the trainer as an attribute of ``recbole_cdr.trainer``). The stock
``run_recbole_cdr``, ``objective_function``, ``get_model`` and ``get_trainer`` then work
unchanged. Each model's default yaml is read by the config repair in :mod:`.compat`, and
its dataset class (``<Name>Dataset``) is :class:`~.dual_domain.PluginCrossDomainDataset`.
"""

import functools
import importlib.machinery
import os
import sys
import types

import recbole_cdr.data.dataset
import recbole_cdr.trainer

from sieoug_recbole.dual_domain import PluginCrossDomainDataset
from sieoug_recbole.trainer import PluginTrainer

MODEL_PACKAGE = "recbole_cdr.model.cross_domain_recommender"

_MODELS = {}  # name -> (model class, yaml path or None, trainer class or None)
_TABLE1 = []  # names of the models of the Table 1 grids, in registration order
# settings every registered model reads (id layout, selection, ...), loaded before a model's yaml
DEFAULTS_YAML = os.path.join(os.path.dirname(os.path.abspath(__file__)), "defaults.yaml")


def _model_package():
    package = sys.modules.get(MODEL_PACKAGE)
    if package is None:
        import recbole_cdr.model as parent

        package = types.ModuleType(MODEL_PACKAGE)
        package.__path__ = []
        package.__spec__ = importlib.machinery.ModuleSpec(MODEL_PACKAGE, None, is_package=True)
        sys.modules[MODEL_PACKAGE] = package
        parent.cross_domain_recommender = package
    return package


def register_model(model_class, name=None, yaml_file=None, trainer=None, table1=False):
    """Register ``model_class`` under ``name`` (default: its ``__name__``).

    ``yaml_file``: its default config (read before the user's files). ``trainer``: the trainer
    class RecBole-CDR's ``get_trainer`` returns for this model (default :class:`PluginTrainer`).
    ``table1``: the model is a row of the Table 1 grids (:func:`table1_models`).
    """
    name = name or model_class.__name__
    trainer = trainer or PluginTrainer
    if yaml_file is not None:
        if not os.path.isfile(yaml_file):
            raise FileNotFoundError(f"default yaml of model '{name}' not found: {yaml_file}")
        yaml_file = os.path.abspath(yaml_file)  # a later chdir must not change which file it is
    _MODELS[name] = (model_class, yaml_file, trainer)
    if table1 and name not in _TABLE1:
        _TABLE1.append(name)

    module_name = f"{MODEL_PACKAGE}.{name.lower()}"
    alias = types.ModuleType(module_name)
    alias.__spec__ = importlib.machinery.ModuleSpec(module_name, None)
    setattr(alias, name, model_class)
    sys.modules[module_name] = alias
    setattr(_model_package(), name.lower(), alias)
    setattr(recbole_cdr.trainer, f"{name}Trainer", trainer)
    # create_dataset looks for '<model>Dataset': ours adds the optional dual-domain hold-out
    setattr(recbole_cdr.data.dataset, f"{name}Dataset", PluginCrossDomainDataset)
    return model_class


def model_names():
    """Names of every registered model, in registration order."""
    return list(_MODELS)


def table1_models():
    """Names of the models registered as Table 1 rows, in registration order."""
    return list(_TABLE1)


def get_model_class(model):
    """The class of a registered model name, or ``model`` itself if it is a class."""
    if not isinstance(model, str):
        return model
    if model not in _MODELS:
        raise ValueError(f"unknown model '{model}'; registered models: {', '.join(_MODELS)}")
    return _MODELS[model][0]


def is_registered(model):
    """Whether ``model`` (a name or class) is registered here."""
    name = model if isinstance(model, str) else getattr(model, "__name__", None)
    return name in _MODELS


def model_yaml(model):
    """Default yaml of a registered model (name or class), or None."""
    name = model if isinstance(model, str) else model.__name__
    entry = _MODELS.get(name)
    return entry[1] if entry else None


def model_yaml_keys(model):
    """Top-level keys of a registered model's default yaml (empty when it has none): what the
    override warning of :mod:`.quick_start` and the harness's sweeps check keys against."""
    file = model_yaml(model)
    return yaml_file_keys(file) if file else frozenset()


def yaml_file_keys(file):
    """Top-level keys of a yaml file (read once per version of the file)."""
    return _yaml_keys(os.path.abspath(file), os.stat(file).st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _yaml_keys(file, modified):
    """Top-level keys of a yaml file; ``modified`` (its mtime) keys the cache, so an edited
    file is read again."""
    import yaml

    with open(file, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return frozenset(data) if isinstance(data, dict) else frozenset()
