"""Access to :mod:`sieoug_recbole.features` without importing the framework.

``sieoug_recbole/__init__.py`` imports recbole (it registers the models), but the feature
format module itself has no framework import. Data preparation must not pull in the
framework, so when the package is not imported yet this loads ``features.py`` on its own
from the package folder (found with :func:`importlib.util.find_spec`, which does not run
the package's ``__init__``).
"""
import importlib.util
import os
import sys

_MODULE = None


def features_module():
    """The ``sieoug_recbole.features`` module (or an identical standalone copy of it)."""
    global _MODULE
    if _MODULE is not None:
        return _MODULE
    if "sieoug_recbole.features" in sys.modules:
        _MODULE = sys.modules["sieoug_recbole.features"]
        return _MODULE
    spec = importlib.util.find_spec("sieoug_recbole")
    if spec is None or not spec.submodule_search_locations:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        folders = [os.path.join(here, "sieoug_recbole")]
    else:
        folders = list(spec.submodule_search_locations)
    for folder in folders:
        path = os.path.join(folder, "features.py")
        if os.path.isfile(path):
            file_spec = importlib.util.spec_from_file_location("_dataset_prep_features", path)
            module = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(module)
            _MODULE = module
            return module
    raise ImportError("sieoug_recbole/features.py not found (is sieoug_recbole installed?)")


def write_item_features(path, item_tokens, features):
    return features_module().write_item_features(path, item_tokens, features)


def feature_path(dataset_dir, dataset, modality):
    return features_module().feature_path(dataset_dir, dataset, modality)


def read_item_features(path):
    return features_module().read_item_features(path)
