"""BiTGCF (Liu et al., CIKM'20): graph collaborative filtering with bi-directional transfer.

Each domain has its own user and item embeddings propagated over its own normalised
user-item graph, layer by layer (LightGCN-style: no weights, no non-linearity). After every
layer, the overlapped users (ids 1..n_o-1, the bridge between the domains) exchange
features: with lambda the weight of the own domain,

    e_u^S(l) <- lambda e_u^S(l) + (1 - lambda) e_u^T(l)
    e_u^T(l) <- lambda e_u^T(l) + (1 - lambda) e_u^S(l)

(both from the layer's pre-transfer values), and the next layer propagates the transferred
features, so the other domain's knowledge reaches that user's items and their other users.
lambda = 1 switches the transfer off. The readout is the mean of layers 0..L (the paper
concatenates its layers; the mean keeps the LightGCN scale used by our other baselines).
Trained with BPR in both domains plus an L2 penalty on the batch's ego embeddings.
"""

import torch

from sieoug_recbole.config_checks import number
from sieoug_recbole.models.base import DOMAINS, BPRDomainLoss, CrossDomainModel, domain_id_embeddings
from sieoug_recbole.models.lightgcn import domain_adjacencies


class BiTGCF(BPRDomainLoss, CrossDomainModel):
    """BiTGCF: per-domain LightGCN whose overlapped users exchange features after every layer.

    Reference: Liu et al., "Cross Domain Recommendation via Bi-directional Transfer Graph
    Collaborative Filtering Networks", CIKM 2020.
    """

    config_checks = {"transfer_lambda": number(0, 1)}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.transfer_lambda = config["transfer_lambda"]
        self.reg_weight = config["reg_weight"]
        self.user_embedding, self.item_embedding = domain_id_embeddings(self.layout, self.embedding_size)
        self.adjacency = domain_adjacencies(self, dataset)
        self._step = None  # both domains' representations of the current training step

    def transfer(self, own, other):
        """Layer output of one domain after the exchange for the overlapped users."""
        n_o = self.overlapped_num_users
        lam = self.transfer_lambda
        mixed = lam * own[1:n_o] + (1 - lam) * other[1:n_o]
        return torch.cat([own[:1], mixed, own[n_o:]])

    def joint_representations(self):
        """{domain: (users, items)} after L layers of propagation with transfer."""
        current = {d: torch.cat([self.user_embedding[d].weight, self.item_embedding[d].weight]) for d in DOMAINS}
        layers = {d: [current[d]] for d in DOMAINS}
        for _ in range(self.n_layers):
            spread = {d: self.adjacency[d] @ current[d] for d in DOMAINS}
            current = {
                "source": self.transfer(spread["source"], spread["target"]),
                "target": self.transfer(spread["target"], spread["source"]),
            }
            for d in DOMAINS:
                layers[d].append(current[d])
        return {d: torch.split(torch.stack(layers[d]).mean(dim=0), [self.n_users[d], self.n_items[d]]) for d in DOMAINS}

    def calculate_loss(self, interaction):
        # one joint propagation serves both domains of the step
        self._step = self.joint_representations()
        try:
            return super().calculate_loss(interaction)
        finally:
            self._step = None

    def domain_representations(self, domain):
        joint = self._step if self._step is not None else self.joint_representations()
        return joint[domain]
