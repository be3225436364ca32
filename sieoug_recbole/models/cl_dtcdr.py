"""CL-DTCDR (Lu et al., MM'23): a contrastive learning framework for dual-target cross-domain
recommendation.

Both domains are targets: each is trained and scored. Per domain, a LightGCN graph encoder
(user and item ID embeddings propagated over the domain's normalised user-item graph, mean
of layers 0..L) gives the user and item vectors, trained with BPR. Two contrastive tasks:

- intra-domain (one per domain), to make the embeddings more representative: two views of
  the encoder, each adding to every layer's output a random vector of length ``noise_eps``
  pointing into the output's orthant (one random direction per row and view); InfoNCE between
  a batch user's two views (the batch's other users are the negatives), and likewise for the batch's positive items;
- inter-domain, to transfer knowledge even with few overlapped users: a batch user's positive
  in the other domain is the same person's vector when the user is overlapped, and otherwise
  the most similar user of the other domain (cosine of the current vectors, searched over
  the whole other domain in blocks; the choice carries no gradient); InfoNCE with the
  batch's other positives as negatives, source -> target and target -> source.

Loss: sum over domains of (BPR + reg_weight L2 + intra_weight L_intra) + inter_weight
(L_inter^{S->T} + L_inter^{T->S}). Scores are dot products of the clean (unperturbed) vectors.

Reference: J. Lu, G. Sun, X. Fang, J. Yang, W. He. A Contrastive Learning Framework for
Dual-Target Cross-Domain Recommendation. ACM MM 2023, 6332-6339. No public code.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from sieoug_recbole.config_checks import number
from sieoug_recbole.graph import propagate
from sieoug_recbole.models.base import DOMAINS, BPRDomainLoss, CrossDomainModel, domain_id_embeddings
from sieoug_recbole.models.lightgcn import domain_adjacencies, lightgcn_propagation
from sieoug_recbole.transfer_losses import info_nce, nearest_rows

OTHER = {"source": "target", "target": "source"}


class StepVectors(NamedTuple):
    """A domain's vectors in a training step: the clean users and items, and the two
    perturbed (users, items) views of the intra-domain task (empty when it is off)."""

    users: torch.Tensor
    items: torch.Tensor
    views: tuple


class CLDTCDR(BPRDomainLoss, CrossDomainModel):
    config_checks = {
        "intra_weight": number(0),
        "inter_weight": number(0),
        "cl_temperature": number(0, low_open=True),
        "noise_eps": number(0),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.intra_weight = config["intra_weight"]
        self.inter_weight = config["inter_weight"]
        self.temperature = config["cl_temperature"]
        self.noise_eps = config["noise_eps"]
        self.user_embedding, self.item_embedding = domain_id_embeddings(self.layout, self.embedding_size)
        self.adjacency = domain_adjacencies(self, dataset)
        for domain in DOMAINS:  # the users a nearest-neighbour search may pick (not the padding row)
            self.register_buffer(
                f"candidate_rows_{domain}",
                torch.from_numpy(self.layout.domain_rows("user", domain)[1:]),
                persistent=False,
            )

    # ----- encoders -------------------------------------------------------------------------
    def domain_representations(self, domain):
        return lightgcn_propagation(
            self.adjacency[domain],
            self.user_embedding[domain].weight,
            self.item_embedding[domain].weight,
            self.n_layers,
        )

    def perturbed_view(self, domain):
        """(users, items) of the encoder with every layer's output perturbed (a view of the
        intra-domain task): one random direction per row and view, turned into each layer
        output's orthant. Outside training (``model.eval()``) nothing is drawn: the view is
        the clean encoder, as dropout is off there."""
        if not (self.training and self.noise_eps):
            return self.domain_representations(domain)
        direction = self.noise_eps * F.normalize(self.noise(domain), dim=1)

        def layer(x):
            out = self.adjacency[domain] @ x
            return out + torch.sign(out) * direction

        ego = torch.cat([self.user_embedding[domain].weight, self.item_embedding[domain].weight])
        return torch.split(propagate(layer, ego, self.n_layers), [self.n_users[domain], self.n_items[domain]])

    def noise(self, domain):
        """Uniform [0, 1) noise for every user and item row of ``domain``, drawn over the joint id
        space (the same draws in both id layouts)."""
        ranges, d = self.layout.ranges, self.embedding_size
        users = self.layout.take_rows("user", domain, torch.rand(ranges.total("user"), d, device=self.device))
        items = self.layout.take_rows("item", domain, torch.rand(ranges.total("item"), d, device=self.device))
        return torch.cat([users, items])

    def training_representations(self, domain):
        users, items = self.domain_representations(domain)
        views = (self.perturbed_view(domain), self.perturbed_view(domain)) if self.intra_weight else ()
        return StepVectors(users, items, views)

    # ----- losses ---------------------------------------------------------------------------
    def domain_loss(self, domain, interaction, representations):
        (recommendation,) = super().domain_loss(domain, interaction, representations[:2])
        intra = self.intra_domain_loss(domain, interaction, representations.views)
        self.record_statistic(f"intra_cl_{domain}", intra.detach())
        return recommendation, self.intra_weight * intra

    def intra_domain_loss(self, domain, interaction, views):
        """InfoNCE between the two views of the batch's distinct users, plus the same for its
        distinct positive items (0 without views)."""
        if not views:
            return torch.zeros((), device=self.device)
        users, pos, _ = self.batch(domain, interaction)
        users, pos = torch.unique(users), torch.unique(pos)
        (users_1, items_1), (users_2, items_2) = views
        return info_nce(users_1[users], users_2[users], self.temperature) + info_nce(
            items_1[pos], items_2[pos], self.temperature
        )

    def transfer_loss(self, interaction, representations):
        if not self.inter_weight:
            return (torch.zeros((), device=self.device),)
        inter = sum(self.inter_domain_loss(d, interaction, representations) for d in DOMAINS)
        self.record_statistic("inter_cl", inter.detach())
        return (self.inter_weight * inter,)

    def inter_domain_loss(self, domain, interaction, representations):
        """InfoNCE of ``domain``'s distinct batch users against their counterparts in the other
        domain (:meth:`counterpart_rows`)."""
        other = OTHER[domain]
        rows = torch.unique(self.batch(domain, interaction)[0])
        users, other_users = representations[domain].users, representations[other].users
        positives = self.counterpart_rows(domain, rows, users, other_users)
        return info_nce(users[rows], other_users[positives], self.temperature, positive_ids=positives)

    def counterpart_rows(self, domain, rows, users, other_users):
        """The row in the other domain's table of each of ``domain``'s user ``rows``: the same
        row for an overlapped user (the same person), else the most cosine-similar of the
        other domain's users under the vectors ``users`` / ``other_users``."""
        counterparts = rows.clone()
        alone = rows >= self.overlapped_num_users
        self.record_statistic(f"nearest_share_{domain}", alone.float().mean())
        if bool(alone.any()):
            candidates = getattr(self, f"candidate_rows_{OTHER[domain]}")
            nearest = nearest_rows(users[rows[alone]], other_users[candidates])
            counterparts[alone] = candidates[nearest]
        return counterparts


CLDTCDR.__name__ = "CL-DTCDR"  # the paper's name, under which the model is registered
