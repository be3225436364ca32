"""Building blocks that the cross-domain baselines (CL-DTCDR, DURation, ETL) share.

- :func:`domain_tables`: one ID table per domain of users or of items, drawn over the joint id
  space and cut to the domain's rows (the same numbers in both id layouts);
- :class:`OverlapSharedUsers`: per-domain user vectors in which an overlapped user (the same
  person in both domains, rows ``1 .. n_o - 1`` of both domains' tables) has ONE vector;
- :class:`InteractionRows`: a domain's training matrix read by rows: ``X[rows] @ dense`` as a
  sparse, differentiable product (optionally averaged per row, or with dropped entries) and
  the rows as dense targets, so that a step touches only its batch's rows;
- :class:`BatchRowsOnly`: the mixin of a model whose training step computes vectors for the
  batch's rows only.
"""

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from sieoug_recbole.graph import SparseOperator
from sieoug_recbole.models.base import DOMAINS, keep_domain_rows


def domain_tables(layout, kind, dim, init=nn.init.xavier_normal_):
    """``ModuleDict domain -> nn.Embedding`` of ``kind`` ('user' or 'item') with ``dim``
    columns, each initialised by ``init`` over the whole joint id space and then cut to its
    domain's rows under ``layout`` (:func:`~sieoug_recbole.models.base.keep_domain_rows`)."""
    tables = nn.ModuleDict({d: nn.Embedding(layout.ranges.total(kind), dim) for d in DOMAINS})
    for table in tables.values():
        init(table.weight)
    return keep_domain_rows(tables, layout, kind)


class OverlapSharedUsers(nn.Module):
    """User vectors of both domains in which each overlapped user has one vector, used in
    both domains (rows below ``n_overlap``, padding row 0 included); every other user has
    its own domain's row. The shared rows start as the source table's draws of those rows."""

    def __init__(self, layout, n_overlap, dim):
        super().__init__()
        self.n_overlap = int(n_overlap)
        self.own = domain_tables(layout, "user", dim)
        # rows 0 .. n_o - 1 are the same joint ids in both layouts and both domains
        self.shared = nn.Embedding.from_pretrained(
            self.own["source"].weight.detach()[: self.n_overlap].clone(), freeze=False
        )

    def table(self, domain):
        """(the domain's table rows, dim): the shared rows, then the domain's own rows."""
        return torch.cat([self.shared.weight, self.own[domain].weight[self.n_overlap :]])

    def forward(self, domain, rows):
        """The vectors of table ``rows`` of ``domain``."""
        overlapped = (rows < self.n_overlap).unsqueeze(1)
        return torch.where(overlapped, self.shared(rows.clamp(max=self.n_overlap - 1)), self.own[domain](rows))


class InteractionRows:
    """A binary sparse matrix ``X`` (a domain's training interactions, or their transpose, on
    table rows) read by rows on ``device``.

    ``product(rows, dense)`` is ``X[rows] @ dense``, differentiable in ``dense``; with ``mean``
    each row is divided by its number of entries (1 for an empty row); with ``dropout`` p each
    entry is dropped with probability p and the kept ones scaled by 1 / (1 - p) (dropout on
    the input vector, drawn only for the stored entries). ``rows=None`` is every row."""

    def __init__(self, matrix, device):
        matrix = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
        matrix.sum_duplicates()
        matrix.data[:] = 1.0  # a repeated interaction is one entry
        self.matrix = matrix
        self.device = device
        self.counts = np.diff(matrix.indptr).astype(np.float32)
        self._whole = {}  # mean -> SparseOperator of every row

    @property
    def shape(self):
        return self.matrix.shape

    def _scaled(self, part, counts, mean):
        if not mean:
            return part
        return sp.diags(1.0 / np.maximum(counts, 1.0)).astype(np.float32) @ part

    def product(self, rows, dense, mean=False, dropout=0.0):
        if rows is None and not dropout:
            if mean not in self._whole:
                self._whole[mean] = SparseOperator(self._scaled(self.matrix, self.counts, mean), self.device)
            return self._whole[mean] @ dense
        index = np.arange(self.shape[0]) if rows is None else rows.detach().cpu().numpy()
        part = self._scaled(self.matrix[index], self.counts[index], mean).tocsr()
        if dropout:
            keep = (torch.rand(part.nnz) >= dropout).numpy().astype(np.float32)
            part.data = part.data * keep / (1.0 - dropout)
        return SparseOperator(part, self.device) @ dense

    def dense(self, rows, columns):
        """``X[rows][:, columns]`` as a dense float tensor (reconstruction targets)."""
        part = self.matrix[rows.detach().cpu().numpy()][:, columns]
        return torch.from_numpy(part.toarray()).to(self.device)

    def row_counts(self):
        """Entries per row, as a float tensor on the device."""
        return torch.from_numpy(self.counts).to(self.device)


class BatchRowsOnly:
    """Mixin: a training step precomputes nothing (``representations`` are None); the model's
    losses compute vectors for the batch's rows with ``user_vectors(domain, rows)``, which
    with ``rows=None`` gives every user (for scoring, in ``domain_representations``)."""

    def training_representations(self, domain):
        return None

    def step_user_vectors(self, domain, representations, rows=None):
        return self.user_vectors(domain, rows)
