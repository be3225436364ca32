"""How well a matching finds people it was not told about: de-linked users and their hidden links.

A pair built with an overlap ratio K_u < 1 has common users whose two identities were split
(de-linked): to every model they are two different people. ``dataset_prep`` writes each such
user's true link (source token, target token) to ``<pair>.links.tsv`` beside the pair; training
never reads it. Measured here, for the de-linked users (source side, their true counterpart on
the target side):

- ``mass_ratio``: the plan's mass on the true counterpart relative to a uniform row (1 = chance);
- ``top1`` / ``top10``: how often the true counterpart is the plan's first / among its ten
  largest entries of the user's row, against ``chance_top1`` / ``chance_top10``;

for the plan of a batch (``batch_*``: diagnostic batches of the training batch size, each
holding some de-linked pairs, solved as the model's guidance solves a batch: GOUM, or FGW for
SIEOUG-G) and for the plan over whole populations (``global_*``: GOUM between every source and
every target user, :mod:`~sieoug_recbole.population_matching`).
"""

import os

import numpy as np
import torch

from sieoug_formats.links import LinkFileError, links_path, read_links  # noqa: F401  (read_links: API)
from sieoug_recbole.guidance import guided_population_pairs
from sieoug_recbole.matching import fgw_plan, goum, guide_mask, is_overlapped, squared_euclidean_cost
from sieoug_recbole.population_matching import population_plan


def pair_links_path(data_path, source_dataset, target_dataset):
    """Where dataset_prep writes a pair's links: ``<data_path>/<pair>.links.tsv``, the pair
    name being the common prefix of its two dataset names (``<pair>_<domain>``)."""
    return links_path(data_path, os.path.commonprefix([source_dataset, target_dataset]).rstrip("_"))


def link_rows(links, token_ids, layout, path="link file"):
    """(source rows, target rows) long tensors of the links' users in the model's tables.

    ``token_ids``: {domain: {token: joint id}} (the framework's ``field2token_id`` of each
    domain's user field). A link naming a user the pair does not have is an error.
    """
    rows = {"source": [], "target": []}
    for number, (source, target) in enumerate(links, start=2):
        for domain, token in (("source", source), ("target", target)):
            joint = token_ids[domain].get(token)
            if joint is None:
                raise LinkFileError(
                    f"{path}: line {number}: {domain} user '{token}' is not in the pair's "
                    f"{domain} domain (a link file of another pair?)"
                )
            rows[domain].append(joint)
    return tuple(
        torch.as_tensor(layout.to_rows("user", d, np.asarray(rows[d], dtype=np.int64))) for d in ("source", "target")
    )


def plan_statistics(plan_rows, true_cols):
    """Statistics of each row's true column under a plan: ``plan_rows`` (k, m) dense rows of
    the plan (one per linked user), ``true_cols`` (k,) the true counterpart's column."""
    plan_rows = plan_rows.double()
    k, m = plan_rows.shape
    true = plan_rows[torch.arange(k), true_cols]
    mass = plan_rows.sum(1).clamp_min(1e-300)
    # ties broken at random (the mid-rank): a true entry at 0 in a sparse plan is not "ranked"
    rank = (plan_rows > true.unsqueeze(1)).sum(1) + ((plan_rows == true.unsqueeze(1)).sum(1) - 1) / 2
    return {
        "mass_ratio": float((true / (mass / m)).mean()),
        "top1": float((rank < 1).double().mean()),
        "top10": float((rank < 10).double().mean()),
        "chance_top1": 1.0 / m,
        "chance_top10": min(10, m) / m,
        "pairs": int(k),
    }


