"""Overlapped user guidance (paper Sec 3.3) as a plug-in for any model.

A model that exposes each domain's user vectors for a training step
(:meth:`~sieoug_recbole.models.base.CrossDomainModel.step_user_vectors`) takes guidance through
configuration alone; the shared training step adds ``guide_lambda * L_C`` to its loss:

- ``guidance``: ``none`` | ``goum`` (the paper's GOUM plan, Eq 17-22) | ``fgw`` (unguided fused
  Gromov-Wasserstein, SIEOUG-G) | ``overlap_only`` (only the same person is a positive,
  SIEOUG-M);
- ``ot_scope``: ``batch`` (the plan between a batch's source and target users; every
  overlapped user of either side joins the other, ``guide_both_sides``) | ``global`` (GOUM
  between all users of both domains, :mod:`~sieoug_recbole.population_matching`, refreshed
  every ``ot_refresh`` epochs from the step's user vectors; a batch reads its users' rows);
- L_C (Eq 23): InfoNCE in both directions, positives the barycentric matches under the plan,
  negatives the other side's batch users (:func:`~sieoug_recbole.matching.guided_contrastive_loss`).

The plan carries no gradient. Statistics (guided pairs, solver iterations, marginal error,
the loss) are averaged per epoch (:meth:`UserGuidance.collect_statistics`).
"""

import warnings
from collections import defaultdict

import torch

from sieoug_recbole.config_checks import ConfigError, boolean, choice, integer, number, optional
from sieoug_recbole.matching import (
    fgw_plan,
    goum,
    guide_mask,
    guided_contrastive_loss,
    is_overlapped,
    population_contrastive_loss,
    squared_euclidean_cost,
)
from sieoug_recbole.population_matching import PLANS, population_plan

GUIDANCE_TYPES = ("none", "goum", "fgw", "overlap_only")
MAPS = ("none", "linear", "orthogonal")
OT_SCOPES = ("batch", "global")
OT_DEVICES = ("cpu", "model")
SIMILARITIES = ("cosine", "dot")

#: the guidance keys (sieoug_recbole/defaults.yaml), checked when the config is read
GUIDANCE_CHECKS = {
    "guidance": choice(*GUIDANCE_TYPES),
    "guide_lambda": number(0),
    "ot_eps": number(0, low_open=True),
    "ot_max_iter": integer(1),
    "ot_tol": number(0, low_open=True),
    "ot_device": optional(choice(*OT_DEVICES)),
    "ot_scope": choice(*OT_SCOPES),
    "ot_refresh": integer(1),
    "ot_global_plan": choice(*PLANS),
    "ot_candidates": integer(1),
    "ot_keep": integer(1),
    "ot_dense_limit": integer(1),
    "cost_normalize": optional(choice("mean", "max")),
    "guide_temperature": number(0, low_open=True),
    "guide_similarity": optional(choice(*SIMILARITIES)),
    "guide_both_sides": boolean(),
    "fgw_alpha": number(0, 1),
    "guide_start_epoch": integer(0),
    "guide_anchor_epochs": integer(0),
    "ot_map": choice(*MAPS),
}


