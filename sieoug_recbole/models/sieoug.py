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

import torch
import torch.nn.functional as F
from torch import nn

from sieoug_recbole.config_checks import boolean, check_within_items, choice, integer, number
from sieoug_recbole.domain_data import domain_features
from sieoug_recbole.graph import SparseOperator, propagate
from sieoug_recbole.models.base import DOMAINS, CrossDomainModel, domain_id_embeddings, forced_variant, l2_penalty
from sieoug_recbole.models.lightgcn import EdgePruning, domain_adjacencies, lightgcn_propagation
from sieoug_recbole.similarity import build_item_structure, hypergraph_factors, normalize_item_graph

NEGATIVES = ("in_batch", "sampled", "both", "sampled_pool")
SCORES = ("cosine", "dot")


class SIEOUG(EdgePruning, CrossDomainModel):
    """SIEOUG (Joint Similarity Item Exploration and Overlapped User Guidance, WWW'25).

    Reference: the paper's text in shared/paper/SIEOUG-WWW25.txt (Sec 3-4); no public code.
    Its guidance (Sec 3.3) is the shared hook of :mod:`sieoug_recbole.guidance`
    (``guidance: goum`` in SIEOUG.yaml); the variants below change its keys.
    """

    # checked when the config is read (quick_start.make_config), before any data is loaded
    config_checks = {
        "temperature": number(0, low_open=True),
        "score": choice(*SCORES),
        "negatives": choice(*NEGATIVES),
        "knn_k": integer(1),
        "include_self": boolean(),
        "risgf_mu": number(0),
        "sishe_eta": number(0, low_open=True),
        "n_clusters": integer(1),
        "graph_seed": integer(),
        "use_item_graph": boolean(),
        "use_hypergraph": boolean(),
        "learn_hyper_weight": boolean(),
        "prune_ratio": number(0, 0.99),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.temperature = config["temperature"]
        self.score = config["score"]
        self.negatives = config["negatives"]
        self.use_item_graph = config["use_item_graph"]
        self.use_hypergraph = config["use_hypergraph"]

        d = self.embedding_size
        self.user_embedding, self.item_embedding = domain_id_embeddings(self.layout, d)
        # Eq 13: one D x D weight per hypergraph layer, starting as the identity
        self.hyper_weight = nn.ParameterDict(
            {
                x: nn.Parameter(
                    torch.eye(d).repeat(self.n_layers, 1, 1), requires_grad=bool(config["learn_hyper_weight"])
                )
                for x in DOMAINS
            }
        )
        # Eq 15: a scoring vector and bias per view (LightGCN, item graph, hypergraph)
        self.view_score = nn.ParameterDict({x: nn.Parameter(torch.zeros(3, d)) for x in DOMAINS})
        self.view_bias = nn.ParameterDict({x: nn.Parameter(torch.zeros(3)) for x in DOMAINS})

        self.adjacency = domain_adjacencies(self, dataset)
        self.init_edge_pruning(dataset, config["prune_ratio"])  # (off by default: prune_ratio 0)
        self.views = {}  # domain -> ItemViews (its frozen item graph and hypergraph)
        if self.use_item_graph or self.use_hypergraph:
            self.views = {x: ItemViews(self, config, dataset, x) for x in DOMAINS}

    # ----- representations (Eq 11-15) -----------------------------------------------------
    def item_views(self, domain):
        """(users u, all items v, [extra item views]) of a domain: LightGCN's u and v over the
        domain's tables, and the item-graph view v~ and the hypergraph view v~~, each with one
        row per row of ``views[domain].rows`` (the domain's items with features)."""
        users_0 = self.user_embedding[domain].weight
        items_0 = self.item_embedding[domain].weight
        users, items = lightgcn_propagation(self.user_item_graph(domain), users_0, items_0, self.n_layers)
        views = []
        if self.views:
            state = self.views[domain]
            own_0 = items_0[state.rows]
            if self.use_item_graph:
                views.append(propagate(state.item_graph, own_0, self.n_layers))
            if self.use_hypergraph:
                views.append(self.hypergraph_view(domain, own_0))
        return users, items, views

    def hypergraph_view(self, domain, items_0):
        """Eq 13, x_l = G (E x_{l-1}) W_l, then the mean of layers 0..L, with E = D_E^-1
        gamma^T (items -> hyperedges) and G = D_V^-1 gamma (hyperedges -> items).

        ``items_0``: the ID embeddings of ``views[domain].rows``. Every layer after the first
        is G times a K-row matrix, y_1 = (E x_0) W_1, y_l = (E G) y_{l-1} W_l, so the sum of
        layers 1..L is ``G (y_1 + ... + y_L)``: two sparse products with the N items per view,
        all else on K x D (the same numbers as layer by layer)."""
        state = self.views[domain]
        weights = self.hyper_weight[domain]
        if len(weights) == 0:  # n_layers = 0: the mean of layer 0 alone
            return items_0
        y = (state.items_to_edges @ items_0) @ weights[0]
        y_sum = y
        for weight in weights[1:]:
            y = (state.edge_to_edge @ y) @ weight
            y_sum = y_sum + y
        return (items_0 + state.edges_to_items @ y_sum) / (len(weights) + 1)

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
        """This step's :class:`StepRepresentations` of ``domain`` (the graph propagation, once)."""
        return StepRepresentations(self, domain, *self.item_views(domain))

    def domain_representations(self, domain):
        """Every user and item vector of ``domain``, for scoring (Eq 14 on the items with
        features, LightGCN's rows elsewhere; unit length with the cosine score)."""
        rows = self.training_representations(domain)
        return rows.users(), rows.items()

    # ----- losses (Eq 16, 23, 24) ----------------------------------------------------------
    def domain_loss(self, domain, interaction, representations):
        users, pos, neg = self.batch(domain, interaction)
        user = representations.users(users)
        uses_neg = self.negatives != "in_batch"  # the sampled negatives' rows are needed
        item_rows = representations.items(torch.cat([pos, neg]) if uses_neg else pos)
        pos_item, neg_item = item_rows[: len(pos)], item_rows[len(pos) :]
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
        self.record_statistic(f"loss_{domain}", loss.detach())
        return (loss + self.reg_weight * reg,)

    def step_user_vectors(self, domain, representations, rows=None):
        """What guidance aligns: this step's user vectors (unit length with the cosine score)."""
        return representations.users(rows)

    def guide_similarity(self, config):
        """Eq 23's S follows Eq 16's (``score``), as in the paper."""
        return config["score"]


class ItemViews:
    """SIEOUG's frozen item structure of one domain (Sec 3.1), built once from its modality
    features (kNN -> RISGF -> SISHE, cached on disk): the normalised item graph A (Eq 12) and
    the hypergraph factors of gamma (Eq 13), as operators on ``rows``, the item-table rows of
    the domain's items with features (one view row each; ``view_of_row`` maps a table row to
    its view row, -1 for the padding row and, in a global layout, the other domain's rows)."""

    def __init__(self, model, config, dataset, domain):
        ids, features = domain_features(config, dataset, domain)
        cache_dir = config["graph_cache_dir"]
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
        check_within_items("n_clusters", config["n_clusters"], len(ids), domain)
        check_within_items("knn_k", config["knn_k"], len(ids), domain, excluding_self=not config["include_self"])
        structure = build_item_structure(
            features,
            z=config["knn_k"],
            mu=config["risgf_mu"],
            eta=config["sishe_eta"],
            n_clusters=config["n_clusters"],
            seed=config["graph_seed"],
            include_self=config["include_self"],
            cache_dir=cache_dir,
            progress=config["show_progress"],
        )
        device = model.device
        self.rows = torch.as_tensor(model.layout.to_rows("item", domain, ids), dtype=torch.long, device=device)
        self.view_of_row = torch.full((model.n_items[domain],), -1, dtype=torch.long, device=device)
        self.view_of_row[self.rows] = torch.arange(len(ids), device=device)
        self.item_graph = SparseOperator(normalize_item_graph(structure.A), device) if model.use_item_graph else None
        self.edges_to_items = self.items_to_edges = self.edge_to_edge = None
        if model.use_hypergraph:
            to_items, to_edges = hypergraph_factors(structure.gamma)  # D_V^-1 gamma, D_E^-1 gamma^T
            self.edges_to_items = SparseOperator(to_items, device)
            self.items_to_edges = SparseOperator(to_edges, device)
            self.edge_to_edge = torch.as_tensor(
                (to_edges @ to_items).toarray(), dtype=torch.float32, device=device
            )  # K x K
        self.info = {
            "items": len(ids),
            "A_nnz": int(structure.A.nnz),
            "gamma_nnz": int(structure.gamma.nnz),
            "cache_hit": bool(structure.info.get("cache_hit", False)),
        }


class StepRepresentations:
    """One step's representations of a domain, made row by row for the rows asked for.

    The graph propagations run over the whole graphs (in ``item_views``); what follows them
    is row-wise -- the view attention and fusion of Eq 14-15 and the cosine normalisation --
    so a training step applies it to its batch's users and items only, not to every row.
    """

    def __init__(self, model, domain, users, items, views):
        self.model, self.domain = model, domain
        self._users, self._items, self._views = users, items, views
        self._cosine = model.score == "cosine"

    def users(self, rows=None):
        """User vectors of table ``rows`` (all users by default)."""
        vectors = self._users if rows is None else self._users[rows]
        return F.normalize(vectors, dim=-1) if self._cosine else vectors

    def items(self, rows=None):
        """Item vectors of table ``rows`` (all items by default): the attention-fused views for
        the items with features, LightGCN's rows for the others."""
        vectors = self._items if rows is None else self._items[rows]
        if self._views:
            view_rows = self.model.views[self.domain].view_of_row
            view_rows = view_rows if rows is None else view_rows[rows]
            fused = view_rows >= 0  # (a training batch's items all are; no host sync to find out)
            vectors = torch.where(fused.unsqueeze(-1), self._fuse(vectors, view_rows.clamp_min(0)), vectors)
        return F.normalize(vectors, dim=-1) if self._cosine else vectors

    def _fuse(self, lightgcn_rows, view_rows):
        views = [lightgcn_rows] + [view[view_rows] for view in self._views]
        weights = self.model.view_attention(self.domain, views)
        return sum(w.unsqueeze(-1) * v for w, v in zip(weights.unbind(-1), views))


SIEOUG_O = forced_variant(
    SIEOUG, "SIEOUG-O", "SIEOUG without cross-domain guidance (lambda = 0).", __name__, guide_lambda=0.0
)
SIEOUG_M = forced_variant(
    SIEOUG,
    "SIEOUG-M",
    "Guidance only between the two embeddings of each overlapped user.",
    __name__,
    guidance="overlap_only",
)
SIEOUG_G = forced_variant(
    SIEOUG, "SIEOUG-G", "Unguided fused Gromov-Wasserstein matching instead of GOUM.", __name__, guidance="fgw"
)
VARIANTS = (SIEOUG_O, SIEOUG_M, SIEOUG_G)
for _cls in VARIANTS:  # checkpoints pickle the class by its name: make the name resolvable
    globals()[_cls.__name__] = _cls
