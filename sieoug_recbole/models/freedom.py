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

import torch
from torch import nn

from sieoug_recbole.config_checks import boolean, integer, number
from sieoug_recbole.graph import propagate
from sieoug_recbole.models.base import DOMAINS, CrossDomainModel, bpr_loss, domain_id_embeddings, l2_penalty
from sieoug_recbole.models.lightgcn import EdgePruning, domain_adjacencies, lightgcn_propagation
from sieoug_recbole.models.mm_graph import DomainModalities, lift_item_graph, mix_graphs, modality_weights
from sieoug_recbole.similarity import normalize_item_graph


class FREEDOM(EdgePruning, CrossDomainModel):
    """FREEDOM: a frozen multi-modal item graph and degree-sensitive edge pruning.

    Reference: Zhou & Shen, "A Tale of Two Graphs: Freezing and Denoising Graph Structures for
    Multimodal Recommendation", ACM MM 2023 (code: github.com/enoche/FREEDOM).
    """

    config_checks = {
        "n_item_layers": integer(0),
        "knn_k": integer(1),
        "include_self": boolean(),
        "prune_ratio": number(0, 0.99),
        "feature_loss_weight": number(0),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.n_item_layers = config["n_item_layers"]
        self.knn_k = config["knn_k"]
        self.include_self = config["include_self"]
        self.feature_loss_weight = config["feature_loss_weight"]
        self.reg_weight = config["reg_weight"]

        d = self.embedding_size
        self.user_embedding, self.item_embedding = domain_id_embeddings(self.layout, d)
        self.adjacency = domain_adjacencies(self, dataset)
        self.init_edge_pruning(dataset, config["prune_ratio"])
        self.domains = {x: FreedomDomain(self, config, dataset, x) for x in DOMAINS}
        self.feature_projection = nn.ModuleDict(
            {
                x: nn.ModuleDict({m: nn.Linear(f.shape[1], d) for m, f in self.domains[x].features.items()})
                for x in DOMAINS
            }
        )

    # ----- representations and loss ---------------------------------------------------------
    def domain_representations(self, domain):
        ego_items = self.item_embedding[domain].weight
        users, items = lightgcn_propagation(
            self.user_item_graph(domain), self.user_embedding[domain].weight, ego_items, self.n_layers
        )
        h = propagate(self.domains[domain].item_graph, ego_items, self.n_item_layers, reduce="last")
        return users, items + h

    def projected_features(self, domain, modality, item_rows):
        state = self.domains[domain]
        features = state.features[modality][state.feature_rows[item_rows]]
        return self.feature_projection[domain][modality](features)

    def domain_loss(self, domain, interaction, representations):
        users, pos, neg = self.batch(domain, interaction)
        user_all, item_all = representations
        user = user_all[users]
        loss = bpr_loss(user, item_all[pos], item_all[neg])
        if self.feature_loss_weight:
            feature_loss = sum(
                bpr_loss(user, self.projected_features(domain, m, pos), self.projected_features(domain, m, neg))
                for m in self.domains[domain].modalities
            )
            loss = loss + self.feature_loss_weight * feature_loss
        if self.reg_weight:
            loss = loss + self.reg_weight * l2_penalty(
                self.user_embedding[domain](users), self.item_embedding[domain](pos), self.item_embedding[domain](neg)
            )
        return (loss,)


class FreedomDomain:
    """FREEDOM's frozen structures of one domain: its modalities and their kNN graphs, the
    mixed item graph (an operator on item-table rows), and the raw features with the feature
    row of each table row."""

    def __init__(self, model, config, dataset, domain):
        items = DomainModalities(config, dataset, domain, model.layout)
        self.modalities = items.modalities
        self.knn_graphs = items.knn_graphs(model.knn_k, model.include_self)
        self.mix_weights = modality_weights(config["modality_weights"], items.modalities)
        mixed = mix_graphs({m: normalize_item_graph(g) for m, g in self.knn_graphs.items()}, self.mix_weights)
        self.item_graph = lift_item_graph(mixed, items.rows, model.n_items[domain], model.device, normalize=False)
        self.features = items.padded_features(model.device)
        self.feature_rows = torch.from_numpy(items.feature_rows(model.n_items[domain])).to(model.device)
