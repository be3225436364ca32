"""DisenCDR (Cao et al., SIGIR'22): disentangled domain-shared and domain-specific user parts.

Every user has Gaussian posteriors over three latent parts: a *specific* part per domain
(``Z_u^source``, ``Z_u^target``) and one *shared* part ``Z_u^S``; items have a specific part of
their domain. They come from variational bipartite graph encoders (:class:`GraphSideEncoder`):
per layer a node's features travel to its neighbours on the other side and back (two graph
convolutions over the row-normalised interaction graph, LeakyReLU) and are joined with the
node's own features by a linear layer; the last layer has two heads, mean and log-variance.

- specific encoders, per domain: its users and its items, from the domain's ID embeddings;
- single-domain shared encoders ``q(Z^S | domain)``, per domain: users only, from the domain's
  shared-user ID embeddings;
- the joint shared encoder ``q(Z^S | source, target)``: one branch per domain, whose outputs for
  an overlapped user are mixed after every layer with the paper's weight
  ``lambda_u = N_u^source / (N_u^source + N_u^target)`` (the user's share of training
  interactions in the source); its last layer mixes mean and log-variance alike, so an
  overlapped user has ONE shared posterior, the same in both domains.

A domain's user vector is ``Z_u^S + Z_u^domain`` and its score with an item the dot product
with the item's ``Z_i^domain`` (samples while training, means when scoring). The loss of a
domain's batch (user u, positive i, sampled negative j) is the reconstruction of the
interactions (binary cross-entropy of the positive against 1 and the negative against 0, or
BPR) plus ``kl_weight`` times the KL terms of the batch's rows::

    KL(q(Z_u^d) || N(0, I)) + KL(q(Z_i^d) || N(0, I)) + KL(q(Z_j^d) || N(0, I))
      + (1 - beta) KL(q(Z_u^S) || N(0, I)) + beta KL(q(Z_u^S | source, target) || q(Z_u^S | d))

The paper's two mutual-information regularisers (exclusive: the shared and a specific part
hold little common information; inclusive: the shared part is informative about both domains)
are bounded by exactly these reconstruction and KL terms, as in the authors' released code.

The paper assumes every user is in both domains. Here only overlapped users (rows
1..n_o-1, the same in both domains) have a joint posterior; a user seen in one domain gets
its shared part from that domain's single-domain shared encoder, which the beta term trains
(on the overlapped users) to infer from one domain what the joint encoder infers from both
(for such a user the beta term is zero: both posteriors are the same one).

Reference: Cao, Lin, Cong, Ya, Liu and Wang, "DisenCDR: Learning Disentangled Representations
for Cross-Domain Recommendation", SIGIR 2022; official code https://github.com/cjx96/DisenCDR.
"""

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sieoug_recbole.config_checks import choice, integer, number
from sieoug_recbole.graph import SparseOperator
from sieoug_recbole.models.base import DOMAINS, CrossDomainModel, bpr_loss, domain_id_embeddings
from sieoug_recbole.models.cdr_parts import domain_tables

LOSS_TYPES = ("bce", "bpr")
# log-variances are clamped to this range (exp(+-10): no overflow in the KL terms)
LOGVAR_RANGE = (-10.0, 10.0)
# the log-variance heads start here (std ~0.05, the scale of the xavier ID embeddings): posteriors
# that start at the prior's unit variance drown the small initial scores in sampling noise
INITIAL_LOGVAR = -6.0


