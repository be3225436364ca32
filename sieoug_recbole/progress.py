"""The few lines a person reads while a model trains: data ready, model built, one line per
validation, the best epoch.

They are logged to :data:`PROGRESS` (``sieoug_recbole.progress``), so they also go wherever
RecBole's logging goes (its log file under ``log/``). :func:`show_progress_only` leaves the
console only these lines, warnings and errors (``run_sieoug.py`` without ``--verbose``); the
log file keeps everything (the config dump, RecBole's per-epoch lines).
"""

import logging

PROGRESS = logging.getLogger("sieoug_recbole.progress")


def _progress_or_warning(record):
    return record.name == PROGRESS.name or record.levelno >= logging.WARNING


def show_progress_only():
    """From now on the root logger's console handlers (RecBole's ``init_logger`` installs
    one) show only :data:`PROGRESS` lines, warnings and errors; its file handlers still get
    every record."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            if _progress_or_warning not in handler.filters:
                handler.addFilter(_progress_or_warning)


def report_data_ready(config, dataset, seconds):
    """One line: the two domains' datasets and sizes, loaded and split in ``seconds``."""
    parts = [
        f"{domain} {config[f'{domain}_domain']['dataset']} "
        f"({getattr(dataset, f'{domain}_domain_dataset').inter_num:,} interactions)"
        for domain in ("source", "target")
    ]
    PROGRESS.info(
        f"data ready in {seconds:.1f} s: {', '.join(parts)}; {dataset.num_total_user:,} users, "
        f"{dataset.num_total_item:,} items in all"
    )


def report_model_built(config, seconds):
    """One line: the model is built (its graphs and item structures too) in ``seconds``."""
    PROGRESS.info(f"model {config['model']} built in {seconds:.1f} s (its graphs included)")


class EpochProgress:
    """The trainer's ``callback_fn``: one line per validation (``epoch k/N (PHASE): valid
    <metric> = score``), and :meth:`report_best` at the end."""

    def __init__(self, trainer, metric):
        self.trainer, self.metric = trainer, metric
        self.best = None  # (phase, epoch, score) of the best validation of the last phase

    def __call__(self, epoch_idx, valid_score):
        trainer = self.trainer
        phase = trainer.model.phase
        improved = trainer.cur_step == 0  # the framework's early stopping just reset its count
        if improved:
            self.best = (phase, epoch_idx + 1, valid_score)
        PROGRESS.info(
            f"epoch {epoch_idx + 1}/{trainer.epochs} ({phase}): valid {self.metric} = "
            f"{valid_score:.4f}{' (best so far)' if improved else ''}"
        )

    def report_best(self):
        if self.best is not None:
            phase, epoch, score = self.best
            PROGRESS.info(f"best epoch: {epoch} ({phase}), valid {self.metric} = {score:.4f}; testing its weights")
