"""VDEA (Liu et al., SIGIR'22): variational domain-invariant user embeddings for partially
overlapped cross-domain recommendation.

Each domain has a variational encoder of its users' interaction rows (the paper's dual
variational autoencoders): a user's L2-normalised training row goes through one linear layer
over the domain's items and tanh, then two linear heads give the mean and log-variance of a
Gaussian posterior ``q(z_u)`` of the user embedding. Items have one embedding per domain; a
score is the dot product of the user embedding (a reparameterised sample while training, the
mean when scoring) with the item's. Per domain the loss is BPR on the batch plus
``kl_weight`` times ``KL(q(z_u) || N(0, I))`` of the batch's users.

Two alignments make the embeddings domain-invariant (the BOTH phase, :meth:`VDEA.transfer_loss`):

- local: an overlapped user (rows 1..n_o-1, the same person in both domains) has two
  posteriors, one per domain; the squared 2-Wasserstein distance between the two Gaussians,
  ``|mu_s - mu_t|^2 + |sigma_s - sigma_t|^2``, is pulled down (every overlapped user of either
  domain's batch);
- global: the batch's users of the two domains, overlapped or not, are matched by a fused
  Gromov-Wasserstein plan (POT) between their Gaussians, with the Wasserstein geometry of the
  Gaussians as the cost across domains and within each domain; the fused Gromov-Wasserstein
  objective at that plan is the loss, so users with similar behaviour in the two domains are
  drawn together (the paper's Gromov-Wasserstein distribution co-clustering). The plan is
  solved per batch (``global_users`` users a side at most) and held fixed for the gradient.

A non-overlapped user is served by its own domain's encoder, like any user; what it gains
from the other domain comes through the global alignment (and the shared geometry the
alignments give both encoders).

Reference: Liu, Zheng, Su, Hu, Tan and Chen, "Exploiting Variational Domain-Invariant User
Embedding for Partially Overlapped Cross Domain Recommendation", SIGIR 2022 (no public code).
"""

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from sieoug_recbole.config_checks import integer, number
from sieoug_recbole.graph import SparseOperator
from sieoug_recbole.matching import fgw_plan, is_overlapped, squared_euclidean_cost
from sieoug_recbole.models.base import DOMAINS, CrossDomainModel, bpr_loss, l2_penalty
from sieoug_recbole.models.cdr_parts import domain_tables
from sieoug_recbole.models.disencdr import INITIAL_LOGVAR, LOGVAR_RANGE, Gaussian, domain_rand, gaussian_kl


# ----- pure functions ----------------------------------------------------------------------
def gaussian_w2(a, b):
    """Squared 2-Wasserstein distance between diagonal Gaussians ``a`` and ``b``, per row:
    ``|mean_a - mean_b|^2 + |std_a - std_b|^2``."""
    return (a.mean - b.mean).pow(2).sum(-1) + ((0.5 * a.logvar).exp() - (0.5 * b.logvar).exp()).pow(2).sum(-1)


def wasserstein_points(gaussian):
    """Rows ``[mean ; std]``: the Euclidean distance between two such points is the
    2-Wasserstein distance between the diagonal Gaussians."""
    return torch.cat([gaussian.mean, (0.5 * gaussian.logvar).exp()], dim=1)


def fused_gw_value(plan, cost, cost_a, cost_b, alpha):
    """Fused Gromov-Wasserstein objective at a fixed ``plan`` (n x m, total mass 1):

        (1 - alpha) <T, M> + alpha sum_ijkl (C_a[i, k] - C_b[j, l])^2 T_ij T_kl

    computed as ``p^T C_a^2 p + q^T C_b^2 q - 2 <C_a T C_b^T, T>`` (p, q the plan's
    marginals), differentiable in the costs."""
    p, q = plan.sum(dim=1), plan.sum(dim=0)
    structure = p @ cost_a.pow(2) @ p + q @ cost_b.pow(2) @ q - 2.0 * ((cost_a @ plan @ cost_b.T) * plan).sum()
    return (1.0 - alpha) * (plan * cost).sum() + alpha * structure


def global_alignment(points_a, points_b, alpha, max_iter=100):
    """(loss, plan) of the global alignment between two sets of users.

    The plan is POT's fused Gromov-Wasserstein plan (:func:`~sieoug_recbole.matching.fgw_plan`:
    rows sum to 1, columns to n/m) between ``points_a`` (n, d) and ``points_b`` (m, d) with
    squared Euclidean costs, each divided by its mean; the loss is :func:`fused_gw_value` of the
    same costs at that plan (scaled to mass 1), differentiable in the points, the plan fixed."""
    plan = fgw_plan(points_a, points_b, alpha=alpha, max_iter=max_iter, normalize="mean")
    cost = squared_euclidean_cost(points_a, points_b, "mean")
    cost_a = squared_euclidean_cost(points_a, points_a, "mean")
    cost_b = squared_euclidean_cost(points_b, points_b, "mean")
    return fused_gw_value(plan / len(points_a), cost, cost_a, cost_b, alpha), plan


def first_distinct(rows, limit):
    """The distinct values of ``rows`` in order of first occurrence, at most ``limit``."""
    distinct, inverse = torch.unique(rows, return_inverse=True)
    first = torch.full((len(distinct),), len(rows), dtype=torch.long, device=rows.device)
    first = first.scatter_reduce(0, inverse, torch.arange(len(rows), device=rows.device), reduce="amin")
    return rows[first.sort().values[:limit]]


