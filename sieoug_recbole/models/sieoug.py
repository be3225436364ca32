"""SIEOUG (WWW'25): similarity item exploration + overlapped user guidance.

Per domain d (paper Sec 3.2):
- user/item ID embeddings propagated by LightGCN over the user-item graph (Eq 11) -> u, v;
- item ID embeddings propagated over the normalised item similarity graph A (Eq 12) -> v~;
- item ID embeddings propagated over the SISHE hypergraph gamma with a D x D weight per
  layer, learnable or frozen at I (``learn_hyper_weight``) (Eq 13, operator (K/N) gamma
  gamma^T, see NOTES) -> v~~;
- V = per-item softmax attention over (v, v~, v~~) (Eq 14-15; the user term cancels in the
  softmax, so each view has a learnable scoring vector), U = u.
A and gamma are built once from the domain's modality features (kNN -> RISGF -> SISHE,
:func:`sieoug_recbole.similarity.build_item_structure`, cached on disk) and frozen.

Loss (Eq 24): L_R^S + L_R^T + lambda * L_C, with
- L_R^d (Eq 16): InfoNCE on score / temperature (score: cosine as in the paper, or dot) over
  the positive item and the negatives N(U_i): the framework's uniformly sampled negative of
  the row, of every row of the batch (``sampled_pool``, the default), and/or the batch's
  other positive items (``in_batch``, popularity-distributed);
- L_C (Eq 23): guided user contrastive loss across domains, positives from the GOUM plan
  (Eq 17-22) over the batch's source and target users, the guide mask marking the pairs that
  are the same overlapped person. Every overlapped user of either side's batch is added to
  the other side, so guided pairs are always present.

Variants (paper Table 1), as configuration and as registered names:
``SIEOUG-O`` lambda = 0; ``SIEOUG-M`` L_C only between the two embeddings of each overlapped
user; ``SIEOUG-G`` unguided fused Gromov-Wasserstein matching instead of GOUM.
``use_item_graph`` / ``use_hypergraph`` drop a view (module ablations).
"""
import os
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from sieoug_recbole.checks import number_in_range, positive_number
from sieoug_recbole.config_checks import boolean, check_within_items, choice, integer, number, optional
from sieoug_recbole.domain_data import domain_features
from sieoug_recbole.graph import SparseOperator, propagate
from sieoug_recbole.matching import (fgw_plan, goum, guide_mask, guided_contrastive_loss, is_overlapped,
                                     squared_euclidean_cost)
from sieoug_recbole.models.base import DOMAINS, CrossDomainModel, domain_id_embeddings, l2_penalty
from sieoug_recbole.models.lightgcn import domain_adjacencies, lightgcn_propagation
from sieoug_recbole.similarity import build_item_structure, hypergraph_factors, normalize_item_graph

MATCHINGS = ("goum", "overlap_only", "fgw")
OT_DEVICES = ("cpu", "model")  # where GOUM / FGW solve a batch's plan
NEGATIVES = ("in_batch", "sampled", "both", "sampled_pool")
SCORES = ("cosine", "dot")


