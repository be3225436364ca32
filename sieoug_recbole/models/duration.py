"""DURation (Lu et al., WWW'22): deep unified representation, as a cross-domain baseline.

The paper represents heterogeneous items (item types with different feature spaces) and
their users in one unified space. Here the two domains play the item types:

- a user's vector is the user tower (an MLP shared by both domains) over the sum of the input
  embeddings of the user's training items divided by the square root of their number; the
  items of BOTH domains count, so an overlapped user (the same person in both domains) has
  one vector, as the paper's users are shared by every item type, and a non-overlapped
  user's vector comes from its own domain's items;
- an item's vector is the item tower (an MLP shared by both domains) over the input embeddings
  of the item's training users, averaged alike (an overlapped user has one input embedding);
- score: the dot product (its sigmoid is the probability of an interaction); loss: binary
  cross-entropy on the batch's positive and sampled negative item (the paper's log loss),
  plus ``reg_weight`` times the L2 penalty on the batch's vectors;
- alignment of the two domains' representation distributions, on each step's source and
  target batch (users, items or both, ``align_on``): a distribution term (squared Gaussian-
  kernel MMD, the paper's kernel-based alignment between item types; the SIEOUG paper calls
  it distribution variance alignment), weighted ``distribution_weight``, and a correlation
  term (CORAL: the distance between the two covariance matrices), ``correlation_weight``.

Every vector is computed for the batch's rows only (sparse products over their rows).

Reference: C. Lu, M. Yin, S. Shen, L. Ji, Q. Liu, H. Yang. Deep Unified Representation for
Heterogeneous Recommendation. WWW 2022 (arXiv:2201.05861); official code
github.com/geekinglcq/HRec.
"""

import torch
import torch.nn.functional as F
from torch import nn

from sieoug_recbole.config_checks import choice, integer, number
from sieoug_recbole.models.base import DOMAINS, CrossDomainModel, l2_penalty
from sieoug_recbole.models.cdr_parts import BatchRowsOnly, InteractionRows, OverlapSharedUsers, domain_tables
from sieoug_recbole.transfer_losses import coral, gaussian_mmd

OTHER = {"source": "target", "target": "source"}
ALIGN_ON = ("users", "items", "both")


def average(total, count):
    """``total / sqrt(count)`` per row (a row with no entries stays as it is): a sum of input
    embeddings scaled as LightGCN scales a node's messages (the mean and the plain sum, the
    released code's choice, gave lower validation scores on the demo pair)."""
    return total / count.clamp_min(1.0).sqrt().unsqueeze(1)


def tower(width, n_layers):
    """``n_layers`` linear layers of ``width`` with a ReLU between two layers."""
    layers = []
    for i in range(n_layers):
        layers += [nn.ReLU()] if i else []
        layers.append(nn.Linear(width, width))
        nn.init.xavier_normal_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


class DURation(BatchRowsOnly, CrossDomainModel):
    config_checks = {
        "tower_layers": integer(1),
        "distribution_weight": number(0),
        "correlation_weight": number(0),
        "align_on": choice(*ALIGN_ON),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size = config["embedding_size"]
        self.reg_weight = config["reg_weight"]
        self.distribution_weight = config["distribution_weight"]
        self.correlation_weight = config["correlation_weight"]
        self.align_on = config["align_on"]
        self.n_overlap = self.overlapped_num_users
        self.item_input = domain_tables(self.layout, "item", d)  # the user tower reads these
        self.user_input = OverlapSharedUsers(self.layout, self.n_overlap, d)  # the item tower reads these
        self.user_tower = tower(d, config["tower_layers"])
        self.item_tower = tower(d, config["tower_layers"])
        matrices = {x: self.training_matrix(dataset, x) for x in DOMAINS}
        self.user_items = {x: InteractionRows(m, self.device) for x, m in matrices.items()}
        self.item_users = {x: InteractionRows(m.T, self.device) for x, m in matrices.items()}

    # ----- representations ------------------------------------------------------------------
    def user_inputs(self, domain, rows):
        """(sum of the input embeddings of each user's training items in both domains, their
        number): the other domain's items count for overlapped users."""
        items = self.user_items[domain]
        total = items.product(rows, self.item_input[domain].weight)
        count = items.row_counts()[rows]
        shared = rows < self.n_overlap
        if bool(shared.any()):
            other = self.user_items[OTHER[domain]]
            total = total.index_add(
                0, shared.nonzero().squeeze(1), other.product(rows[shared], self.item_input[OTHER[domain]].weight)
            )
            count = count + torch.where(shared, other.row_counts()[rows.clamp(max=self.n_overlap - 1)], 0.0)
        return total, count

    def item_inputs(self, domain, rows):
        """(sum of the input embeddings of each item's training users, their number)."""
        users = self.item_users[domain]
        return users.product(rows, self.user_input.table(domain)), users.row_counts()[rows]

    def user_vectors(self, domain, rows=None):
        """The user tower over the averaged input embeddings of each user's training items."""
        rows = torch.arange(self.n_users[domain], device=self.device) if rows is None else rows
        return self.user_tower(average(*self.user_inputs(domain, rows)))

    def item_vectors(self, domain, rows=None):
        """The item tower over the averaged input embeddings of each item's training users."""
        rows = torch.arange(self.n_items[domain], device=self.device) if rows is None else rows
        return self.item_tower(average(*self.item_inputs(domain, rows)))

    def domain_representations(self, domain):
        return self.user_vectors(domain), self.item_vectors(domain)

    def batch_vectors(self, domain, interaction):
        """(user, positive item, negative item) vectors of the batch, each distinct row
        computed once."""
        users, pos, neg = self.batch(domain, interaction)
        user_rows, user_index = torch.unique(users, return_inverse=True)
        item_rows, item_index = torch.unique(torch.cat([pos, neg]), return_inverse=True)
        items = self.item_vectors(domain, item_rows)[item_index]
        return self.user_vectors(domain, user_rows)[user_index], items[: len(pos)], items[len(pos) :]

    # ----- losses ---------------------------------------------------------------------------
    def domain_loss(self, domain, interaction, representations):
        user, pos_item, neg_item = self.batch_vectors(domain, interaction)
        pos, neg = (user * pos_item).sum(dim=1), (user * neg_item).sum(dim=1)
        loss = -(F.logsigmoid(pos) + F.logsigmoid(-neg)).mean()
        self.record_statistic(f"log_loss_{domain}", loss.detach())
        return (loss + self.reg_weight * l2_penalty(user, pos_item, neg_item),)

    def alignment_samples(self, interaction):
        """[(source sample, target sample)] the alignment compares: the batch's distinct users
        and / or distinct positive items of each domain, as vectors."""
        samples = []
        if self.align_on in ("users", "both"):
            samples.append(tuple(self.user_vectors(d, torch.unique(self.batch(d, interaction)[0])) for d in DOMAINS))
        if self.align_on in ("items", "both"):
            samples.append(tuple(self.item_vectors(d, torch.unique(self.batch(d, interaction)[1])) for d in DOMAINS))
        return samples

    def transfer_loss(self, interaction, representations):
        samples = self.alignment_samples(interaction) if self.distribution_weight or self.correlation_weight else []
        distribution = sum((gaussian_mmd(s, t) for s, t in samples), torch.zeros((), device=self.device))
        correlation = sum((coral(s, t) for s, t in samples), torch.zeros((), device=self.device))
        self.record_statistic("mmd", distribution.detach())
        self.record_statistic("coral", correlation.detach())
        return self.distribution_weight * distribution, self.correlation_weight * correlation
