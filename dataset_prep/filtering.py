"""Row filters of the conversion, as pure functions over interaction DataFrames.

Every frame has the columns ``user`` and ``item`` (tokens as text), optionally ``rating`` and
``timestamp`` (floats), and ``line`` (the row's line in its input file, for messages). Each
filter returns the kept rows and how many it dropped, so the caller can account for every
input row (see :data:`DROP_REASONS`).
"""

import math

import numpy as np

from dataset_prep.errors import PrepError

#: Why an input interaction row may be missing from the output, in the order they are applied.
DROP_REASONS = (
    "unparsable",  # empty user or item token
    "below_threshold",  # rating < --rating-threshold (not with --keep-below-threshold)
    "duplicate",  # a repeated (user, item) pair of the same domain; the first is kept
    "item_not_in_item_table",  # the item has no row in the domain's item table
    "not_in_user_subset",  # --subset-users: the user was not sampled
    "not_common_user",  # --common-users-only: the user has no rows in the other domain
    "kcore",  # removed by the iterative user/item k-core
)

# Purposes of the seeded random streams: one stream each, so adding a step keeps the others.
_SUBSET_STREAM = 1
_OVERLAP_STREAM = 2


def rng_for(seed, purpose):
    """A numpy Generator for ``purpose`` derived from the user's ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(purpose)]))


def drop_unparsable(df):
    """Rows whose user or item token is empty (after stripping blanks)."""
    bad = (df["user"].str.len() == 0) | (df["item"].str.len() == 0)
    return df[~bad], int(bad.sum())


def apply_threshold(df, threshold, keep_below=False):
    """Drop rows with ``rating < threshold`` (or count them and keep them with ``keep_below``).

    Returns ``(kept, n_dropped, n_below)``; without a rating column nothing happens.
    """
    if threshold is None or "rating" not in df.columns:
        return df, 0, 0
    below = df["rating"].to_numpy() < threshold
    n_below = int(below.sum())
    if keep_below:
        return df, 0, n_below
    return df[~below], n_below, n_below


def drop_duplicates(df):
    """Keep the first row (in file order) of each (user, item) pair."""
    dup = df.duplicated(subset=["user", "item"], keep="first").to_numpy()
    return df[~dup], int(dup.sum())


def drop_items_not_in(df, known_items):
    """Rows whose item is not in ``known_items``; returns ``(kept, n_dropped, first_bad_row)``."""
    ok = df["item"].isin(known_items).to_numpy()
    first = None if ok.all() else df.iloc[int(np.flatnonzero(~ok)[0])]
    return df[ok], int((~ok).sum()), first


def kcore(df, k):
    """Iterative k-core: drop users and items with fewer than ``k`` rows until none is left.

    Returns ``(kept, n_dropped, n_rounds)``. ``k <= 1`` keeps everything.
    """
    if k is None or k <= 1:
        return df, 0, 0
    n_start = len(df)
    rounds = 0
    while True:
        rounds += 1
        n_before = len(df)
        user_count = df["user"].map(df["user"].value_counts()).to_numpy()
        df = df[user_count >= k]
        item_count = df["item"].map(df["item"].value_counts()).to_numpy()
        df = df[item_count >= k]
        if len(df) == n_before:
            return df, n_start - len(df), rounds


def common_users(frames):
    """Sorted list of the user tokens present in every frame."""
    sets = [set(f["user"].unique()) for f in frames]
    return sorted(set.intersection(*sets)) if sets else []


def sample_user_subset(source, target, n_common, n_single, seed):
    """A seeded subset of users: ``n_common`` users common to both domains and, per domain,
    ``n_single`` users who appear in that domain only.

    Counts larger than what exists take everything there is. Returns ``(users, info)``.
    """
    rng = rng_for(seed, _SUBSET_STREAM)
    common = common_users([source, target])
    take = min(int(n_common), len(common))
    chosen = [common[i] for i in np.sort(rng.choice(len(common), size=take, replace=False))]
    info = {"common_users_available": len(common), "common_users_sampled": take}
    users = set(chosen)
    common_set = set(common)
    for role, frame in (("source", source), ("target", target)):
        only = sorted(set(frame["user"].unique()) - common_set)
        n = min(int(n_single), len(only))
        picked = [only[i] for i in np.sort(rng.choice(len(only), size=n, replace=False))]
        users.update(picked)
        info[f"{role}_only_users_available"] = len(only)
        info[f"{role}_only_users_sampled"] = n
    return users, info


def check_overlap_ratio(ratio):
    """``ratio`` as a float in [0, 1], or :class:`PrepError`."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise PrepError(f"--overlap-ratio must be a number in [0, 1], got {ratio!r}") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise PrepError(f"--overlap-ratio (K_u) must be in [0, 1], got {ratio!r}")
    return value


def choose_linked_users(common, ratio, seed):
    """Split the common users into those who keep one identity and those who are de-linked.

    ``round(ratio * len(common))`` users keep one identity: the first ones of a seeded
    permutation of the sorted tokens. With the same seed a smaller ratio keeps a subset of
    what a larger one keeps. Returns ``(linked, delinked)`` as sorted lists.
    """
    ratio = check_overlap_ratio(ratio)
    common = sorted(common)
    n_keep = int(round(ratio * len(common)))
    order = rng_for(seed, _OVERLAP_STREAM).permutation(len(common))
    linked = sorted(common[i] for i in order[:n_keep])
    delinked = sorted(common[i] for i in order[n_keep:])
    return linked, delinked


def delink(df, users, suffix):
    """Rename the tokens of ``users`` in ``df`` by appending ``suffix``; returns a new frame."""
    if not users:
        return df
    out = df.copy()
    mask = out["user"].isin(set(users)).to_numpy()
    out.loc[mask, "user"] = out.loc[mask, "user"] + suffix
    return out