class SIEOUG(CrossDomainModel):
    # checked when the config is read (quick_start.make_config), before any data is loaded
    config_checks = {
        "temperature": number(0, low_open=True), "score": choice(*SCORES), "negatives": choice(*NEGATIVES),
        "knn_k": integer(1), "include_self": boolean(), "risgf_mu": number(0), "sishe_eta": number(0, low_open=True),
        "n_clusters": integer(1), "graph_seed": integer(), "use_item_graph": boolean(), "use_hypergraph": boolean(),
        "learn_hyper_weight": boolean(), "guide_lambda": number(0), "matching": choice(*MATCHINGS),
        "ot_eps": number(0, low_open=True), "ot_max_iter": integer(1), "ot_tol": number(0, low_open=True),
        "ot_device": optional(choice(*OT_DEVICES)), "cost_normalize": optional(choice("mean", "max")),
        "guide_temperature": number(0, low_open=True), "guide_similarity": optional(choice(*SCORES)),
        "guide_both_sides": boolean(), "fgw_alpha": number(0, 1)}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.temperature = positive_number(config["temperature"], "config key 'temperature'")
        self.score = _choice(config, "score", SCORES)
        self.negatives = _choice(config, "negatives", NEGATIVES)
        self.use_item_graph = config["use_item_graph"]
        self.use_hypergraph = config["use_hypergraph"]
        self.guide_lambda = number_in_range(config["guide_lambda"], "config key 'guide_lambda'", 0)
        self.matching = _choice(config, "matching", MATCHINGS)
        self.ot_eps = config["ot_eps"]
        self.ot_max_iter = config["ot_max_iter"]
        self.ot_tol = config["ot_tol"]
        self.ot_device = _choice(config, "ot_device", OT_DEVICES, default="cpu")
        self.cost_normalize = config["cost_normalize"]
        self.guide_temperature = config["guide_temperature"]
        self.guide_similarity = _choice(config, "guide_similarity", SCORES, default=self.score)
        self.fgw_alpha = config["fgw_alpha"]
        self.guide_both_sides = config["guide_both_sides"]

        d = self.embedding_size
        self.user_embedding, self.item_embedding = domain_id_embeddings(
            self.num_users, self.num_items, d)
        # Eq 13: one D x D weight per hypergraph layer, starting as the identity
        self.hyper_weight = nn.ParameterDict({
            x: nn.Parameter(torch.eye(d).repeat(self.n_layers, 1, 1),
                            requires_grad=bool(config["learn_hyper_weight"])) for x in DOMAINS})
        # Eq 15: a scoring vector and bias per view (LightGCN, item graph, hypergraph)
        self.view_score = nn.ParameterDict({x: nn.Parameter(torch.zeros(3, d)) for x in DOMAINS})
        self.view_bias = nn.ParameterDict({x: nn.Parameter(torch.zeros(3)) for x in DOMAINS})

        self.adjacency = domain_adjacencies(self, dataset)
        self.item_graph, self.hyper_left, self.hyper_right, self.structure_info = {}, {}, {}, {}
        self.view_items, self.local_item_row, self.hyper_core = {}, {}, {}
        if self.use_item_graph or self.use_hypergraph:
            for domain in DOMAINS:
                self._build_item_structure(config, dataset, domain)
        self._stats = defaultdict(float)

    # ----- item structure (Sec 3.1), built once and frozen ---------------------------------
    def _build_item_structure(self, config, dataset, domain):
        ids, features = domain_features(config, dataset, domain)
        cache_dir = config["graph_cache_dir"]
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
        check_within_items("n_clusters", config["n_clusters"], len(ids), domain)
        check_within_items("knn_k", config["knn_k"], len(ids), domain, excluding_self=not config["include_self"])
        structure = build_item_structure(
            features, z=config["knn_k"], mu=config["risgf_mu"], eta=config["sishe_eta"],
            n_clusters=config["n_clusters"], seed=config["graph_seed"],
            include_self=config["include_self"], cache_dir=cache_dir,
            progress=config["show_progress"])
        # the item views live on the domain's own items (local rows, global ids in view_items)
        self.view_items[domain] = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        local = torch.full((self.num_items,), -1, dtype=torch.long, device=self.device)
        local[self.view_items[domain]] = torch.arange(len(ids), device=self.device)
        self.local_item_row[domain] = local  # global item id -> row of the views, -1 if not own
        if self.use_item_graph:
            self.item_graph[domain] = SparseOperator(normalize_item_graph(structure.A), self.device)
        if self.use_hypergraph:
            left, right = hypergraph_factors(structure.gamma)
            self.hyper_left[domain] = SparseOperator(left, self.device)
            self.hyper_right[domain] = SparseOperator(right, self.device)
            self.hyper_core[domain] = torch.as_tensor(  # right @ left, K x K (hypergraph_view)
                (right @ left).toarray(), dtype=torch.float32, device=self.device)
        self.structure_info[domain] = {
            "items": len(ids), "A_nnz": int(structure.A.nnz), "gamma_nnz": int(structure.gamma.nnz),
            "cache_hit": bool(structure.info.get("cache_hit", False))}

    # ----- representations (Eq 11-15) -----------------------------------------------------
    def item_views(self, domain):
        """(users u, all items v, [extra item views]) of a domain: LightGCN's u and v over all
        ids, and the item-graph view v~ and the hypergraph view v~~, each with one row per item
        of ``view_items[domain]`` (the domain's own items: the other domain's rows would only
        be zeros)."""
        users_0 = self.user_embedding[domain].weight
        items_0 = self.item_embedding[domain].weight
        users, items = lightgcn_propagation(self.adjacency[domain], users_0, items_0, self.n_layers)
        views = []
        if self.use_item_graph or self.use_hypergraph:
            own_0 = items_0[self.view_items[domain]]
            if self.use_item_graph:
                views.append(propagate(self.item_graph[domain], own_0, self.n_layers))
            if self.use_hypergraph:
                views.append(self.hypergraph_view(domain, own_0))
        return users, items, views

    def hypergraph_view(self, domain, items_0):
        """Eq 13, x_l = left (right x_{l-1}) W_l, then the mean of layers 0..L.

        ``items_0``: the ID embeddings of ``view_items[domain]``. Every layer after the first
        is ``left`` times a K-row matrix, y_1 = (right x_0) W_1, y_l = (right left) y_{l-1} W_l,
        so the sum of layers 1..L is ``left (y_1 + ... + y_L)``: two sparse products with
        the N items per view, all else on K x D (the same numbers as layer by layer)."""
        left, right = self.hyper_left[domain], self.hyper_right[domain]
        core = self.hyper_core[domain]
        weights = self.hyper_weight[domain]
        if len(weights) == 0:  # n_layers = 0: the mean of layer 0 alone
            return items_0
        y = (right @ items_0) @ weights[0]
        y_sum = y
        for weight in weights[1:]:
            y = (core @ y) @ weight
            y_sum = y_sum + y
        return (items_0 + left @ y_sum) / (len(weights) + 1)

    def view_attention(self, domain, views):
        """Per-item softmax weights over the views (Eq 15), one row per row of the views:
        ``views`` = [v, v~, v~~] (the active ones) on the same items."""
        score = self.view_score[domain]
        bias = self.view_bias[domain]
        active = self._active_views()
        logits = torch.stack([(v * score[i]).sum(-1) + bias[i] for i, v in zip(active, views)], -1)
        return torch.softmax(logits, dim=-1)

    def _active_views(self):
        return [0] + ([1] if self.use_item_graph else []) + ([2] if self.use_hypergraph else [])

    def training_representations(self, domain):
        """This step's :class:`DomainRows` of ``domain`` (the graph propagation, once)."""
        return DomainRows(self, domain, *self.item_views(domain))

    def domain_representations(self, domain):
        """Every user and item vector of ``domain``, for scoring (Eq 14 on the domain's own
        items, LightGCN's rows elsewhere; unit length with the cosine score)."""
        rows = self.training_representations(domain)
        return rows.users(), rows.items()

    # ----- losses (Eq 16, 23, 24) ----------------------------------------------------------
    def domain_loss(self, domain, interaction, representations):
        users, pos, neg = self.batch(domain, interaction)
        user = representations.users(users)
        uses_neg = self.negatives != "in_batch"  # the sampled negatives' rows are needed
        item_rows = representations.items(torch.cat([pos, neg]) if uses_neg else pos)
        pos_item, neg_item = item_rows[:len(pos)], item_rows[len(pos):]
        logits = [(user * pos_item).sum(-1, keepdim=True)]
        if self.negatives in ("in_batch", "both"):
            in_batch = user @ pos_item.T
            same_item = pos.unsqueeze(0) == pos.unsqueeze(1)  # a batch item that is the positive
            logits.append(in_batch.masked_fill(same_item, float("-inf")))
        if self.negatives in ("sampled", "both"):
            logits.append((user * neg_item).sum(-1, keepdim=True))
        if self.negatives == "sampled_pool":  # every row's uniformly sampled negative
            pool = user @ neg_item.T
            logits.append(pool.masked_fill(neg.unsqueeze(0) == pos.unsqueeze(1), float("-inf")))
        logits = torch.cat(logits, dim=1) / self.temperature
        loss = -torch.log_softmax(logits, dim=1)[:, 0].mean()
        reg = l2_penalty(self.user_embedding[domain](users), self.item_embedding[domain](pos))
        self._stats[f"loss_{domain}"] += float(loss.detach())
        return loss + self.reg_weight * reg,

    def transfer_loss(self, interaction, representations):
        if self.guide_lambda == 0:
            return ()
        src_ids, tgt_ids = self.transfer_users(interaction)
        user_src = representations["source"].users(src_ids)
        user_tgt = representations["target"].users(tgt_ids)
        guide = guide_mask(src_ids, tgt_ids, self.overlapped_num_users)
        plan = self.matching_plan(user_src, user_tgt, guide)
        if plan is None:  # a zero term: every step has as many loss terms (the trainer sums them per position)
            return user_src.new_zeros(()),
        loss = guided_contrastive_loss(user_src, user_tgt, plan, self.guide_temperature,
                                       self.guide_similarity)
        self._stats["loss_guide"] += float(loss.detach())
        self._stats["guided_pairs"] += float(guide.sum())
        self._stats["guided_batches"] += 1
        return self.guide_lambda * loss,

    def transfer_users(self, interaction):
        """Distinct users of the batch per side; overlapped users of one side join the other."""
        src = interaction[self.SOURCE_USER_ID]
        tgt = interaction[self.TARGET_USER_ID]
        if self.guide_both_sides:
            n_o = self.overlapped_num_users
            src, tgt = (torch.cat([src, tgt[is_overlapped(tgt, n_o)]]),
                        torch.cat([tgt, src[is_overlapped(src, n_o)]]))
        return torch.unique(src), torch.unique(tgt)

    def matching_plan(self, user_src, user_tgt, guide):
        """The user-user plan pi for L_C (no gradient flows through it)."""
        if self.matching == "overlap_only":  # SIEOUG-M: only the same person is a positive
            return guide.to(user_src.dtype) if guide.any() else None
        # A batch's problem is small and its solvers sequential: on a GPU every step is a few
        # tiny kernels and a host sync, so by default the plan is solved on the CPU (ot_device).
        solve_on = torch.device("cpu") if self.ot_device == "cpu" else user_src.device
        src, tgt = user_src.detach().to(solve_on), user_tgt.detach().to(solve_on)
        if self.matching == "fgw":  # SIEOUG-G: unguided
            return fgw_plan(src, tgt, alpha=self.fgw_alpha, normalize=self.cost_normalize).to(user_src.device)
        cost = squared_euclidean_cost(src, tgt, normalize=self.cost_normalize)
        plan, info = goum(cost, guide.to(solve_on), self.ot_eps, max_iter=self.ot_max_iter,
                          tol=self.ot_tol, return_info=True)
        self._stats["goum_iterations"] += info["iterations"]
        self._stats["goum_marginal_error"] += float(info["marginal_error"])
        return plan.to(user_src.device)

    def pop_epoch_stats(self):
        """This epoch's means per batch: each domain's loss, and over the batches with
        guidance, its loss, guided pairs, GOUM iterations and marginal error. Resets them."""
        stats, self._stats = self._stats, defaultdict(float)
        steps = max(stats.pop("steps", 0.0), 1.0)
        guided = max(stats.pop("guided_batches", 0.0), 1.0)
        per_step = ("loss_source", "loss_target")
        return {key: value / (steps if key in per_step else guided) for key, value in stats.items()}

    def calculate_loss(self, interaction):
        self._stats["steps"] += 1
        return super().calculate_loss(interaction)


