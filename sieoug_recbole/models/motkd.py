"""MOTKD (Yang et al., CIKM'23): multimodal optimal transport knowledge distillation.

Built from the paper's description (its abstract; no public code). Three parts, per step:

- multimodal graph attention (per domain): channels propagated over the domain's normalised
  user-item graph (LightGCN, mean of layers 0..L): the ID channel (user and item ID
  embeddings) and, per modality m, a content channel (the items' unit-scaled features
  projected by ``W_m``; users start from their ID embeddings, or from zero with
  ``content_user_start: zero``). A node's vector is the attention-weighted sum of its
  channels, ``alpha_c = softmax_c(q^T tanh(W h_c + b))``: a user's multimodal preference is
  what each channel brings to it, weighted per user. Propagation is linear, so a content
  channel is ``G [U; 0] + (G [0; X_m]) W_m`` (G the layer mean): ``G [0; X_m]`` is computed
  once (the features are frozen) and projected per row when needed, and ``G [U; 0]`` is one
  propagation shared by every modality;
- optimal transport through a proxy distribution: K learnable proxy points on the unit
  sphere, shared by both domains (uniform weights). Each domain's batch of users (unit
  vectors, uniform weights) is transported to the proxies by entropic OT (cost: squared
  distance); the loss ``<P, C>`` of both plans pulls both domains' user distributions towards
  the one proxy distribution. The plans also bridge the domains: proxy k's prototype in a
  domain is the barycentre of that domain's users sent to k, and a user's counterpart in the
  other domain is the mixture of the other domain's prototypes its plan row names (the
  source-target coupling glued at the proxies). Overlapped users use their own vector in the
  other domain instead (``overlap_counterpart``);
- multi-level knowledge distillation: a teacher per domain fuses a user's own vector with its
  cross-domain counterpart (attention over the two) and is trained by BPR on the domain's
  batch; it distils into the domain's own user vector (the student, which scores at
  evaluation) at the representation level (1 - cosine) and at the prediction level (KL
  between the teacher's and the student's pairwise preference probabilities).

Loss: per domain BPR + L2 on the batch's ego embeddings; in the BOTH phase also
``ot_weight * OT + teacher_weight * teacher BPR + kd_representation_weight * L_rep +
kd_prediction_weight * L_pred``. All graph work is sparse (per step one LightGCN
propagation per domain); the projections, the attention, the OT plans (batch x K) and the
teacher work on the batch's rows only.
"""

import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sieoug_recbole.config_checks import choice, integer, number
from sieoug_recbole.matching import is_overlapped, squared_euclidean_cost
from sieoug_recbole.models.base import DOMAINS, CrossDomainModel, bpr_loss, domain_id_embeddings, l2_penalty
from sieoug_recbole.models.lightgcn import domain_adjacencies, lightgcn_propagation
from sieoug_recbole.models.mm_graph import DomainModalities

COUNTERPARTS = ("identity", "proxy")


# ----- pure functions ------------------------------------------------------------------------
def channel_attention(channels, project, query):
    """Attention over channels: ``channels`` (n, C, D), ``project`` a map D -> A, ``query``
    (A,). Returns (fused (n, D), weights (n, C)), each row of weights a distribution."""
    weights = torch.softmax(torch.tanh(project(channels)) @ query, dim=1)
    return (weights.unsqueeze(-1) * channels).sum(dim=1), weights


def proxy_cost(users, proxies):
    """(n, K) squared distances between the unit vectors of ``users`` (n, D) and ``proxies``
    (K, D): ``2 - 2 cos``, in [0, 4]."""
    return squared_euclidean_cost(F.normalize(users, dim=1), F.normalize(proxies, dim=1), normalize=None)


