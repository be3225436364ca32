"""ETL, the equivalent transformation learner (Chen et al., TOIS 2022 / arXiv:2009.06884).

One autoencoder per domain over a user's interaction vector x_d (a row of the domain's
training matrix, read sparsely for the batch's users only):

- encoder: ``z_d = ReLU(W2 ReLU(x_d E_d + b) + c + e_u)``, dropout on the input entries;
  ``e_u`` is the user's ID embedding, one vector for an overlapped user in both domains (the
  paper's users are all shared), the domain's own for a non-overlapped user;
- decoder: logits over the domain's items ``h(z_d) O_d^T + o_d`` with ``h = ReLU(linear)``;
- equivalent transformation: one D x D matrix W maps a source code to the target code space
  (``z_s W``) and back (``z_t W^T``). For the overlapped users of a step, the target decoder
  reconstructs x_t from ``z_s W`` and the source decoder x_s from ``z_t W^T`` (the cross
  terms), and ``|z_s - z_s W W^T|_1 + |z_t - z_t W^T W|_1`` keeps W close to orthogonal on
  the codes (the paper's orthogonality constraint).

Loss: per domain, the binary cross-entropy of the reconstruction summed over the domain's
items (mean over the batch's distinct users); in the BOTH phase ``cross_weight`` times the
cross terms and ``orthogonal_weight`` times the constraint. Scores are the domain's own
reconstruction logits (as the paper ranks), written as a dot product: user ``[h(z_d), 1]``,
item ``[O_d row, o_d]``. The paper's adversarial matching of the codes to a Gaussian prior
(a discriminator trained in alternate steps) is not used.

Reference: X. Chen, Y. Zhang, I. W. Tsang, Y. Pan, J. Su. Towards Equivalent Transformation of
User Preferences in Cross Domain Recommendation. ACM TOIS 41(1), 2023; arXiv:2009.06884;
official code github.com/xuChenSJTU/ETL-master.
"""

import torch
import torch.nn.functional as F
from torch import nn

from sieoug_recbole.config_checks import number
from sieoug_recbole.models.base import DOMAINS, CrossDomainModel
from sieoug_recbole.models.cdr_parts import BatchRowsOnly, InteractionRows, OverlapSharedUsers, domain_tables


def reconstruction_loss(logits, targets):
    """Binary cross-entropy of ``logits`` against the 0/1 ``targets``, summed over items and
    averaged over users (rows); 0 for no rows."""
    if len(logits) == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(logits)


def orthogonality_residual(codes, there, back):
    """Mean over rows of ``|z - z there back|_1``: how far mapping a code through ``there``
    and ``back`` (W and W^T) moves it."""
    if len(codes) == 0:
        return codes.sum() * 0.0
    return (codes - codes @ there @ back).abs().sum(dim=1).mean()


class ETL(BatchRowsOnly, CrossDomainModel):
    config_checks = {"input_dropout": number(0, 0.99), "cross_weight": number(0), "orthogonal_weight": number(0)}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size = config["embedding_size"]
        self.input_dropout = config["input_dropout"]
        self.cross_weight = config["cross_weight"]
        self.orthogonal_weight = config["orthogonal_weight"]
        self.interactions = {x: InteractionRows(self.training_matrix(dataset, x), self.device) for x in DOMAINS}
        self.encoder_input = domain_tables(self.layout, "item", d)  # first encoder layer, a row per item
        self.encoder_bias = nn.ParameterDict({x: nn.Parameter(torch.zeros(d)) for x in DOMAINS})
        self.encoder_hidden = nn.ModuleDict({x: nn.Linear(d, d) for x in DOMAINS})
        self.user_embedding = OverlapSharedUsers(self.layout, self.overlapped_num_users, d)
        self.decoder_hidden = nn.ModuleDict({x: nn.Linear(d, d) for x in DOMAINS})
        self.decoder_output = domain_tables(self.layout, "item", d)  # last decoder layer, a row per item
        self.decoder_bias = domain_tables(self.layout, "item", 1, init=nn.init.zeros_)
        self.transformation = nn.Parameter(nn.init.orthogonal_(torch.empty(d, d)))
        for x in DOMAINS:  # the items a decoder reconstructs: the domain's, in evaluation order, no padding
            self.register_buffer(
                f"decoded_items_{x}", torch.from_numpy(self.layout.domain_rows("item", x)[1:]), persistent=False
            )

    # ----- the autoencoders -----------------------------------------------------------------
    def codes(self, domain, rows=None):
        """z_d of the users at table ``rows`` (every user for None), with input dropout in
        training."""
        dropout = self.input_dropout if self.training else 0.0
        hidden = self.interactions[domain].product(rows, self.encoder_input[domain].weight, dropout=dropout)
        hidden = torch.relu(hidden + self.encoder_bias[domain])
        users = self.user_embedding.table(domain) if rows is None else self.user_embedding(domain, rows)
        return torch.relu(self.encoder_hidden[domain](hidden) + users)

    def decoded_items(self, domain):
        return getattr(self, f"decoded_items_{domain}")

    def decode(self, domain, codes):
        """Reconstruction logits of ``codes`` over the domain's items (:meth:`decoded_items`)."""
        items = self.decoded_items(domain)
        hidden = torch.relu(self.decoder_hidden[domain](codes))
        return hidden @ self.decoder_output[domain].weight[items].T + self.decoder_bias[domain].weight[items].T

    def targets(self, domain, rows):
        """The users' training rows over :meth:`decoded_items`, dense 0/1."""
        return self.interactions[domain].dense(rows, self.decoded_items(domain).cpu().numpy())

    # ----- scoring as a dot product ---------------------------------------------------------
    def user_vectors(self, domain, rows=None):
        hidden = torch.relu(self.decoder_hidden[domain](self.codes(domain, rows)))
        return torch.cat([hidden, torch.ones(len(hidden), 1, device=hidden.device)], dim=1)

    def domain_representations(self, domain):
        items = torch.cat([self.decoder_output[domain].weight, self.decoder_bias[domain].weight], dim=1)
        return self.user_vectors(domain), items

    # ----- losses ---------------------------------------------------------------------------
    def domain_loss(self, domain, interaction, representations):
        rows = torch.unique(self.batch(domain, interaction)[0])
        loss = reconstruction_loss(self.decode(domain, self.codes(domain, rows)), self.targets(domain, rows))
        self.record_statistic(f"reconstruction_{domain}", loss.detach())
        return (loss,)

    def overlapped_rows(self, interaction):
        """The distinct overlapped users of the step's source and target batches."""
        users = torch.cat([self.batch(d, interaction)[0] for d in DOMAINS])
        return torch.unique(users[users < self.overlapped_num_users])

    def transfer_loss(self, interaction, representations):
        rows = self.overlapped_rows(interaction)
        source, target = self.codes("source", rows), self.codes("target", rows)
        w = self.transformation
        cross = reconstruction_loss(
            self.decode("target", source @ w), self.targets("target", rows)
        ) + reconstruction_loss(self.decode("source", target @ w.T), self.targets("source", rows))
        orthogonal = orthogonality_residual(source, w, w.T) + orthogonality_residual(target, w.T, w)
        self.record_statistic("cross_reconstruction", cross.detach())
        self.record_statistic("orthogonality", orthogonal.detach())
        return self.cross_weight * cross, self.orthogonal_weight * orthogonal
