"""NeuMF (He et al., WWW'17) as a single-domain baseline run on each domain.

Per domain (no transfer): a GMF tower (element-wise product of user and item factors) and an
MLP tower (concatenated user and item embeddings through ReLU layers), each with its own
embedding tables, fused by one linear output layer over [GMF vector ; last MLP layer]:

    s(u, i) = w_g . (p_u * q_i) + w_m . MLP([p'_u ; q'_i])

Trained on the framework's (user, positive, sampled negative) triples with BPR (default) or
the paper's pointwise log loss on the positive and the negative (``loss_type: bce``). The
paper's optional pre-training of the two towers is not done (it also reports NeuMF without).

Scores are not dot products of two vectors, so :meth:`predict` and :meth:`full_sort_predict`
are overridden. The first MLP layer splits into a user part and an item part
(W [p' ; q'] = W_u p' + W_i q'), so full ranking computes each part once and only the
remaining layers run per (user, item) pair, over chunks of items.
"""

import torch
import torch.nn.functional as F
from torch import nn

from sieoug_recbole.config_checks import choice, integer, list_of, optional
from sieoug_recbole.models.base import DOMAINS, CrossDomainModel, keep_domain_rows, l2_penalty

LOSS_TYPES = ("bpr", "bce")


class NeuMF(CrossDomainModel):
    """NeuMF: a GMF tower and an MLP tower fused by one output layer, one per domain.

    Reference: He et al., "Neural Collaborative Filtering", WWW 2017.
    """

    config_checks = {
        "mlp_embedding_size": integer(1),
        "mlp_hidden_size": list_of(integer(1)),
        "loss_type": choice(*LOSS_TYPES),
        "score_chunk": optional(integer(1)),
    }
    supports_guidance = False  # scores are not dot products of user and item vectors

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.mlp_embedding_size = config["mlp_embedding_size"]
        self.mlp_hidden_size = list(config["mlp_hidden_size"])
        self.reg_weight = config["reg_weight"]
        self.loss_type = config["loss_type"]
        self.score_chunk = int(config["score_chunk"] or 1 << 22)

        d, dm = self.embedding_size, self.mlp_embedding_size
        n_users, n_items = self.layout.ranges.total("user"), self.layout.ranges.total("item")
        self.gmf_user = nn.ModuleDict({x: nn.Embedding(n_users, d) for x in DOMAINS})
        self.gmf_item = nn.ModuleDict({x: nn.Embedding(n_items, d) for x in DOMAINS})
        self.mlp_user = nn.ModuleDict({x: nn.Embedding(n_users, dm) for x in DOMAINS})
        self.mlp_item = nn.ModuleDict({x: nn.Embedding(n_items, dm) for x in DOMAINS})
        sizes = [2 * dm] + self.mlp_hidden_size
        self.mlp = nn.ModuleDict(
            {x: nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])) for x in DOMAINS}
        )
        self.output = nn.ModuleDict({x: nn.Linear(d + sizes[-1], 1, bias=False) for x in DOMAINS})
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.01)  # paper: N(0, 0.01)
            elif isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # drawn over the joint id space, then cut to each domain's rows (see domain_id_embeddings)
        self.gmf_user = keep_domain_rows(self.gmf_user, self.layout, "user")
        self.gmf_item = keep_domain_rows(self.gmf_item, self.layout, "item")
        self.mlp_user = keep_domain_rows(self.mlp_user, self.layout, "user")
        self.mlp_item = keep_domain_rows(self.mlp_item, self.layout, "item")

    # ----- scoring --------------------------------------------------------------------------
    def _first_layer_parts(self, domain, users, items):
        """(user part + bias, item part) of the first MLP layer, before the ReLU."""
        layer = self.mlp[domain][0]
        dm = self.mlp_embedding_size
        user_part = F.linear(self.mlp_user[domain](users), layer.weight[:, :dm], layer.bias)
        item_part = F.linear(self.mlp_item[domain](items), layer.weight[:, dm:])
        return user_part, item_part

    def _mlp_rest(self, domain, hidden):
        hidden = torch.relu(hidden)
        for layer in self.mlp[domain][1:]:
            hidden = torch.relu(layer(hidden))
        return hidden

    def score_pairs(self, domain, users, items):
        """s(u, i) for aligned tensors of table rows ``users`` and ``items``."""
        weight = self.output[domain].weight.squeeze(0)
        d = self.embedding_size
        gmf = (self.gmf_user[domain](users) * self.gmf_item[domain](items)) @ weight[:d]
        user_part, item_part = self._first_layer_parts(domain, users, items)
        mlp = self._mlp_rest(domain, user_part + item_part) @ weight[d:]
        return gmf + mlp

    def score_all(self, domain, users, items):
        """(len(users), len(items)) scores, the MLP run over chunks of items."""
        weight = self.output[domain].weight.squeeze(0)
        d = self.embedding_size
        gmf = (self.gmf_user[domain](users) * weight[:d]) @ self.gmf_item[domain](items).T
        user_part, item_part = self._first_layer_parts(domain, users, items)
        width = max(self.mlp_hidden_size)
        chunk = max(1, self.score_chunk // max(1, len(users) * width))
        mlp = [
            self._mlp_rest(domain, user_part.unsqueeze(1) + item_part[s : s + chunk].unsqueeze(0)) @ weight[d:]
            for s in range(0, len(items), chunk)
        ]
        return gmf + torch.cat(mlp, dim=1)

    def predict(self, interaction):
        domain = self.interaction_domain(interaction)
        user_field, item_field = self.fields(domain)[:2]
        items = self.eval_item_rows(domain)[interaction[item_field]]
        return self.score_pairs(domain, self.user_rows(domain, interaction[user_field]), items)

    def full_sort_predict(self, interaction):
        domain = self.interaction_domain(interaction)
        users = self.user_rows(domain, interaction[self.fields(domain)[0]])
        return self.score_all(domain, users, self.eval_item_rows(domain)).reshape(-1)

    # ----- training -------------------------------------------------------------------------
    def domain_representations(self, domain):
        """The GMF tables (NeuMF does not score by a dot product; see :meth:`score_pairs`)."""
        return self.gmf_user[domain].weight, self.gmf_item[domain].weight

    def domain_loss(self, domain, interaction, representations):
        users, pos, neg = self.batch(domain, interaction)
        pos_score = self.score_pairs(domain, users, pos)
        neg_score = self.score_pairs(domain, users, neg)
        if self.loss_type == "bpr":
            loss = -F.logsigmoid(pos_score - neg_score).mean()
        else:
            loss = -(F.logsigmoid(pos_score) + F.logsigmoid(-neg_score)).mean()
        reg = l2_penalty(
            self.gmf_user[domain](users),
            self.gmf_item[domain](pos),
            self.gmf_item[domain](neg),
            self.mlp_user[domain](users),
            self.mlp_item[domain](pos),
            self.mlp_item[domain](neg),
        )
        return (loss + self.reg_weight * reg,)