def proxy_plan(cost, eps, max_iter=100, tol=1e-4):
    """Entropic OT plan (n, K) from n users (mass 1/n each) to K proxies (1/K each) for
    ``cost``, by POT's log-domain Sinkhorn (no gradient). Returns (plan, marginal error): the
    largest relative deviation of a row or column sum from its mass.

    ``tol``: the relative column-sum error at which to stop; POT stops on the L2 norm of the
    column sums' error, which is ``tol / sqrt(K)`` when every column is off by ``tol / K``."""
    import ot  # POT: imported on first use

    n, k = cost.shape
    cost = cost.detach()
    a = torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device)
    b = torch.full((k,), 1.0 / k, dtype=cost.dtype, device=cost.device)
    with warnings.catch_warnings():  # non-convergence is reported through the marginal error
        warnings.simplefilter("ignore")
        plan = ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", numItermax=max_iter, stopThr=tol / k**0.5)
    error = max(float((plan.sum(1) * n - 1).abs().max()), float((plan.sum(0) * k - 1).abs().max()))
    return plan, error


def proxy_prototypes(plan, vectors):
    """(K, D): proxy k's prototype, the barycentre of the ``vectors`` (n, D) its column of
    ``plan`` (n, K, columns summing to 1/K) receives."""
    return plan.shape[1] * (plan.T @ vectors)


def bridge_counterparts(plan, prototypes):
    """(n, D): each user's counterpart, the mixture of the other domain's ``prototypes`` (K, D)
    weighted by its row of ``plan`` (n, K, rows summing to 1/n)."""
    return plan.shape[0] * (plan @ prototypes)


def representation_distillation(student, teacher):
    """Mean of ``1 - cos(student_i, teacher_i)`` over the rows (0 where they point alike)."""
    return (1 - F.cosine_similarity(student, teacher, dim=1)).mean()


def preference_distillation(student_margin, teacher_margin, temperature):
    """Mean KL(teacher || student) of the Bernoulli preference probabilities
    ``sigmoid(margin / temperature)``, margins being score(pos) - score(neg) per row."""
    s, t = student_margin / temperature, teacher_margin / temperature
    p = torch.sigmoid(t)
    kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return kl.mean()