class UserGuidance:
    """L_C of one model: its settings, the per-batch or population plan, and statistics.

    ``similarity``: the default of ``guide_similarity`` (the model's own score).
    """

    def __init__(self, config, num_overlap_users, similarity="dot"):
        self.kind = config["guidance"] or "none"
        self.weight = float(config["guide_lambda"] or 0.0)
        self.eps = config["ot_eps"]
        self.max_iter, self.tol = config["ot_max_iter"], config["ot_tol"]
        self.device = config["ot_device"] or "cpu"
        self.scope = config["ot_scope"] or "batch"
        self.refresh_epochs = config["ot_refresh"]
        self.global_plan = config["ot_global_plan"] or "dense"
        self.candidates, self.keep = config["ot_candidates"], config["ot_keep"]
        self.dense_limit = config["ot_dense_limit"]
        self.cost_normalize = config["cost_normalize"]
        self.temperature = config["guide_temperature"]
        self.similarity = config["guide_similarity"] or similarity
        self.both_sides = config["guide_both_sides"]
        self.fgw_alpha = config["fgw_alpha"]
        self.start_epoch_index = int(config["guide_start_epoch"] or 0)
        self.anchor_epochs = int(config["guide_anchor_epochs"] or 0)
        self.map_kind = config["ot_map"] or "none"
        self.num_overlap_users = int(num_overlap_users)
        if self.scope == "global" and self.kind != "goum":
            raise ConfigError(
                f"config key 'ot_scope': global matching solves GOUM; guidance '{self.kind}' "
                "matches per batch (ot_scope: batch)"
            )
        self._stats = defaultdict(float)
        self._plan = None  # the population plan (global scope), its populations and epoch
        self._map = None  # (the source -> target map of ot_map, and the epoch it was fitted in)
        self.epoch = 0  # the training epoch now (start_epoch)
        self.anchored = self.num_overlap_users > 1  # (num_overlap_users counts the padding id)
        if self.active and self.kind != "fgw" and not self.anchored:
            warnings.warn(
                f"guidance '{self.kind}' on a pair without overlapped users: nothing anchors the "
                "matching (no user is the same person in both domains), so L_C only pulls users "
                "towards look-alikes",
                RuntimeWarning,
                stacklevel=2,
            )

    def describe(self):
        """What a run record keeps of the guidance: its kind, weight and scope, and whether
        overlapped users anchor it."""
        return {
            "guidance": self.kind,
            "guide_lambda": self.weight,
            "ot_scope": self.scope,
            "overlapped_users": self.num_overlap_users - 1,
            "anchored": self.anchored,
        }

    def check_population_size(self, n_source, n_target):
        """A clear error, before training, when a dense population plan would not fit."""
        if (
            self.active
            and self.scope == "global"
            and self.global_plan == "dense"
            and n_source * n_target > self.dense_limit
        ):
            raise ConfigError(
                f"config key 'ot_scope': global matching of {n_source:,} x {n_target:,} users needs a dense plan of "
                f"{n_source * n_target:,} entries, above ot_dense_limit ({self.dense_limit:,}); set "
                "ot_global_plan: sparse (each user's ot_candidates nearest users) or raise ot_dense_limit"
            )

    @property
    def active(self):
        return self.kind != "none" and self.weight > 0

    def start_epoch(self, epoch):
        """Training epoch ``epoch`` (0-based) starts: it decides the plan (:meth:`kind_now`), the
        refresh of the population plan (every ``ot_refresh`` epochs) and of the map."""
        self.epoch = int(epoch)

    def training_state(self):
        """The plan and map this guidance reuses across epochs (a continued run needs them)."""
        return {"plan": self._plan, "map": self._map}

    def load_training_state(self, state):
        self._plan, self._map = state["plan"], state["map"]

    def kind_now(self):
        """This epoch's plan: None (no guidance yet) before ``guide_start_epoch``, then
        ``overlap_only`` (the anchors alone) for ``guide_anchor_epochs``, then ``guidance``."""
        if self.epoch < self.start_epoch_index:
            return None
        if self.epoch < self.start_epoch_index + self.anchor_epochs:
            return "overlap_only"
        return self.kind

    # ----- the loss -----------------------------------------------------------------------
    def loss(self, model, interaction, representations):
        """``(lambda * L_C,)`` for a training step in the BOTH phase; ``()`` when inactive. A
        step without a plan contributes a zero term (every step has as many loss terms: the
        trainer sums them per position)."""
        if not self.active:
            return ()
        kind = self.kind_now()
        if kind is None:  # guidance starts later
            return (torch.zeros((), device=model.device),)
        src, tgt = self.batch_users(model, interaction)
        user_src = model.step_user_vectors("source", representations["source"], src)
        user_tgt = model.step_user_vectors("target", representations["target"], tgt)
        user_map = self.user_map(model, representations) if kind != "overlap_only" else None
        if user_map is not None:  # the source users in the target's space (ot_map)
            user_src = user_src @ user_map
        if self.scope == "global" and kind == "goum":
            term = self._global_loss(model, representations, src, tgt, user_src, user_tgt, user_map)
        else:
            term = self._batch_loss(kind, src, tgt, user_src, user_tgt)
        if term is None:
            return (user_src.new_zeros(()),)
        self._stats["loss_guide"] += float(term.detach())
        self._stats["guided_batches"] += 1
        return (self.weight * term,)

    def batch_users(self, model, interaction):
        """Distinct users (table rows) of the batch per side; with ``guide_both_sides`` every
        overlapped user of one side joins the other (an overlapped user has the same row in
        both domains)."""
        src = model.user_rows("source", interaction[model.SOURCE_USER_ID])
        tgt = model.user_rows("target", interaction[model.TARGET_USER_ID])
        if self.both_sides:
            n_o = self.num_overlap_users
            src, tgt = (torch.cat([src, tgt[is_overlapped(tgt, n_o)]]), torch.cat([tgt, src[is_overlapped(src, n_o)]]))
        return torch.unique(src), torch.unique(tgt)

    def _batch_loss(self, kind, src, tgt, user_src, user_tgt):
        guide = guide_mask(src, tgt, self.num_overlap_users)
        plan = self.batch_plan(user_src, user_tgt, guide, kind)
        if plan is None:
            return None
        self._stats["guided_pairs"] += float(guide.sum())
        return guided_contrastive_loss(user_src, user_tgt, plan, self.temperature, self.similarity)

    def batch_plan(self, user_src, user_tgt, guide, kind=None):
        """The plan of ``kind`` (default ``guidance``) between a batch's source and target
        users (no gradient), or None when there is nothing to match (``overlap_only`` without
        an overlapped pair)."""
        kind = kind or self.kind
        if kind == "overlap_only":  # SIEOUG-M: only the same person is a positive
            return guide.to(user_src.dtype) if guide.any() else None
        # A batch's problem is small and its solvers sequential: on a GPU every step is a few
        # tiny kernels and a host sync, so by default the plan is solved on the CPU (ot_device).
        solve_on = torch.device("cpu") if self.device == "cpu" else user_src.device
        src, tgt = user_src.detach().to(solve_on), user_tgt.detach().to(solve_on)
        if kind == "fgw":  # SIEOUG-G: unguided
            return fgw_plan(src, tgt, alpha=self.fgw_alpha, normalize=self.cost_normalize).to(user_src.device)
        cost = squared_euclidean_cost(src, tgt, normalize=self.cost_normalize)
        plan, info = goum(cost, guide.to(solve_on), self.eps, max_iter=self.max_iter, tol=self.tol, return_info=True)
        self._stats["goum_iterations"] += info["iterations"]
        self._stats["goum_marginal_error"] += float(info["marginal_error"])
        return plan.to(user_src.device)

    # ----- whole-population matching --------------------------------------------------------
    def _global_loss(self, model, representations, src, tgt, user_src, user_tgt, user_map=None):
        if self._plan is None or self.epoch - self._plan["epoch"] >= self.refresh_epochs:
            self.refresh(model, representations, user_map)
        populations = self._plan["rows"]
        index = self._plan["index"]
        bank_src = model.step_user_vectors("source", representations["source"], populations["source"])
        bank_tgt = model.step_user_vectors("target", representations["target"], populations["target"])
        if user_map is not None:
            bank_src = bank_src @ user_map
        plan = self._plan["plan"]
        self._stats["guided_pairs"] += float(guide_mask(src, tgt, self.num_overlap_users).sum())
        return population_contrastive_loss(
            user_src,
            user_tgt,
            csr_rows(plan.by_source, index["source"][src]),
            bank_tgt,
            csr_rows(plan.by_target, index["target"][tgt]),
            bank_src,
            self.temperature,
            self.similarity,
        )

    def refresh(self, model, representations, user_map=None):
        """Solve GOUM between every source and every target user from this step's vectors
        (the source's mapped by ``user_map`` when given)."""
        populations = {
            d: torch.as_tensor(model.layout.domain_rows("user", d)[1:], device=model.device)
            for d in ("source", "target")
        }  # (the padding row is nobody)
        vectors = {
            d: model.step_user_vectors(d, representations[d], populations[d]).detach() for d in ("source", "target")
        }
        if user_map is not None:
            vectors["source"] = vectors["source"] @ user_map
        guided = guided_population_pairs(populations, self.num_overlap_users)
        previous = self._plan["plan"].info.get("potential") if self._plan else None
        plan = population_plan(
            vectors["source"],
            vectors["target"],
            guided,
            self.eps,
            self.global_plan,
            k=self.candidates,
            keep=self.keep,
            max_iter=self.max_iter,
            tol=self.tol,
            dense_limit=self.dense_limit,
            init=previous,
        )
        index = {}
        for domain, rows in populations.items():  # table row -> position in the population
            lookup = torch.full((model.n_users[domain],), -1, dtype=torch.long, device=model.device)
            lookup[rows] = torch.arange(len(rows), device=model.device)
            index[domain] = lookup
        self._plan = {"plan": plan, "rows": populations, "index": index, "epoch": self.epoch}
        self._stats["plan_refreshes"] += 1
        self._stats["plan_iterations"] += plan.info["iterations"]
        self._stats["plan_marginal_error"] += float(plan.info["marginal_error"])
        self._stats["plan_kept_mass"] += plan.info["kept_mass"]

    def user_map(self, model, representations):
        """The (d, d) map of source user vectors into the target's space (``ot_map``), fitted
        on the overlapped users' vectors (detached) at the first step of each epoch; None with
        ``ot_map: none`` or without overlapped users."""
        if self.map_kind == "none" or not self.anchored:
            return None
        if self._map is None or self._map[1] != self.epoch:
            anchors = torch.arange(1, self.num_overlap_users, device=model.device)
            source = model.step_user_vectors("source", representations["source"], anchors).detach()
            target = model.step_user_vectors("target", representations["target"], anchors).detach()
            self._map = (fit_user_map(source, target, self.map_kind), self.epoch)
        return self._map[0]

    @property
    def population_plan(self):
        """The current population plan (global scope), with its ``rows`` per domain, or None."""
        return self._plan

    # ----- statistics ---------------------------------------------------------------------
    def collect_statistics(self):
        """This epoch's means over the guided batches (over the refreshes for ``plan_*``);
        resets them."""
        stats, self._stats = self._stats, defaultdict(float)
        batches = max(stats.pop("guided_batches", 0.0), 1.0)
        refreshes = stats.pop("plan_refreshes", 0.0)
        out = {}
        for key, value in stats.items():
            if key.startswith("plan_"):
                out[key] = value / refreshes
            else:
                out[key] = value / batches
        return out


