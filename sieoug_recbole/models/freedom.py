"""FREEDOM (Zhou & Shen, MM'23) as a single-domain baseline run on each domain.

Per domain (no transfer between domains):
- frozen item-item graph: per modality a binary top-k cosine graph of the raw features,
  normalised D^-1/2 S D^-1/2, then mixed with fixed modality weights; built once, never
  updated (the "freezing" half of the paper);
- degree-sensitive edge pruning (the "denoising" half): at the start of every training epoch
  a sub-graph of the user-item graph is sampled, keeping (1 - rho) |E| edges drawn without
  replacement with probability proportional to 1 / sqrt(d_u d_i), so edges between
  high-degree nodes are dropped more often; evaluation uses the full graph;
- representations: LightGCN over the (pruned) user-item graph -> u, v; item ID embeddings
  propagated L' times over the frozen item graph -> h; users u, items v + h;
- loss: BPR on (u, v + h) plus lambda * sum_m BPR of u against the linearly projected raw
  features of modality m (the paper's modality-feature term), plus an optional L2 penalty.
"""
import numpy as np
import torch
from torch import nn

from sieoug_recbole.graph import SparseOperator, bipartite_adjacency, propagate
from sieoug_recbole.models.base import (DOMAINS, CrossDomainModel, bpr_loss, domain_id_embeddings,
                                         l2_penalty)
from sieoug_recbole.models.lightgcn import domain_adjacencies, lightgcn_propagation
from sieoug_recbole.models.mm_graph import (DomainModalities, lift_item_graph, mix_graphs,
                                            modality_weights)
from sieoug_recbole.similarity import normalize_item_graph


class FREEDOM(CrossDomainModel):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.n_item_layers = config["n_item_layers"]
        self.knn_k = config["knn_k"]
        self.include_self = config["include_self"]
        self.prune_ratio = config["prune_ratio"]
        self.feature_loss_weight = config["feature_loss_weight"]
        self.reg_weight = config["reg_weight"]
        if not 0 <= self.prune_ratio < 1:
            raise ValueError(f"prune_ratio must be in [0, 1), got {self.prune_ratio}")

        d = self.embedding_size
        self.user_embedding, self.item_embedding = domain_id_embeddings(
            self.num_users, self.num_items, d)
        self.adjacency = domain_adjacencies(self, dataset)

        self.modalities, self.knn_graphs, self.item_graph, self.mix_weights = {}, {}, {}, {}
        self.features, self.feature_rows = {}, {}
        self.edges, self.edge_prob = {}, {}
        for domain in DOMAINS:
            items = DomainModalities(config, dataset, domain)
            self.modalities[domain] = items.modalities
            self.knn_graphs[domain] = items.knn_graphs(self.knn_k, self.include_self)
            weights = modality_weights(config["modality_weights"], items.modalities)
            self.mix_weights[domain] = weights
            mixed = mix_graphs({m: normalize_item_graph(g) for m, g in self.knn_graphs[domain].items()},
                               weights)
            self.item_graph[domain] = lift_item_graph(mixed, items.ids, self.num_items, self.device,
                                                      normalize=False)
            self.features[domain] = items.padded_features(self.device)
            self.feature_rows[domain] = torch.from_numpy(items.global_rows(self.num_items)).to(self.device)
            self.edges[domain], self.edge_prob[domain] = _degree_sensitive_edges(dataset, domain)
        self.feature_projection = nn.ModuleDict({
            x: nn.ModuleDict({m: nn.Linear(f.shape[1], d) for m, f in self.features[x].items()})
            for x in DOMAINS})
        self.pruned_adjacency = {}
        self._resample = True

    # ----- degree-sensitive edge pruning ---------------------------------------------------
    def train(self, mode=True):
        if mode:
            self._resample = True  # RecBole calls train() at the start of every epoch
        return super().train(mode)

    def resample_graphs(self):
        """Draw this epoch's pruned user-item graph of each domain."""
        for domain in DOMAINS:
            rows, cols = self.edges[domain]
            keep = int(len(rows) * (1.0 - self.prune_ratio))
            chosen = torch.multinomial(self.edge_prob[domain], max(keep, 1), replacement=False).numpy()
            adjacency = bipartite_adjacency(rows[chosen], cols[chosen], self.num_users, self.num_items)
            self.pruned_adjacency[domain] = SparseOperator(adjacency, self.device)

    def calculate_loss(self, interaction):
        if self.prune_ratio > 0 and self._resample:
            self.resample_graphs()
            self._resample = False
        return super().calculate_loss(interaction)

    def user_item_graph(self, domain):
        if self.training and self.prune_ratio > 0 and domain in self.pruned_adjacency:
            return self.pruned_adjacency[domain]
        return self.adjacency[domain]

    # ----- representations and loss ---------------------------------------------------------
    def domain_representations(self, domain):
        ego_items = self.item_embedding[domain].weight
        users, items = lightgcn_propagation(self.user_item_graph(domain), self.user_embedding[domain].weight,
                                            ego_items, self.n_layers)
        h = propagate(self.item_graph[domain], ego_items, self.n_item_layers, reduce="last")
        return users, items + h

    def projected_features(self, domain, modality, item_ids):
        rows = self.feature_rows[domain][item_ids]
        return self.feature_projection[domain][modality](self.features[domain][modality][rows])

    def domain_loss(self, domain, interaction, representations):
        users, pos, neg = self.batch(domain, interaction)
        user_all, item_all = representations
        user = user_all[users]
        loss = bpr_loss(user, item_all[pos], item_all[neg])
        if self.feature_loss_weight:
            feature_loss = sum(
                bpr_loss(user, self.projected_features(domain, m, pos),
                         self.projected_features(domain, m, neg))
                for m in self.modalities[domain])
            loss = loss + self.feature_loss_weight * feature_loss
        if self.reg_weight:
            loss = loss + self.reg_weight * l2_penalty(
                self.user_embedding[domain](users), self.item_embedding[domain](pos),
                self.item_embedding[domain](neg))
        return loss,


def _degree_sensitive_edges(dataset, domain):
    """((user ids, item ids) of the distinct training edges, torch weights 1/sqrt(d_u d_i))."""
    matrix = dataset.inter_matrix(form="csr", domain=domain)
    matrix.data[:] = 1.0
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    coo = matrix.tocoo()
    user_degree = np.asarray(matrix.sum(axis=1)).ravel()
    item_degree = np.asarray(matrix.sum(axis=0)).ravel()
    weight = 1.0 / np.sqrt(user_degree[coo.row] * item_degree[coo.col])
    return (coo.row.astype(np.int64), coo.col.astype(np.int64)), torch.from_numpy(weight.astype(np.float64))