class DomainRows:
    """One step's representations of a domain, made row by row for the ids asked for.

    The graph propagations run over the whole graphs (in ``item_views``); what follows them
    is row-wise -- the view attention and fusion of Eq 14-15 and the cosine normalisation --
    so a training step applies it to its batch's users and items only, not to every row.
    """

    def __init__(self, model, domain, users, items, views):
        self.model, self.domain = model, domain
        self._users, self._items, self._views = users, items, views
        self._cosine = model.score == "cosine"

    def users(self, ids=None):
        """User vectors of ``ids`` (all users by default)."""
        rows = self._users if ids is None else self._users[ids]
        return F.normalize(rows, dim=-1) if self._cosine else rows

    def items(self, ids=None):
        """Item vectors of global item ids ``ids`` (all items by default): the attention-fused
        views for the domain's own items, LightGCN's rows for the others."""
        rows = self._items if ids is None else self._items[ids]
        if self._views:
            local = self.model.local_item_row[self.domain]
            local = local if ids is None else local[ids]
            own = local >= 0  # (a training batch's items all are; no host sync to find out)
            rows = torch.where(own.unsqueeze(-1), self._fuse(rows, local.clamp_min(0)), rows)
        return F.normalize(rows, dim=-1) if self._cosine else rows

    def _fuse(self, lightgcn_rows, local_rows):
        views = [lightgcn_rows] + [view[local_rows] for view in self._views]
        weights = self.model.view_attention(self.domain, views)
        return sum(w.unsqueeze(-1) * v for w, v in zip(weights.unbind(-1), views))