class LinkDiagnostics:
    """The link statistics of a model's current user vectors (see the module doc).

    ``source_rows`` / ``target_rows``: the de-linked users' table rows, pair by pair.
    ``batch_size``: users a side in a diagnostic batch; ``pairs_per_batch`` of them are
    de-linked pairs; ``batches`` batches are drawn (seeded: the same users every time).
    """

    def __init__(self, source_rows, target_rows, batch_size, pairs_per_batch=16, batches=8, seed=0):
        self.source_rows, self.target_rows = source_rows, target_rows
        self.batch_size, self.pairs_per_batch, self.batches = int(batch_size), int(pairs_per_batch), int(batches)
        self.seed = seed

    @torch.no_grad()
    def measure(self, model, populations=None):
        """{'batch_*': ..., 'global_*': ...} for ``model`` now (weights as they are).
        ``populations``: {domain: table rows} (default every user of each domain)."""
        was_training = model.training
        model.eval()
        try:
            vectors, populations = self._user_vectors(model, populations)
            out = {f"global_{k}": v for k, v in self._global(model, vectors, populations).items()}
            out.update({f"batch_{k}": v for k, v in self._batch(model, vectors, populations).items()})
        finally:
            model.train(was_training)
        return out

    def _user_vectors(self, model, populations):
        if populations is None:
            populations = {d: torch.as_tensor(model.layout.domain_rows("user", d)[1:]) for d in ("source", "target")}
        vectors = {}
        for domain, rows in populations.items():
            representations = model.training_representations(domain)
            vectors[domain] = model.step_user_vectors(domain, representations, rows.to(model.device)).detach().cpu()
        return vectors, populations

    def _global(self, model, vectors, populations):
        guidance = model.guidance
        src_pos = torch.searchsorted(populations["source"], self.source_rows)
        tgt_pos = torch.searchsorted(populations["target"], self.target_rows)
        guided = guided_population_pairs(populations, guidance.num_overlap_users)
        plan = population_plan(
            vectors["source"],
            vectors["target"],
            guided,
            guidance.eps,
            guidance.global_plan,
            k=guidance.candidates,
            keep=guidance.keep,
            max_iter=guidance.max_iter,
            tol=guidance.tol,
            dense_limit=guidance.dense_limit,
            keep_dense=True,
        )
        rows = plan.dense[src_pos] if plan.dense is not None else plan.by_source.to_dense()[src_pos]
        return plan_statistics(rows, tgt_pos)

    def _batch(self, model, vectors, populations):
        """Statistics over diagnostic batches solved as the model's guidance solves a batch."""
        guidance = model.guidance
        rng = np.random.default_rng(self.seed)
        n_pairs = len(self.source_rows)
        stats = []
        for _ in range(self.batches):
            chosen = rng.choice(n_pairs, size=min(self.pairs_per_batch, n_pairs), replace=False)
            src, tgt = self._batch_users(rng, populations, chosen, guidance.num_overlap_users)
            src_pos = torch.searchsorted(populations["source"], src)
            tgt_pos = torch.searchsorted(populations["target"], tgt)
            guide = guide_mask(src, tgt, guidance.num_overlap_users)
            if guidance.kind == "overlap_only":  # its plan is the guide mask: nothing to find
                continue
            plan = _batch_plan(guidance, vectors["source"][src_pos], vectors["target"][tgt_pos], guide)
            linked_src = torch.searchsorted(src, self.source_rows[chosen])
            linked_tgt = torch.searchsorted(tgt, self.target_rows[chosen])
            stats.append(plan_statistics(plan[linked_src], linked_tgt))
        if not stats:
            return {}
        return {key: float(np.mean([s[key] for s in stats])) for key in stats[0]}

    def _batch_users(self, rng, populations, chosen, num_overlap_users):
        """A diagnostic batch: the chosen de-linked pairs plus random users up to the batch size
        a side, overlapped users joining both sides (as in training); sorted rows."""
        sides = {}
        for domain, linked in (("source", self.source_rows[chosen]), ("target", self.target_rows[chosen])):
            others = populations[domain][
                rng.choice(len(populations[domain]), size=max(self.batch_size - len(linked), 0), replace=False)
            ]
            sides[domain] = torch.cat([linked, others])
        src, tgt = sides["source"], sides["target"]
        src, tgt = (
            torch.cat([src, tgt[is_overlapped(tgt, num_overlap_users)]]),
            torch.cat([tgt, src[is_overlapped(src, num_overlap_users)]]),
        )
        return torch.unique(src), torch.unique(tgt)


def _batch_plan(guidance, user_src, user_tgt, guide):
    """A batch's plan as the guidance would solve it, without touching its statistics (GOUM
    when the model has no guidance of its own)."""
    if guidance.kind == "fgw":
        return fgw_plan(user_src, user_tgt, alpha=guidance.fgw_alpha, normalize=guidance.cost_normalize)
    cost = squared_euclidean_cost(user_src, user_tgt, normalize=guidance.cost_normalize)
    return goum(cost, guide, guidance.eps, max_iter=guidance.max_iter, tol=guidance.tol)
