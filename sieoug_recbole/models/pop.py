"""Pop: rank each domain's items by their number of training interactions (a floor to beat)."""

import numpy as np
import torch
from torch import nn

from sieoug_recbole.models.base import DOMAINS, CrossDomainModel


class Pop(CrossDomainModel):
    """Most popular items first, the same ranking for every user of a domain (no reference: a floor)."""

    supports_guidance = False  # no user vectors: every user gets the same ranking

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        for domain in DOMAINS:
            matrix = self.training_matrix(dataset, domain)
            counts = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32)
            self.register_buffer(f"{domain}_popularity", torch.from_numpy(counts))
        self.unused = nn.Parameter(torch.zeros(1))  # the trainer needs one parameter

    def domain_representations(self, domain):
        # a constant user vector times the popularity "item vector" gives the same ranking to all
        items = getattr(self, f"{domain}_popularity").unsqueeze(1)
        return torch.ones(self.n_users[domain], 1, device=items.device), items

    def domain_loss(self, domain, interaction, representations):
        return ((self.unused * 0).sum(),)