def _choice(config, key, allowed, default=None):
    """``config[key]`` (``default`` where it is ~), which must be one of ``allowed``."""
    value = config[key]
    if value is None and default is not None:
        value = default
    if value not in allowed:
        raise ValueError(f"config key '{key}' must be one of {allowed}, got {value!r}")
    return value


def _variant(name, doc, **overrides):
    """A registered ablation: SIEOUG with some config keys forced."""
    def __init__(self, config, dataset):
        for key, value in overrides.items():
            config[key] = value
        SIEOUG.__init__(self, config, dataset)
    return type(name, (SIEOUG,), {"__init__": __init__, "__doc__": doc, "forced_config": overrides})


SIEOUG_O = _variant("SIEOUG-O", "SIEOUG without cross-domain guidance (lambda = 0).", guide_lambda=0.0)
SIEOUG_M = _variant("SIEOUG-M", "Guidance only between the two embeddings of each overlapped user.",
                    matching="overlap_only")
SIEOUG_G = _variant("SIEOUG-G", "Unguided fused Gromov-Wasserstein matching instead of GOUM.",
                    matching="fgw")
VARIANTS = (SIEOUG_O, SIEOUG_M, SIEOUG_G)
for _cls in VARIANTS:  # checkpoints pickle the class by its name: make the name resolvable
    globals()[_cls.__name__] = _cls