# ----- pure functions ----------------------------------------------------------------------
class Gaussian(NamedTuple):
    """Diagonal Gaussians, one per row: means and log-variances of the same shape."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def rows(self, rows):
        return Gaussian(self.mean[rows], self.logvar[rows])

    def sample(self, random=True):
        """A reparameterised draw (differentiable in the mean and log-variance); the mean when
        not ``random`` (a model in eval mode computes its loss without noise)."""
        if not random:
            return self.mean
        return self.mean + (0.5 * self.logvar).exp() * torch.randn_like(self.mean)


def gaussian_kl(q, p=None):
    """KL(q || p) of diagonal Gaussians per row (summed over the last dimension); ``p`` is the
    standard normal N(0, I) when not given."""
    if p is None:
        return 0.5 * (q.logvar.exp() + q.mean.pow(2) - 1.0 - q.logvar).sum(dim=-1)
    return 0.5 * (p.logvar - q.logvar + (q.logvar.exp() + (q.mean - p.mean).pow(2)) / p.logvar.exp() - 1.0).sum(dim=-1)


def mix_overlapped(source, target, source_weight, n_overlap):
    """(source, target) with rows 1..n_overlap-1 of both replaced by
    ``source_weight * source + (1 - source_weight) * target`` (one mixed row per overlapped
    user, the same in both); the other rows are kept. ``source_weight``: (n_overlap - 1, 1)."""
    mixed = source_weight * source[1:n_overlap] + (1.0 - source_weight) * target[1:n_overlap]
    return (torch.cat([source[:1], mixed, source[n_overlap:]]), torch.cat([target[:1], mixed, target[n_overlap:]]))


def row_normalized(matrix):
    """``D^-1 M`` for a scipy sparse matrix: each row the mean over its entries (an empty row
    stays empty)."""
    sums = np.asarray(matrix.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return matrix.multiply(scale[:, None].astype(np.float32)).tocsr()


def domain_rand(layout, kind, domain, columns, device):
    """Uniform [0, 1) draws for the rows of ``domain``'s ``kind`` table: one row of draws per
    user or item of the domain, in the domain's numbering, placed on its table rows (in the
    global layout the other domain's rows get 0 and are never read). Both id layouts draw the
    same numbers for the same user or item."""
    draws = torch.rand(layout.ranges.domain_size(kind, domain), columns, device=device)
    if layout.is_local:  # row r is the r-th id of the domain numbering
        return draws
    rows = torch.from_numpy(layout.ranges.domain_ids(kind, domain)).to(device)
    return draws.new_zeros(layout.ranges.total(kind), columns).index_copy_(0, rows, draws)


# ----- encoders ----------------------------------------------------------------------------
class TwoHopLayer(nn.Module):
    """One encoder layer for one side (users or items) of a bipartite graph:

        other = LeakyReLU(A_out (x W_out + b_out))         (on the other side)
        hop   = LeakyReLU(A_back (other W_back + b_back))  (back on this side)
        out   = Linear([hop ; x])

    ``A_out`` (other side x this side) averages this side's features onto each neighbour,
    ``A_back`` (this side x other side) averages them back. ``heads`` outputs, each with its own
    ``W_back`` and ``Linear``: one for a hidden layer, two (mean, log-variance) for the last."""

    def __init__(self, dim, heads, slope):
        super().__init__()
        self.slope = slope
        self.out_hop = nn.Linear(dim, dim)
        self.back_hops = nn.ModuleList(nn.Linear(dim, dim) for _ in range(heads))
        self.unions = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(heads))

    def forward(self, x, outward, back):
        other = F.leaky_relu(outward @ self.out_hop(x), self.slope)
        return [
            union(torch.cat([F.leaky_relu(back @ hop(other), self.slope), x], dim=1))
            for hop, union in zip(self.back_hops, self.unions)
        ]


class GraphSideEncoder(nn.Module):
    """A variational bipartite graph encoder of one side: ``n_layers`` :class:`TwoHopLayer`,
    ReLU after the hidden ones, the last one giving (mean, log-variance)."""

    def __init__(self, dim, n_layers, slope):
        super().__init__()
        self.layers = nn.ModuleList(TwoHopLayer(dim, 2 if i == n_layers - 1 else 1, slope) for i in range(n_layers))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.layers[-1].unions[1].bias, INITIAL_LOGVAR)

    def step(self, index, x, outward, back):
        """Layer ``index``: (features,) for a hidden layer, (mean, log-variance) for the last."""
        out = self.layers[index](x, outward, back)
        if index < len(self.layers) - 1:
            return (torch.relu(out[0]),)
        return out[0], out[1].clamp(*LOGVAR_RANGE)


class Stream(NamedTuple):
    """One encoder run: the encoder, its input features, its graph operators (outward, back) and
    the dropout to apply before every layer (``x -> x``)."""

    encoder: GraphSideEncoder
    features: torch.Tensor
    outward: SparseOperator
    back: SparseOperator
    dropout: object


def run_streams(streams, n_layers, exchange=None):
    """Run several encoders layer by layer: ``{key: Stream}`` -> ``{key: Gaussian}``.
    ``exchange(outputs)``, when given, maps the ``{key: layer outputs}`` of every layer to new
    ones (the joint shared encoder mixes its branches there)."""
    features = {key: s.features for key, s in streams.items()}
    for index in range(n_layers):
        outputs = {
            key: s.encoder.step(index, s.dropout(features[key]), s.outward, s.back) for key, s in streams.items()
        }
        if exchange is not None:
            outputs = exchange(outputs)
        features = {key: out[0] for key, out in outputs.items()}
    return {key: Gaussian(*out) for key, out in outputs.items()}


class DomainPosteriors(NamedTuple):
    """What one forward pass gives a domain: the vectors that score (``users``, ``items``:
    posterior means) and the posteriors the loss samples and regularises."""

    users: torch.Tensor
    items: torch.Tensor
    specific_user: Gaussian
    specific_item: Gaussian
    shared: Gaussian  # the shared part of the domain's users: joint (overlapped) or single-domain
    single: Gaussian  # q(Z^S | this domain)


# ----- the model ---------------------------------------------------------------------------
class DisenCDR(CrossDomainModel):
    """DisenCDR: variational domain-shared and domain-specific user parts (see the module text).

    Reference: Cao et al., SIGIR 2022; official code https://github.com/cjx96/DisenCDR.
    """

    config_checks = {
        "n_layers": integer(1),
        "beta": number(0, 1),
        "kl_weight": number(0),
        "dropout": number(0, 0.95),
        "leaky_slope": number(0),
        "loss_type": choice(*LOSS_TYPES),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim = self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.beta = config["beta"]
        self.kl_weight = config["kl_weight"]
        self.dropout = config["dropout"]
        self.loss_type = config["loss_type"]
        slope = config["leaky_slope"]
        # ID inputs: the specific encoders' users and items, the shared encoders' users
        self.user_embedding, self.item_embedding = domain_id_embeddings(self.layout, dim)
        self.shared_user_embedding = domain_tables(self.layout, "user", dim)

        def encoders():
            return nn.ModuleDict({d: GraphSideEncoder(dim, self.n_layers, slope) for d in DOMAINS})

        self.specific_user_encoder, self.specific_item_encoder = encoders(), encoders()
        self.single_shared_encoder, self.joint_shared_encoder = encoders(), encoders()

        matrices = {d: self.training_matrix(dataset, d) for d in DOMAINS}
        for matrix in matrices.values():
            matrix.data[:] = 1.0  # a repeated pair is one edge
        # (items x users) and (users x items), each row the mean over the row's neighbours
        self.to_items = {d: SparseOperator(row_normalized(m.T.tocsr()), self.device) for d, m in matrices.items()}
        self.to_users = {d: SparseOperator(row_normalized(m), self.device) for d, m in matrices.items()}
        n_o = self.overlapped_num_users
        degree = {d: np.asarray(m[1:n_o].sum(axis=1), dtype=np.float64).ravel() for d, m in matrices.items()}
        total = degree["source"] + degree["target"]
        weight = np.divide(degree["source"], total, out=np.full_like(total, 0.5), where=total > 0)
        self.register_buffer(
            "source_weight", torch.from_numpy(weight.astype(np.float32)).unsqueeze(1), persistent=False
        )
        self._step = None  # both domains' posteriors of the current training step

    # ----- forward ------------------------------------------------------------------------
    def _dropout(self, kind, domain):
        """Feature dropout of ``domain``'s ``kind`` table (inverted; off when not training)."""
        if not self.training or self.dropout == 0:
            return lambda x: x
        keep = 1.0 - self.dropout

        def apply(x):
            mask = domain_rand(self.layout, kind, domain, x.shape[1], x.device) < keep
            return x * mask / keep

        return apply

    def _user_streams(self, encoders, inputs):
        return {
            d: Stream(encoders[d], inputs[d].weight, self.to_items[d], self.to_users[d], self._dropout("user", d))
            for d in DOMAINS
        }

    def _exchange(self, outputs):
        """The joint encoder's mixing of its two branches' outputs for the overlapped users."""
        mixed = [
            mix_overlapped(s, t, self.source_weight, self.overlapped_num_users)
            for s, t in zip(outputs["source"], outputs["target"])
        ]
        return {"source": tuple(m[0] for m in mixed), "target": tuple(m[1] for m in mixed)}

    def posteriors(self):
        """``{domain: DomainPosteriors}`` of the current weights (dropout while training)."""
        specific_users = run_streams(self._user_streams(self.specific_user_encoder, self.user_embedding), self.n_layers)
        specific_items = run_streams(
            {
                d: Stream(
                    self.specific_item_encoder[d],
                    self.item_embedding[d].weight,
                    self.to_users[d],
                    self.to_items[d],
                    self._dropout("item", d),
                )
                for d in DOMAINS
            },
            self.n_layers,
        )
        single = run_streams(self._user_streams(self.single_shared_encoder, self.shared_user_embedding), self.n_layers)
        joint = run_streams(
            self._user_streams(self.joint_shared_encoder, self.shared_user_embedding),
            self.n_layers,
            exchange=self._exchange,
        )
        n_o = self.overlapped_num_users
        out = {}
        for d in DOMAINS:
            shared = Gaussian(*(torch.cat([s[:1], j[1:n_o], s[n_o:]]) for s, j in zip(single[d], joint[d])))
            out[d] = DomainPosteriors(
                shared.mean + specific_users[d].mean,
                specific_items[d].mean,
                specific_users[d],
                specific_items[d],
                shared,
                single[d],
            )
        return out

    def calculate_loss(self, interaction):
        self._step = self.posteriors()  # one pass serves both domains (the joint encoder needs both)
        try:
            return super().calculate_loss(interaction)
        finally:
            self._step = None

    def training_representations(self, domain):
        return self._step[domain] if self._step is not None else self.posteriors()[domain]

    def domain_representations(self, domain):
        posteriors = self.training_representations(domain)
        return posteriors.users, posteriors.items

    # ----- loss ---------------------------------------------------------------------------
    def domain_loss(self, domain, interaction, representations):
        users, pos, neg = self.batch(domain, interaction)
        post = representations
        shared, specific = post.shared.rows(users), post.specific_user.rows(users)
        pos_item, neg_item = post.specific_item.rows(pos), post.specific_item.rows(neg)
        noisy = self.training
        user = shared.sample(noisy) + specific.sample(noisy)
        pos_vector, neg_vector = pos_item.sample(noisy), neg_item.sample(noisy)
        if self.loss_type == "bce":
            reconstruction = -(
                F.logsigmoid((user * pos_vector).sum(-1)) + F.logsigmoid(-(user * neg_vector).sum(-1))
            ).mean()
        else:
            reconstruction = bpr_loss(user, pos_vector, neg_vector)
        shared_to_single = gaussian_kl(shared, post.single.rows(users)).mean()  # 0 for a non-overlapped user
        self.record_statistic(f"kl_shared_single_{domain}", shared_to_single.detach())
        kl = (
            gaussian_kl(specific).mean()
            + gaussian_kl(pos_item).mean()
            + gaussian_kl(neg_item).mean()
            + (1.0 - self.beta) * gaussian_kl(shared).mean()
            + self.beta * shared_to_single
        )
        return reconstruction, self.kl_weight * kl
