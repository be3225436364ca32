"""LATTICE (Zhang et al., MM'21) as a single-domain baseline run on each domain.

Per domain (no transfer between domains):
- backbone: LightGCN over the domain's user-item graph (mean of layers 0..L) -> u, v;
- item-item graph: for every modality m, an initial graph S_m = top-k cosine graph of the
  raw features (values = clipped cosines, normalised D^-1/2 S D^-1/2), frozen; and a learned
  graph S~_m = the same construction on transformed features W_m x + b_m, whose edge values
  carry gradients to W_m. Per modality A_m = lambda S_m + (1 - lambda) S~_m, and the item
  graph is A = sum_m softmax(alpha)_m A_m with learnable modality logits alpha;
- h = A^L' e (item ID embeddings propagated over A), the final item vector v + h / ||h||;
  users keep u. BPR + L2 on the batch's ego embeddings.

When the learned graph is rebuilt (``graph_refresh_steps``): by default (0) its neighbour lists
are recomputed once per epoch, from the current W_m at the first training step of the epoch
(and once for evaluation), as LATTICE's released code rebuilds its graph on the first batch of
each epoch; n > 0 recomputes them every n training steps instead (1 = every step). Between
refreshes the edge values still follow W_m, so W_m and alpha get gradients on every step
(the released code detaches the graph between rebuilds). Everything is sparse: the learned graph
is a torch neighbour table on the domain's items, the frozen ones are lifted sparse operators.
"""

import torch
import torch.nn.functional as F
from torch import nn

from sieoug_recbole.config_checks import boolean, integer, number, optional
from sieoug_recbole.graph import propagate
from sieoug_recbole.models.base import DOMAINS, BPRDomainLoss, CrossDomainModel, domain_id_embeddings
from sieoug_recbole.models.lightgcn import domain_adjacencies, lightgcn_propagation
from sieoug_recbole.models.mm_graph import (
    DomainModalities,
    knn_edge_values,
    knn_neighbours,
    knn_propagate,
    lift_item_graph,
)


class LATTICE(BPRDomainLoss, CrossDomainModel):
    """LATTICE: item-item graphs learned from the modality features on top of a LightGCN backbone.

    Reference: Zhang et al., "Mining Latent Structures for Multimedia Recommendation", ACM MM 2021
    (code: github.com/CRIPAC-DIG/LATTICE).
    """

    config_checks = {
        "n_item_layers": integer(0),
        "knn_k": integer(1),
        "include_self": boolean(),
        "init_graph_weight": number(0, 1),
        "learn_graph": boolean(),
        "feat_embed_dim": optional(integer(1)),
        "graph_refresh_steps": integer(0),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.n_item_layers = config["n_item_layers"]
        self.knn_k = config["knn_k"]
        self.include_self = config["include_self"]
        self.init_graph_weight = config["init_graph_weight"]
        self.learn_graph = config["learn_graph"]
        self.graph_refresh_steps = config["graph_refresh_steps"]
        self.reg_weight = config["reg_weight"]

        d = self.embedding_size
        self.user_embedding, self.item_embedding = domain_id_embeddings(self.layout, d)
        self.adjacency = domain_adjacencies(self, dataset)
        self.domains = {x: LatticeDomain(self, config, dataset, x) for x in DOMAINS}
        # alpha: modality logits per domain (softmax -> mixing weights), start uniform
        self.modality_logits = nn.ParameterDict(
            {x: nn.Parameter(torch.zeros(len(self.domains[x].modalities))) for x in DOMAINS}
        )
        feat_dim = config["feat_embed_dim"] or d
        self.feature_transform = nn.ModuleDict(
            {
                x: nn.ModuleDict({m: nn.Linear(f.shape[1], feat_dim) for m, f in self.domains[x].features.items()})
                for x in DOMAINS
            }
        )
        self._learned_neighbours = {}  # domain -> {modality: (n_d, k) neighbour table on feature rows}
        self._steps = 0

    # ----- item-item graph -------------------------------------------------------------
    def train(self, mode=True):
        # RecBole's trainer calls train() at the start of every epoch and eval() before every
        # evaluation; parameters may also have been replaced (a checkpoint loaded): the learned
        # neighbour lists are recomputed from the current W_m at the next use
        if hasattr(self, "_learned_neighbours"):
            self._learned_neighbours.clear()
        return super().train(mode)

    def calculate_loss(self, interaction):
        refresh = self.graph_refresh_steps
        if self.learn_graph and refresh > 0 and self._steps % refresh == 0:
            self._learned_neighbours.clear()  # recomputed by the next item_graph_operator
        self._steps += 1
        return super().calculate_loss(interaction)

    def modality_weights(self, domain):
        return torch.softmax(self.modality_logits[domain], dim=0)

    def learned_neighbours(self, domain, modality, transformed):
        """(n_d, k) feature rows: the learned kNN graph's neighbour table (recomputed when cleared)."""
        cached = self._learned_neighbours.setdefault(domain, {})
        if modality not in cached:
            cached[modality] = knn_neighbours(transformed.detach(), self.knn_k, self.include_self)
        return cached[modality]

    def item_graph_operator(self, domain):
        """A function x -> A x on (item rows, d) tensors of the domain (Sec. 'graph learning')."""
        state = self.domains[domain]
        weights = self.modality_weights(domain)
        lam = self.init_graph_weight if self.learn_graph else 1.0
        frozen = [(w * lam, state.init_graphs[m]) for w, m in zip(weights, state.modalities)]
        learned = []  # (weight, neighbour table, edge values) on the domain's feature rows
        if self.learn_graph:
            for w, m in zip(weights, state.modalities):
                transformed = self.feature_transform[domain][m](state.features[m])
                neighbours = self.learned_neighbours(domain, m, transformed)
                learned.append((w * (1 - lam), neighbours, knn_edge_values(transformed, neighbours)))

        def apply(x):
            out = sum(w * (operator @ x) for w, operator in frozen)
            if learned:
                own = x[state.rows]
                local = sum(w * knn_propagate(neighbours, values, own) for w, neighbours, values in learned)
                out = out.index_add(0, state.rows, local)
            return out

        return apply

    # ----- representations and loss ------------------------------------------------------
    def domain_representations(self, domain):
        ego_items = self.item_embedding[domain].weight
        users, items = lightgcn_propagation(
            self.adjacency[domain], self.user_embedding[domain].weight, ego_items, self.n_layers
        )
        h = propagate(self.item_graph_operator(domain), ego_items, self.n_item_layers, reduce="last")
        return users, items + F.normalize(h, dim=1)


class LatticeDomain:
    """LATTICE's frozen structures of one domain: its modalities, their weighted kNN graphs
    (``knn_graphs`` on feature rows, ``init_graphs`` as operators on item-table rows), the
    table rows of the items with features and the raw features (torch)."""

    def __init__(self, model, config, dataset, domain):
        items = DomainModalities(config, dataset, domain, model.layout)
        self.modalities = items.modalities
        self.rows = torch.from_numpy(items.rows).to(model.device)
        self.knn_graphs = items.knn_graphs(model.knn_k, model.include_self, weighted=True)
        self.init_graphs = {
            m: lift_item_graph(g, items.rows, model.n_items[domain], model.device) for m, g in self.knn_graphs.items()
        }
        self.features = {m: torch.from_numpy(x).to(model.device) for m, x in items.features.items()}
