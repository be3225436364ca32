"""LGMRec (Guo et al., AAAI'24) as a single-domain multi-modal baseline run on each domain.

Per domain (no transfer between domains), with user and item vectors stacked as one
(users + items) table:

- local graph embedding: the collaborative embedding E^c (LightGCN over the user-item graph,
  mean of layers 0..L) plus, per modality m, a modality graph embedding E^m: item features
  projected x W_m, each user starting from the mean of its interacted items' projected
  features (no user ID embedding, so collaborative and modality signals stay decoupled),
  propagated K times over the same user-item graph. E^lge = E^c + sum_m NORM(E^m);
- global hypergraph embedding: per modality, A learnable hyperedges V_m; item-hyperedge
  dependencies H_i = X_m V_m^T (X_m the item features), user-hyperedge dependencies
  H_u = R H_i (R the user-item interactions), each relaxed row-wise by a Gumbel-softmax
  (rows sum to 1) and dropped out in training; items pass messages through the hyperedges,
  X^(h+1) = H_i (H_i^T X^(h)) from the collaborative item embeddings, and users read the
  hyperedges of the last layer, U = H_u (H_i^T X^(H-1)). E^ghe = sum_m (U_m; X_m^(H));
- fusion: E = E^lge + global_weight * NORM(E^ghe), scored by dot products;
- loss: BPR + cl_weight * InfoNCE between two modalities' global embeddings of the batch's
  users and positive items (the hypergraph contrastive term, negatives every user / item of
  the domain) + reg_weight * L2 of the batch's ego ID embeddings.

Everything is sparse or thin: the graphs are sparse operators, a dependency matrix is
(items x A) with A small; the hypergraph is built on the domain's own users and items (so a
step draws the same noise in either id layout) and lifted onto the table rows.

Reference: Z. Guo, J. Li, G. Li, C. Wang, S. Shi, B. Ruan. LGMRec: Local and Global Graph
Learning for Multimodal Recommendation. AAAI 2024. Official code:
https://github.com/georgeguo-cn/LGMRec
"""

from itertools import combinations
from typing import NamedTuple, Optional

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from sieoug_recbole.config_checks import boolean, choice, integer, number
from sieoug_recbole.graph import SparseOperator, propagate
from sieoug_recbole.models.base import DOMAINS, CrossDomainModel, bpr_loss, domain_id_embeddings, l2_penalty
from sieoug_recbole.models.lightgcn import domain_adjacencies
from sieoug_recbole.models.mm_graph import DomainModalities

NOISES = ("gumbel", "logistic")


# ----- the algorithm, on plain tensors ---------------------------------------------------------
def gumbel_softmax_rows(logits, temperature, noise="gumbel"):
    """Row-wise relaxed one-hot assignment ``softmax((logits + g) / temperature)``.

    ``noise``: ``gumbel`` (g = -log(-log d), d ~ U(0, 1): the Gumbel-softmax of the released
    code), ``logistic`` (g = log d - log(1 - d): the formula as the paper prints it) or None
    (g = 0: the plain tempered softmax). Every row sums to 1.
    """
    if noise is not None:
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES} or None, got {noise!r}")
        tiny = torch.finfo(logits.dtype).tiny
        uniform = torch.rand_like(logits).clamp(tiny, 1.0 - 1e-7)
        if noise == "gumbel":
            logits = logits - torch.log(-torch.log(uniform))
        else:
            logits = logits + torch.log(uniform) - torch.log1p(-uniform)
    return torch.softmax(logits / temperature, dim=1)


def hypergraph_propagation(item_dependency, user_dependency, items, n_layers):
    """Messages between nodes and hyperedges: ``X^(h+1) = H_i (H_i^T X^(h))`` for ``n_layers``
    layers from ``X^(0) = items``; users read the last layer's hyperedges,
    ``U = H_u (H_i^T X^(n_layers - 1))``. Returns (U, X^(n_layers)); ``H_i`` is (items x A),
    ``H_u`` (users x A)."""
    if n_layers < 1:
        raise ValueError(f"hypergraph propagation needs at least one layer, got {n_layers}")
    for _ in range(n_layers):
        hyperedges = item_dependency.T @ items  # (A, d)
        items = item_dependency @ hyperedges
    return user_dependency @ hyperedges, items