def l2_normalized_rows(matrix):
    """Each row of a scipy sparse matrix divided by its L2 norm (an empty row stays empty)."""
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1), dtype=np.float64).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return matrix.multiply(scale[:, None].astype(np.float32)).tocsr()


class UserPosteriors(NamedTuple):
    """A domain's step: posterior means (``users``, what scores and what guidance aligns),
    log-variances, and the item embeddings."""

    users: torch.Tensor
    logvar: torch.Tensor
    items: torch.Tensor

    def gaussian(self, rows):
        return Gaussian(self.users[rows], self.logvar[rows])


# ----- the model ---------------------------------------------------------------------------
class VDEA(CrossDomainModel):
    """VDEA: variational user embeddings per domain, aligned locally (overlapped users) and
    globally (fused Gromov-Wasserstein between the domains' users); see the module text.

    Reference: Liu et al., SIGIR 2022 (no public code).
    """

    config_checks = {
        "hidden_size": integer(1),
        "kl_weight": number(0),
        "input_dropout": number(0, 0.95),
        "local_weight": number(0),
        "global_weight": number(0),
        "global_alpha": number(0, 1),
        "global_users": integer(2),
        "global_max_iter": integer(1),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim = self.embedding_size = config["embedding_size"]
        hidden = config["hidden_size"]
        self.reg_weight = config["reg_weight"]
        self.kl_weight = config["kl_weight"]
        self.input_dropout = config["input_dropout"]
        self.local_weight = config["local_weight"]
        self.global_weight = config["global_weight"]
        self.global_alpha = config["global_alpha"]
        self.global_users = config["global_users"]
        self.global_max_iter = config["global_max_iter"]
        # the encoder's first layer (one row per item: W_1 of rating row -> hidden), then heads
        self.encoder_items = domain_tables(self.layout, "item", hidden)
        self.encoder_bias = nn.ParameterDict({d: nn.Parameter(torch.zeros(hidden)) for d in DOMAINS})
        self.mean_head = nn.ModuleDict({d: nn.Linear(hidden, dim) for d in DOMAINS})
        self.logvar_head = nn.ModuleDict({d: nn.Linear(hidden, dim) for d in DOMAINS})
        for head in list(self.mean_head.values()) + list(self.logvar_head.values()):
            nn.init.xavier_uniform_(head.weight)
            nn.init.zeros_(head.bias)
        for head in self.logvar_head.values():
            nn.init.constant_(head.bias, INITIAL_LOGVAR)
        self.item_embedding = domain_tables(self.layout, "item", dim)
        self.ratings = {}
        for d in DOMAINS:
            matrix = self.training_matrix(dataset, d)
            matrix.data[:] = 1.0  # a repeated pair counts once
            self.ratings[d] = SparseOperator(l2_normalized_rows(matrix), self.device)

    # ----- forward ------------------------------------------------------------------------
    def encode(self, domain):
        """:class:`UserPosteriors` of every user row of ``domain``; while training, each item is
        dropped from every rating row with probability ``input_dropout`` (inverted dropout)."""
        inputs = self.encoder_items[domain].weight
        if self.training and self.input_dropout > 0:
            keep = 1.0 - self.input_dropout
            inputs = inputs * (domain_rand(self.layout, "item", domain, 1, inputs.device) < keep) / keep
        hidden = torch.tanh(self.ratings[domain] @ inputs + self.encoder_bias[domain])
        logvar = self.logvar_head[domain](hidden).clamp(*LOGVAR_RANGE)
        return UserPosteriors(self.mean_head[domain](hidden), logvar, self.item_embedding[domain].weight)

    def training_representations(self, domain):
        return self.encode(domain)

    def domain_representations(self, domain):
        posteriors = self.encode(domain)
        return posteriors.users, posteriors.items

    # ----- loss ---------------------------------------------------------------------------
    def domain_loss(self, domain, interaction, representations):
        users, pos, neg = self.batch(domain, interaction)
        posterior = representations.gaussian(users)
        items = representations.items
        loss = bpr_loss(posterior.sample(self.training), items[pos], items[neg])
        reg = l2_penalty(self.item_embedding[domain](pos), self.item_embedding[domain](neg))
        kl = gaussian_kl(posterior).mean()
        return loss + self.reg_weight * reg, self.kl_weight * kl

    def transfer_loss(self, interaction, representations):
        rows = {d: self.batch(d, interaction)[0] for d in DOMAINS}
        local = self.local_alignment(representations, rows)
        if self.global_weight > 0:
            points = {
                d: wasserstein_points(representations[d].gaussian(first_distinct(rows[d], self.global_users)))
                for d in DOMAINS
            }
            global_, _ = global_alignment(points["source"], points["target"], self.global_alpha, self.global_max_iter)
        else:
            global_ = local.new_zeros(())
        self.record_statistic("local_alignment", local.detach())
        self.record_statistic("global_alignment", global_.detach())
        return self.local_weight * local, self.global_weight * global_

    def local_alignment(self, representations, rows):
        """Mean squared 2-Wasserstein distance between the two posteriors of every overlapped
        user in either domain's batch ``rows`` (0 when there is none)."""
        both = torch.cat([rows[d] for d in DOMAINS])
        overlapped = torch.unique(both[is_overlapped(both, self.overlapped_num_users)])
        if len(overlapped) == 0:
            return representations["source"].users.new_zeros(())
        return gaussian_w2(
            representations["source"].gaussian(overlapped), representations["target"].gaussian(overlapped)
        ).mean()