def fit_user_map(source, target, kind, ridge=1e-3):
    """The (d, d) matrix W with ``source @ W ~ target`` for paired rows (the same people in two
    spaces): ``linear``, ridge least squares (ridge ``ridge`` times the mean squared entry of
    ``source``); ``orthogonal``, the orthogonal Procrustes solution (a rotation: distances
    within the source space are kept)."""
    source, target = source.double(), target.double()
    if kind == "orthogonal":
        u, _, vt = torch.linalg.svd(source.T @ target)
        return (u @ vt).float()
    if kind == "linear":
        gram = source.T @ source
        gram += ridge * float((source * source).mean()) * len(source) * torch.eye(len(gram), dtype=gram.dtype)
        return torch.linalg.solve(gram, source.T @ target).float()
    raise ValueError(f"ot_map must be one of {MAPS}, got {kind!r}")


def guided_population_pairs(populations, num_overlap_users):
    """(2, g) positions (source, target) of the overlapped users in two populations of table
    rows (an overlapped user has the same row in both domains)."""
    src, tgt = populations["source"].cpu(), populations["target"].cpu()
    overlapped = src[is_overlapped(src, num_overlap_users)]
    src_pos = torch.searchsorted(src, overlapped)
    tgt_pos = torch.searchsorted(tgt, overlapped)
    return torch.stack([src_pos, tgt_pos])


def csr_rows(csr, index):
    """Rows ``index`` of a torch sparse CSR matrix, as a sparse COO matrix (a batch's rows of a
    population plan)."""
    index = index.cpu()
    crow, col, val = csr.crow_indices(), csr.col_indices(), csr.values()
    starts = crow[index]
    counts = crow[index + 1] - starts
    total = int(counts.sum())
    row_of = torch.repeat_interleave(torch.arange(len(index)), counts)
    first = torch.repeat_interleave(starts - (torch.cumsum(counts, 0) - counts), counts)
    entries = first + torch.arange(total)
    return torch.sparse_coo_tensor(
        torch.stack([row_of, col[entries]]), val[entries], (len(index), csr.shape[1])
    ).coalesce()