def hypergraph_contrastive_loss(anchor, candidates, positive, temperature):
    """InfoNCE summed over the batch: ``sum_b -log exp(s(a_b, c_{p_b}) / t) / sum_c exp(s(a_b, c) / t)``
    with s the cosine; ``positive[b]`` indexes the candidate that is anchor b's positive (the
    other modality's vector of the same node; the candidates are its vectors of every node)."""
    scores = (unit_rows(anchor) / temperature) @ unit_rows(candidates).T  # (batch, nodes), never nodes x nodes
    return F.cross_entropy(scores, positive, reduction="sum")


def unit_rows(x):
    """Rows scaled to unit L2 norm, a zero row staying zero (``F.normalize``, with a cheaper
    backward pass: one multiplication by the inverse norms)."""
    return x * torch.rsqrt((x * x).sum(dim=1, keepdim=True).clamp_min(1e-24))


def fuse_local_global(collaborative, modal, global_, global_weight):
    """``E^c + sum_m NORM(E^m) + global_weight * NORM(E^ghe)`` (rows L2-normalised); ``global_``
    None leaves the local embeddings."""
    fused = collaborative + sum(unit_rows(e) for e in modal)
    if global_ is not None:
        fused = fused + global_weight * unit_rows(global_)
    return fused


def scatter_rows(values, rows, num_rows):
    """A (num_rows, d) table holding ``values[k]`` at row ``rows[k]`` and zeros elsewhere."""
    return values.new_zeros((num_rows, values.shape[1])).index_copy(0, rows, values)


class StepVectors(NamedTuple):
    """The parts of one domain's vectors in a training step, fused only for the rows a loss
    reads (the normalisations are per row). ``collaborative``, ``modal`` (one per modality),
    ``global_`` (or None): (users + items, d) tables; ``global_parts``: ``{modality: (users,
    items)}`` on the domain's own users and items (or None)."""

    collaborative: torch.Tensor
    modal: list
    global_: Optional[torch.Tensor]
    global_parts: Optional[dict]
    global_weight: float
    n_users: int

    def rows(self, index=slice(None)):
        """Fused vectors of the (users + items) table's rows ``index`` (all by default)."""

        def take(table):
            return None if table is None else table[index]

        return fuse_local_global(
            take(self.collaborative), [take(e) for e in self.modal], take(self.global_), self.global_weight
        )

    def users(self, rows=None):
        """Fused vectors of user ``rows`` (all users by default)."""
        return self.rows(slice(0, self.n_users) if rows is None else rows)

    def items(self, rows):
        """Fused vectors of item ``rows``."""
        return self.rows(rows + self.n_users)

    def triples(self, users, pos, neg):
        """Fused vectors of a batch's users, positive and negative items, gathered at once (one
        gather per part, one scatter back per part in the backward pass)."""
        fused = self.rows(torch.cat([users, pos + self.n_users, neg + self.n_users]))
        return torch.split(fused, [len(users), len(pos), len(neg)])


