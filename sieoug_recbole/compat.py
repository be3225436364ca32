"""Repairs of recbole 1.0.1 / recbole-cdr 0.1.0 on a current Python stack.

Only these two framework versions work together, and both predate numpy 2 and torch 2.6.
Each defect gets one small, named function below; :func:`apply` runs them all once (it is
idempotent) and is called by ``import sieoug_recbole``. The framework's original callables
are kept in :data:`ORIGINALS` so that tests can show each defect before its repair.
Functions used instead of a broken framework one, without patching it, live where they are
used: :func:`sieoug_recbole.checkpoint.load_checkpoint` and
:func:`sieoug_recbole.domain_data.id2token`.
"""

import functools
import warnings

import numpy as np

from sieoug_recbole.id_layout import IdRanges
from sieoug_recbole.registry import DEFAULTS_YAML, is_registered, model_yaml

ORIGINALS = {}
_APPLIED = False

# Top-level keys that recbole's sampled evaluation reads but recbole-cdr never sets. The
# framework evaluates the target domain, whose fields it renames with a ``target_`` prefix.
DEFAULT_TOP_LEVEL_KEYS = {
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "LABEL_FIELD": "label",
    "NEG_PREFIX": "neg_",
}
PREFIXED_KEYS = ("USER_ID_FIELD", "ITEM_ID_FIELD", "LABEL_FIELD")


def fix_numpy_float_alias():
    """recbole's metrics and ``Interaction`` use ``np.float``, removed in numpy 1.24.

    Sets the alias to the builtin ``float`` (what it always was) only where numpy lacks it.
    """
    if "float" not in np.__dict__:
        np.float = float


def fix_source_sampler_off_by_one():
    """recbole-cdr's source-domain negative sampler can draw target-only items.

    ``CrossDomainSourceSampler`` adds one to ``num_overlap_item``, which already counts the
    padding id 0. Its candidate list therefore includes id ``num_overlap_item`` (the first
    target-only item) and skips the last source-only item. We recompute the candidates from
    the dataset's own counts after construction.
    """
    from recbole_cdr.sampler import crossdomain_sampler

    cls = crossdomain_sampler.CrossDomainSourceSampler
    if "CrossDomainSourceSampler.__init__" in ORIGINALS:
        return
    original = cls.__init__
    ORIGINALS["CrossDomainSourceSampler.__init__"] = original

    @functools.wraps(original)
    def __init__(self, phases, dataset, built_datasets, distribution="uniform"):
        original(self, phases, dataset, built_datasets, distribution)
        ranges = IdRanges.of(dataset)
        self.overlapped_item_num = ranges.overlap_items
        self.overlapped_user_num = ranges.overlap_users
        self.item_num = ranges.domain_size("item", "source")
        self.item_id_list = ranges.domain_ids("item", "source")[1:]  # (padding excluded)
        self.user_id_list = ranges.domain_ids("user", "source")[1:]

    cls.__init__ = __init__


def fix_source_graph_holds_source_validation():
    """recbole-cdr's source ``inter_matrix`` keeps the SOURCE phase's validation interactions.

    With a SOURCE phase in ``train_epochs`` (``source_split``), ``CrossDomainDataset.build``
    splits the source interactions into a training and a validation part; the SOURCE and BOTH
    phases train on the first and the SOURCE phase selects its epoch on the second, but
    ``inter_matrix(domain='source')``, from which models build their graphs and popularity,
    still reads the whole source data (the target's always reads its training part). We keep
    the source training part that ``build`` makes and read it there.
    """
    from recbole_cdr.data.dataset import CrossDomainDataset

    if "CrossDomainDataset.build" in ORIGINALS:
        return
    original_build, original_inter_matrix = CrossDomainDataset.build, CrossDomainDataset.inter_matrix
    ORIGINALS["CrossDomainDataset.build"] = original_build
    ORIGINALS["CrossDomainDataset.inter_matrix"] = original_inter_matrix

    @functools.wraps(original_build)
    def build(self):
        datasets = original_build(self)  # [source train, source valid or None, target train, valid, test]
        self._source_train_part = datasets[0] if datasets[1] is not None else None
        return datasets

    @functools.wraps(original_inter_matrix)
    def inter_matrix(self, form="coo", value_field=None, domain="source"):
        part = getattr(self, "_source_train_part", None)
        if domain == "source" and part is not None:
            return part.get_sparse_matrix(self.num_total_user, self.num_total_item, form, value_field)
        return original_inter_matrix(self, form, value_field, domain)

    CrossDomainDataset.build = build
    CrossDomainDataset.inter_matrix = inter_matrix


def fix_config_defaults():
    """Fill config keys the framework needs but does not set, and load our models' yaml.

    - recbole's sampled evaluation reads top-level ``USER_ID_FIELD``, ``ITEM_ID_FIELD``,
      ``LABEL_FIELD`` and ``NEG_PREFIX``, which recbole-cdr only sets per domain: we set
      them to the target domain's (prefixed) field names, which it evaluates;
    - recbole-cdr's packaged ``sample.yaml`` sets ``data_path: dataset/`` inside each domain
      block, which silently overrides a user's top-level ``data_path``: we drop those two
      internal defaults, so a domain's ``data_path`` is the user's, else the top-level one;
    - the stock config reads model yaml only from inside recbole_cdr: we add the yaml of
      models registered by this package (see :mod:`sieoug_recbole.registry`).
    """
    from recbole_cdr.config.configurator import CDRConfig

    if "CDRConfig._load_internal_config_dict" in ORIGINALS:
        return
    original = CDRConfig._load_internal_config_dict
    ORIGINALS["CDRConfig._load_internal_config_dict"] = original

    @functools.wraps(original)
    def _load_internal_config_dict(self, model, model_class, dataset):
        original(self, model, model_class, dataset)
        internal = self.internal_config_dict
        for domain in ("source_domain", "target_domain"):
            internal.get(domain, {}).pop("data_path", None)
        target = {
            **DEFAULT_TOP_LEVEL_KEYS,
            **internal.get("target_domain", {}),
            **self.external_config_dict.get("target_domain", {}),
        }
        for key in DEFAULT_TOP_LEVEL_KEYS:
            value = f"target_{target[key]}" if key in PREFIXED_KEYS else target[key]
            internal.setdefault(key, value)
        if is_registered(model):  # the package's shared defaults, then the model's own
            self._update_internal_config_dict(DEFAULTS_YAML)
        yaml_file = model_yaml(model)
        if yaml_file is not None:
            self._update_internal_config_dict(yaml_file)

    CDRConfig._load_internal_config_dict = _load_internal_config_dict


def quiet_pandas_chained_fillna_warning():
    """recbole calls ``df[col].fillna(inplace=True)``, which still works on pandas 2.x (we
    require pandas < 3, where it silently stops working) but warns on every load."""
    warnings.filterwarnings(
        "ignore", message="A value is trying to be set on a copy of a DataFrame", category=FutureWarning
    )


def apply():
    """Apply every repair once; later calls do nothing."""
    global _APPLIED
    if _APPLIED:
        return
    quiet_pandas_chained_fillna_warning()
    fix_numpy_float_alias()
    fix_source_sampler_off_by_one()
    fix_source_graph_holds_source_validation()
    fix_config_defaults()
    _APPLIED = True
