"""A seeded synthetic two-domain, multi-modal dataset with planted structure.

Made for tests and quick checks (no download). The planted structure is what SIEOUG is
supposed to exploit:

- items of each domain belong to ``n_categories`` categories; categories are shared in
  meaning across domains (category c in the source is "the same taste" as c in the target);
- every person has a taste: a few favourite categories, the same in both domains;
- each modality of an item is its category's centroid plus noise (``modality_noise``), so
  features carry the category signal, some modalities more than others;
- the target domain is sparse (few interactions per user), the source dense;
- among people active in both domains, a fraction ``overlap_ratio`` keeps one identity; the
  others are de-linked (their target token gets a ``~t`` suffix), as in the paper's K_u.

Written in the real on-disk format: ``<out>/<name>_source/<name>_source.inter`` (and
``_target``), plus ``<dataset>.<modality>.feat.npz`` files (see :mod:`.features`).
"""

import argparse
import json
import os

import numpy as np

from sieoug_formats.features import feature_path, write_item_features
from sieoug_formats.links import links_path, write_links

DEFAULT_MODALITIES = {"visual": 0.8, "text": 1.2}


def write_inter_file(path, users, items):
    """An atomic ``.inter`` file with token columns ``user_id`` and ``item_id``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\n")
        for u, i in zip(users, items):
            f.write(f"{u}\t{i}\n")


def _tastes(rng, n_people, n_categories, n_favourites):
    """Per person a probability vector over categories, peaked on a few favourites."""
    tastes = np.full((n_people, n_categories), 0.0)
    for p in range(n_people):
        favourites = rng.choice(n_categories, size=n_favourites, replace=False)
        tastes[p, favourites] = rng.dirichlet(np.ones(n_favourites))
    return tastes


def _domain_interactions(rng, tastes, item_category, per_user, taste_strength):
    """Sample distinct items per person: from a favourite category with prob. taste_strength."""
    n_categories = tastes.shape[1]
    by_category = [np.flatnonzero(item_category == c) for c in range(n_categories)]
    popularity = np.exp(0.7 * rng.normal(size=len(item_category)))  # mild popularity skew
    users, items = [], []
    for person, taste in enumerate(tastes):
        n = max(1, rng.poisson(per_user))
        chosen = set()
        for _ in range(4 * n):
            if len(chosen) >= n:
                break
            if rng.random() < taste_strength:
                category = rng.choice(n_categories, p=taste)
            else:
                category = rng.integers(n_categories)
            pool = by_category[category]
            weights = popularity[pool] / popularity[pool].sum()
            chosen.add(int(rng.choice(pool, p=weights)))
        users.extend([person] * len(chosen))
        items.extend(sorted(chosen))
    return np.array(users), np.array(items)


def generate_pair(
    out_dir,
    name="synthetic",
    n_common=500,
    n_source_only=150,
    n_target_only=150,
    n_source_items=300,
    n_target_items=200,
    n_categories=8,
    n_favourites=2,
    source_per_user=14,
    target_per_user=5,
    taste_strength=0.9,
    overlap_ratio=0.5,
    modality_noise=None,
    feature_dim=32,
    seed=0,
):
    """Write a synthetic pair under ``out_dir``; return a summary dict (also saved as JSON)."""
    if not 0.0 <= overlap_ratio <= 1.0:
        raise ValueError(f"overlap_ratio must be in [0, 1], got {overlap_ratio}")
    modality_noise = dict(modality_noise or DEFAULT_MODALITIES)
    rng = np.random.default_rng(seed)
    n_people = n_common + n_source_only + n_target_only
    tastes = _tastes(rng, n_people, n_categories, n_favourites)
    source_people = np.r_[0:n_common, n_common : n_common + n_source_only]
    target_people = np.r_[0:n_common, n_common + n_source_only : n_people]
    linked = np.zeros(n_people, dtype=bool)
    linked[rng.choice(n_common, size=int(round(overlap_ratio * n_common)), replace=False)] = True

    summary = {
        "name": name,
        "seed": seed,
        "overlap_ratio": overlap_ratio,
        "overlapped_users": int(linked.sum()),
        "domains": {},
    }
    centroids = {m: rng.normal(size=(n_categories, feature_dim)) for m in modality_noise}
    for domain, people, n_items, per_user in (
        ("source", source_people, n_source_items, source_per_user),
        ("target", target_people, n_target_items, target_per_user),
    ):
        dataset = f"{name}_{domain}"
        item_category = rng.integers(n_categories, size=n_items)
        local_users, item_idx = _domain_interactions(rng, tastes[people], item_category, per_user, taste_strength)
        person = people[local_users]
        suffix = "~t" if domain == "target" else ""
        user_tokens = [f"u{p}" if (linked[p] or domain == "source") else f"u{p}{suffix}" for p in person]
        item_tokens = np.array([f"{domain[0]}{i}" for i in range(n_items)])
        folder = os.path.join(out_dir, dataset)
        write_inter_file(os.path.join(folder, f"{dataset}.inter"), user_tokens, item_tokens[item_idx])
        for modality, noise in modality_noise.items():
            feats = centroids[modality][item_category] + noise * rng.normal(size=(n_items, feature_dim))
            write_item_features(feature_path(folder, dataset, modality), item_tokens, feats)
        np.save(os.path.join(folder, f"{dataset}.item_category.npy"), item_category)
        summary["domains"][domain] = {
            "dataset": dataset,
            "users": int(len(set(user_tokens))),
            "items": n_items,
            "interactions": int(len(user_tokens)),
        }
    # the de-linked common users' true links, for the matching diagnostics (never for training)
    delinked = [p for p in range(n_common) if not linked[p]]
    summary["links_file"] = write_links(links_path(out_dir, name), [(f"u{p}", f"u{p}~t") for p in delinked])
    with open(os.path.join(out_dir, f"{name}.summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="dataset", help="output folder (default: dataset)")
    parser.add_argument("--name", default="synthetic", help="pair name (default: synthetic)")
    parser.add_argument("--overlap-ratio", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = generate_pair(args.out, name=args.name, overlap_ratio=args.overlap_ratio, seed=args.seed)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