# ----- the model -----------------------------------------------------------------------------
class LGMRec(CrossDomainModel):
    """LGMRec per domain: local embeddings (collaborative LightGCN + modality graph embeddings
    from projected item features) fused with global hypergraph embeddings (learnable
    hyperedges per modality, Gumbel-softmax dependencies); BPR + hypergraph contrastive loss
    between modalities + L2 (see the module's docstring).

    Reference: Guo et al., LGMRec: Local and Global Graph Learning for Multimodal
    Recommendation, AAAI 2024; code https://github.com/georgeguo-cn/LGMRec
    """

    config_checks = {
        "n_modal_layers": integer(0),
        "modal_readout": choice("last", "mean"),
        "n_hyperedges": integer(1),
        "n_hyper_layers": integer(1),
        "hyperedge_features": choice("raw", "projected"),
        "hypergraph_input": choice("collaborative", "id"),
        "gumbel_temperature": number(0, low_open=True),
        "gumbel_noise": choice(*NOISES),
        "hyperedge_noise_at_eval": boolean(),
        "keep_rate": number(0, 1, low_open=True),
        "global_weight": number(0),
        "use_hypergraph": boolean(),
        "cl_weight": number(0),
        "cl_temperature": number(0, low_open=True),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        for key in ("embedding_size", "n_layers", "reg_weight", *LGMRec.config_checks):  # each key an attribute
            setattr(self, key, config[key])
        d = self.embedding_size
        self.user_embedding, self.item_embedding = domain_id_embeddings(self.layout, d)
        self.adjacency = domain_adjacencies(self, dataset)
        self.domains = {x: LGMRecDomain(self, config, dataset, x) for x in DOMAINS}
        self.feature_projection = nn.ModuleDict()  # W_m, bias-free (paper: E^m W_m)
        self.hyperedges = nn.ModuleDict()  # V_m: (A, width of what the dependencies are computed from)
        for x in DOMAINS:
            widths = {m: f.shape[1] for m, f in self.domains[x].features.items()}
            self.feature_projection[x] = nn.ModuleDict({m: nn.Linear(w, d, bias=False) for m, w in widths.items()})
            self.hyperedges[x] = nn.ParameterDict(
                {
                    m: nn.Parameter(torch.empty(self.n_hyperedges, w if self.hyperedge_features == "raw" else d))
                    for m, w in widths.items()
                }
            )
            for m in widths:
                nn.init.xavier_uniform_(self.feature_projection[x][m].weight)
                nn.init.xavier_uniform_(self.hyperedges[x][m])

    # ----- representations --------------------------------------------------------------------
    def domain_representations(self, domain):
        fused = self.training_representations(domain).rows()
        return torch.split(fused, [self.n_users[domain], self.n_items[domain]])

    def training_representations(self, domain):
        """The step's :class:`StepVectors` of ``domain``."""
        state = self.domains[domain]
        n_users = self.n_users[domain]
        ego_items = self.item_embedding[domain].weight
        ego = torch.cat([self.user_embedding[domain].weight, ego_items])
        collaborative = propagate(self.adjacency[domain], ego, self.n_layers)
        projected = {
            m: self.feature_projection[domain][m](state.features[m])[state.feature_rows] for m in state.modalities
        }  # (item rows, d); rows without features stay 0
        modal = [self.modal_graph_embedding(domain, items) for items in projected.values()]
        global_parts = global_ = None
        if self.use_hypergraph:
            items_in = collaborative[n_users:] if self.hypergraph_input == "collaborative" else ego_items
            global_parts = {
                m: self.hypergraph_embedding(domain, m, projected[m], items_in[state.item_rows])
                for m in state.modalities
            }
            global_ = torch.cat(
                [
                    scatter_rows(sum(u for u, _ in global_parts.values()), state.user_rows, n_users),
                    scatter_rows(sum(i for _, i in global_parts.values()), state.item_rows, self.n_items[domain]),
                ]
            )
        return StepVectors(collaborative, modal, global_, global_parts, self.global_weight, n_users)

    def step_user_vectors(self, domain, representations, rows=None):
        return representations.users(rows)

    def modal_graph_embedding(self, domain, item_features):
        """E^m of one modality: users start as the mean of their items' projected features,
        then K propagations over the user-item graph (readout ``modal_readout``)."""
        users = self.domains[domain].mean_of_items @ item_features
        return propagate(
            self.adjacency[domain], torch.cat([users, item_features]), self.n_modal_layers, reduce=self.modal_readout
        )

    def hypergraph_embedding(self, domain, modality, projected, items_in):
        """(global users, global items) of one modality, on the domain's own users and items
        (``user_rows`` / ``item_rows`` order); ``projected``: the projected features on item
        rows, ``items_in``: the domain's items' input vectors."""
        state = self.domains[domain]
        source = state.raw_features(modality) if self.hyperedge_features == "raw" else projected[state.item_rows]
        item_logits = source @ self.hyperedges[domain][modality].T  # (domain items, A)
        user_logits = state.user_item @ item_logits  # (domain users, A)
        return hypergraph_propagation(
            self.dependency(item_logits), self.dependency(user_logits), items_in, self.n_hyper_layers
        )

    def dependency(self, logits):
        """Gumbel-softmax relaxed dependencies, with noise and dropout in training only (noise
        at evaluation too with ``hyperedge_noise_at_eval``)."""
        noisy = self.training or self.hyperedge_noise_at_eval
        relaxed = gumbel_softmax_rows(logits, self.gumbel_temperature, self.gumbel_noise if noisy else None)
        return F.dropout(relaxed, p=1.0 - self.keep_rate, training=self.training)

    # ----- loss -------------------------------------------------------------------------------
    def domain_loss(self, domain, interaction, representations):
        users, pos, neg = self.batch(domain, interaction)
        loss = bpr_loss(*representations.triples(users, pos, neg))
        if self.reg_weight:
            loss = loss + self.reg_weight * l2_penalty(
                self.user_embedding[domain](users), self.item_embedding[domain](pos), self.item_embedding[domain](neg)
            )
        contrast = self.hypergraph_contrast(domain, representations.global_parts, users, pos)
        self.record_statistic(f"loss_hcl_{domain}", contrast.detach())
        return loss, self.cl_weight * contrast

    def hypergraph_contrast(self, domain, global_parts, users, pos):
        """The hypergraph contrastive loss of a batch: for every pair of modalities, InfoNCE
        from the first one's global vectors of the batch's users (positive items) to the
        second one's, against every user (item) of the domain. Zero without the hypergraph,
        with one modality, or (not computed) with ``cl_weight`` 0."""
        total = self.user_embedding[domain].weight.new_zeros(())
        if global_parts is None or not self.cl_weight:
            return total
        state = self.domains[domain]
        users, pos = state.user_position[users], state.item_position[pos]
        for first, second in combinations(state.modalities, 2):
            (users_a, items_a), (users_b, items_b) = global_parts[first], global_parts[second]
            total = total + hypergraph_contrastive_loss(users_a[users], users_b, users, self.cl_temperature)
            total = total + hypergraph_contrastive_loss(items_a[pos], items_b, pos, self.cl_temperature)
        return total


class LGMRecDomain:
    """LGMRec's fixed structures of one domain: its modalities and features, the table rows
    of its own users and items (padding excluded) and each table row's position among them
    (-1: not the domain's), the mean-of-interacted-items operator (on table rows) and the
    binary interactions between its users and items (for H_u = R H_i)."""

    def __init__(self, model, config, dataset, domain):
        items = DomainModalities(config, dataset, domain, model.layout)
        self.modalities = items.modalities
        device = model.device
        self.features = items.padded_features(device)  # (items + 1, d_m), a final zero row
        self.feature_rows = torch.from_numpy(items.feature_rows(model.n_items[domain])).to(device)
        user_rows = model.layout.domain_rows("user", domain)[1:]  # the padding user is nobody
        self.user_rows = torch.from_numpy(user_rows).to(device)
        self.item_rows = torch.from_numpy(items.rows).to(device)
        self.user_position = positions(self.user_rows, model.n_users[domain])
        self.item_position = positions(self.item_rows, model.n_items[domain])
        interactions = binary(model.training_matrix(dataset, domain))
        self.mean_of_items = SparseOperator(row_normalize(interactions), device)
        self.user_item = SparseOperator(interactions[user_rows][:, items.rows], device)

    def raw_features(self, modality):
        """(domain items, d_m): the features of the domain's items, in the order of ``item_rows``."""
        return self.features[modality][:-1]


def positions(rows, num_rows):
    """(num_rows,) long tensor: k at ``rows[k]``, -1 elsewhere."""
    out = torch.full((num_rows,), -1, dtype=torch.long, device=rows.device)
    out[rows] = torch.arange(len(rows), device=rows.device)
    return out


def binary(matrix):
    """A copy of a sparse matrix with every stored entry 1 (repeated pairs count once)."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def row_normalize(matrix):
    """Each row divided by its sum (an empty row stays empty)."""
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.diags(scale.astype(np.float32)) @ matrix