# ----- the model -----------------------------------------------------------------------------
class ChannelAttention(nn.Module):
    """Learnable :func:`channel_attention`: projection D -> A with bias, query (A,) from zero
    (uniform weights at the start)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.project = nn.Linear(dim, hidden)
        self.query = nn.Parameter(torch.zeros(hidden))

    def forward(self, channels):
        return channel_attention(channels, self.project, self.query)


class MOTKD(CrossDomainModel):
    """MOTKD: multimodal graph attention per domain, OT of both domains' users to shared proxies,
    and a cross-domain teacher distilled into each domain's user vectors.

    Reference: W. Yang et al., "Multimodal Optimal Transport Knowledge Distillation for
    Cross-domain Recommendation", CIKM 2023 (doi 10.1145/3583780.3614983); no public code.
    """

    config_checks = {
        "attention_size": integer(1),
        "n_proxies": integer(1),
        "proxy_eps": number(0, low_open=True),
        "proxy_max_iter": integer(1),
        "proxy_tol": number(0, low_open=True),
        "ot_weight": number(0),
        "teacher_weight": number(0),
        "kd_representation_weight": number(0),
        "kd_prediction_weight": number(0),
        "kd_temperature": number(0, low_open=True),
        "overlap_counterpart": choice(*COUNTERPARTS),
        "content_user_start": choice("zero", "id"),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = d = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        for key in self.config_checks:  # each of the model's own keys as an attribute
            setattr(self, key, config[key])

        self.user_embedding, self.item_embedding = domain_id_embeddings(self.layout, d)
        self.adjacency = domain_adjacencies(self, dataset)
        self.domains = {x: MotkdDomain(self, config, dataset, x) for x in DOMAINS}
        self.feature_projection = nn.ModuleDict(
            {
                x: nn.ModuleDict(
                    {
                        m: nn.Linear(content["item"].shape[1], d, bias=False)
                        for m, content in self.domains[x].content.items()
                    }
                )
                for x in DOMAINS
            }
        )
        for projections in self.feature_projection.values():
            for projection in projections.values():
                nn.init.xavier_normal_(projection.weight)
        self.modality_attention = nn.ModuleDict({x: ChannelAttention(d, self.attention_size) for x in DOMAINS})
        self.teacher_attention = nn.ModuleDict({x: ChannelAttention(d, self.attention_size) for x in DOMAINS})
        self.proxies = nn.Parameter(F.normalize(torch.randn(self.n_proxies, d), dim=1))

    # ----- multimodal graph attention ---------------------------------------------------------
    def channels(self, domain):
        """:class:`MotkdStep` of ``domain``: its ID channel propagated over the user-item graph
        (this step's ID embeddings), with the domain's propagated content."""
        users_0, items_0 = self.user_embedding[domain].weight, self.item_embedding[domain].weight
        start = None
        if self.content_user_start == "id":  # also propagate [users; 0], the content channels' start
            users_0, items_0 = users_0.repeat(1, 2), torch.cat([items_0, torch.zeros_like(items_0)], 1)
        users, items = lightgcn_propagation(self.adjacency[domain], users_0, items_0, self.n_layers)
        if self.content_user_start == "id":
            (users, start_users), (items, start_items) = users.chunk(2, 1), items.chunk(2, 1)
            start = {"user": start_users, "item": start_items}
        return MotkdStep(
            self.modality_attention[domain],
            {"user": users, "item": items},
            self.domains[domain].content,
            self.feature_projection[domain],
            start,
        )

    def training_representations(self, domain):
        return self.channels(domain)

    def domain_representations(self, domain):
        step = self.channels(domain)
        return step.users(), step.items()

    def step_user_vectors(self, domain, representations, rows=None):
        return representations.users(rows)

    # ----- losses -----------------------------------------------------------------------------
    def batch_vectors(self, domain, interaction, step):
        """:class:`StepBatch` of ``domain``: fused once per step (the domain loss and the
        transfer terms share it)."""
        if step.batch is None:
            users, pos, neg = self.batch(domain, interaction)
            step.batch = StepBatch(users, pos, neg, step.users(users), *step.items(torch.cat([pos, neg])).chunk(2))
        return step.batch

    def domain_loss(self, domain, interaction, representations):
        b = self.batch_vectors(domain, interaction, representations)
        reg = l2_penalty(
            self.user_embedding[domain](b.users), self.item_embedding[domain](b.pos), self.item_embedding[domain](b.neg)
        )
        return (bpr_loss(b.user, b.pos_item, b.neg_item) + self.reg_weight * reg,)

    def transfer_loss(self, interaction, representations):
        """(OT to the proxies, teacher BPR, representation KD, prediction KD), weighted."""
        batches = {d: self.batch_vectors(d, interaction, representations[d]) for d in DOMAINS}
        students = {d: batches[d].user for d in DOMAINS}
        plans, ot_loss = {}, 0.0
        for d in DOMAINS:
            cost = proxy_cost(students[d], self.proxies)
            plans[d], error = proxy_plan(cost, self.proxy_eps, self.proxy_max_iter, self.proxy_tol)
            ot_loss = ot_loss + (plans[d] * cost).sum()
            self.record_statistic(f"proxy_marginal_error_{d}", error)
        prototypes = {d: proxy_prototypes(plans[d], students[d]) for d in DOMAINS}
        teacher_loss = kd_rep = kd_pred = 0.0
        for d, other in zip(DOMAINS, reversed(DOMAINS)):
            pos_item, neg_item = batches[d].pos_item, batches[d].neg_item
            counterpart = self.counterparts(batches[d].users, plans[d], prototypes[other], representations[other])
            teacher, weights = self.teacher_attention[d](torch.stack([students[d], counterpart], dim=1))
            teacher_loss = teacher_loss + bpr_loss(teacher, pos_item, neg_item)
            teacher, teacher_margin = teacher.detach(), ((teacher * (pos_item - neg_item)).sum(-1)).detach()
            student_margin = (students[d] * (pos_item - neg_item)).sum(-1)
            kd_rep = kd_rep + representation_distillation(students[d], teacher)
            kd_pred = kd_pred + preference_distillation(student_margin, teacher_margin, self.kd_temperature)
            self.record_statistic(f"teacher_counterpart_weight_{d}", weights[:, 1].mean().detach())
        self.record_statistic("proxy_ot", ot_loss.detach())
        return (
            self.ot_weight * ot_loss,
            self.teacher_weight * teacher_loss,
            self.kd_representation_weight * kd_rep,
            self.kd_prediction_weight * kd_pred,
        )

    def counterparts(self, users, plan, other_prototypes, other_step):
        """(n, D) cross-domain counterparts of a batch's ``users`` (table rows): through the
        proxies (:func:`bridge_counterparts`), or, with ``overlap_counterpart: identity``, an
        overlapped user's own vector in the other domain (the same row there)."""
        bridged = bridge_counterparts(plan, other_prototypes)
        if self.overlap_counterpart == "proxy":
            return bridged
        overlapped = is_overlapped(users, self.overlapped_num_users)
        own = other_step.users(torch.where(overlapped, users, torch.zeros_like(users)))
        return torch.where(overlapped.unsqueeze(1), own, bridged)


class StepBatch(NamedTuple):
    """A domain's training batch in a step: table rows, then fused vectors."""

    users: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor
    user: torch.Tensor
    pos_item: torch.Tensor
    neg_item: torch.Tensor


class MotkdStep:
    """One domain's channels in a step, fused by its modality attention on the rows asked for
    (all rows by default). ``ids``: {'user' | 'item': propagated ID channel}; ``content``:
    {modality: {'user' | 'item': propagated features}}; ``projections``: {modality: W_m}."""

    def __init__(self, attention, ids, content, projections, start=None):
        self.attention, self.ids, self.content, self.projections = attention, ids, content, projections
        self.start = start
        self.batch = None  # the step's batch rows and vectors (MOTKD.batch_vectors)

    def users(self, rows=None):
        return self.attention(self.channels("user", rows))[0]

    def items(self, rows=None):
        return self.attention(self.channels("item", rows))[0]

    def weights(self, kind, rows=None):
        """(n, C) attention weights over the channels (ID, then the modalities) of ``kind``'s rows."""
        return self.attention(self.channels(kind, rows))[1]

    def channels(self, kind, rows=None):
        """(n, C, D): the ID channel and every modality's projected content of ``kind``'s rows."""

        def take(x):
            return x if rows is None else x[rows]

        out = [take(self.ids[kind])]
        out += [self.projections[m](take(parts[kind])) for m, parts in self.content.items()]
        if self.start is not None:
            start = take(self.start[kind])
            out = out[:1] + [x + start for x in out[1:]]
        return torch.stack(out, dim=1)


class MotkdDomain:
    """MOTKD's frozen input of one domain, ``content``: per modality the raw features (each
    row scaled to unit length) propagated as a channel is (mean of layers 0..L over the
    user-item graph, users starting at zero, items without features at zero),
    ``{modality: {'user': (U, d_m), 'item': (I, d_m)}}``."""

    def __init__(self, model, config, dataset, domain):
        items = DomainModalities(config, dataset, domain, model.layout)
        self.modalities = items.modalities
        features = items.padded_features(model.device)
        feature_rows = torch.from_numpy(items.feature_rows(model.n_items[domain])).to(model.device)
        self.content = {}
        for m, x in features.items():
            x = F.normalize(x, dim=1)
            users_0 = torch.zeros(model.n_users[domain], x.shape[1], device=model.device)
            with torch.no_grad():
                users, items_ = lightgcn_propagation(model.adjacency[domain], users_0, x[feature_rows], model.n_layers)
            self.content[m] = {"user": users, "item": items_}
