"""GOUM over whole user populations: every source user against every target user.

The paper matches users "among the whole source and target users" (Sec 3.3). A training batch
holds a few hundred users a side, so a user's true counterpart is rarely in the same batch;
here the plan is solved once over all users of both domains (and refreshed now and then by
the caller), and a batch reads its users' rows of it.

- :func:`population_plan`: the plan between two populations ``x`` (n, d) and ``y`` (m, d) with
  the guidance of Eq 17 (pairs that are the same overlapped person cost 0), the same
  marginals as :func:`~sieoug_recbole.matching.goum` (rows sum to 1, columns to n/m) and the
  cost normalised by its mean over all n x m pairs. ``dense``: GOUM on the full n x m cost (as
  long as it fits in memory); ``sparse``: entropic OT restricted to each user's ``k`` nearest
  candidates on the other side (found in row blocks: no n x m matrix), solved by log-domain
  Sinkhorn on that support. Either way the result is kept sparse, each user's ``keep``
  largest entries, as a :class:`PopulationPlan`.
- :func:`candidate_pairs`, :func:`sparse_entropic_plan`, :func:`mean_squared_distance`: the
  pieces of the sparse path.

Pure torch; nothing here imports RecBole.
"""

import math
import warnings

import torch

from sieoug_recbole.matching import goum, squared_euclidean_cost

PLANS = ("dense", "sparse")


def mean_squared_distance(x, y):
    """Mean of ||x_i - y_j||^2 over all pairs, without forming them:
    mean ||x||^2 + mean ||y||^2 - 2 <mean x, mean y>."""
    x, y = x.double(), y.double()
    value = (x * x).sum(1).mean() + (y * y).sum(1).mean() - 2 * (x.mean(0) @ y.mean(0))
    return float(value.clamp_min(0))


def _nearest(x, y, k, block_rows):
    """(rows, cols, squared distances) of each row of x's k nearest rows of y, in row blocks."""
    k = min(int(k), len(y))
    yy = (y * y).sum(1)
    rows, cols, dists = [], [], []
    for start in range(0, len(x), block_rows):
        block = x[start : start + block_rows]
        dist = (block * block).sum(1, keepdim=True) + yy.unsqueeze(0) - 2 * block @ y.T
        value, index = torch.topk(dist, k, dim=1, largest=False)
        rows.append(torch.arange(start, start + len(block)).repeat_interleave(k))
        cols.append(index.reshape(-1))
        dists.append(value.reshape(-1).clamp_min(0))
    return torch.cat(rows), torch.cat(cols), torch.cat(dists)


def candidate_pairs(x, y, k, guided_pairs=None, block_rows=1024):
    """The support of the sparse plan: every source row's ``k`` nearest target rows, every
    target row's ``k`` nearest source rows (squared Euclidean), and ``guided_pairs`` ((2, g)
    long tensor of (source row, target row), the same overlapped person). Returns (rows, cols),
    unique pairs sorted by row then column."""
    with torch.no_grad():
        r1, c1, _ = _nearest(x, y, k, block_rows)
        c2, r2, _ = _nearest(y, x, k, block_rows)
        parts_r, parts_c = [r1, r2], [c1, c2]
        if guided_pairs is not None and guided_pairs.numel():
            parts_r.append(guided_pairs[0].cpu())
            parts_c.append(guided_pairs[1].cpu())
        key = torch.unique(torch.cat(parts_r) * len(y) + torch.cat(parts_c))
    return key // len(y), key % len(y)


def _segment_logsumexp(values, segments, n):
    """log sum exp of ``values`` per segment id (0..n-1); -inf for an empty segment."""
    top = torch.full((n,), -math.inf, dtype=values.dtype).scatter_reduce(0, segments, values, "amax")
    shifted = torch.exp(values - top[segments])
    total = torch.zeros(n, dtype=values.dtype).index_add_(0, segments, shifted)
    return total.log() + top


def sparse_entropic_plan(rows, cols, cost, n, m, eps, max_iter=1000, tol=1e-4, init=None):
    """Entropic OT on a sparse support: ``min <P, C> + eps sum P (log P - 1)`` over plans with
    entries only at (rows, cols), rows summing to 1 and columns to n/m (log-domain Sinkhorn).

    ``cost``: the support's cost values (float). Returns (values of P on the support, info) with
    info ``iterations``, ``marginal_error`` (rows; columns are exact after each sweep),
    ``converged`` and ``potential`` (the row potential / eps, to warm-start a later solve).
    A support on which no plan has these marginals does not converge: a warning, the last
    iterate returned.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    rows, cols = rows.long(), cols.long()
    qe = cost.double() / eps
    log_b = math.log(n / m)
    phi = torch.zeros(n, dtype=torch.float64) if init is None else init.double().clone()
    error, iterations = math.inf, 0
    for iterations in range(1, int(max_iter) + 1):
        psi = log_b - _segment_logsumexp(phi[rows] - qe, cols, m)
        log_r = _segment_logsumexp(psi[cols] - qe, rows, n)
        error = float(torch.expm1(phi + log_r).abs().amax())
        if error < tol:
            break
        phi = -log_r
    values = torch.exp(phi[rows] + psi[cols] - qe)
    if not error < tol:
        warnings.warn(
            f"sparse entropic plan: marginal error {error:.3g} not below tol={tol:g} after "
            f"{iterations} iterations (n={n}, m={m}, support {len(rows)})",
            RuntimeWarning,
            stacklevel=2,
        )
    return values, {"iterations": iterations, "marginal_error": error, "converged": error < tol, "potential": phi}


class PopulationPlan:
    """A plan between all source users (rows) and all target users (columns), kept sparse.

    ``by_source``: (n, m) torch sparse CSR, each source user's ``keep`` largest entries;
    ``by_target``: (m, n) CSR, each target user's ``keep`` largest entries of its column.
    ``info``: solver statistics, and ``kept_mass`` (the share of the plan's mass the rows keep).
    ``dense`` (only when solved densely and asked for): the full (n, m) plan, for diagnostics.
    """

    def __init__(self, by_source, by_target, info, dense=None):
        self.by_source, self.by_target, self.info, self.dense = by_source, by_target, info, dense

    @property
    def shape(self):
        return tuple(self.by_source.shape)


def _top_entries_csr(rows, cols, values, n, m, keep):
    """CSR (n, m) of each row's ``keep`` largest values among (rows, cols, values)."""
    # sort by (row, value descending): by value first, then stably by row
    key = torch.argsort(-values, stable=True)
    key = key[torch.argsort(rows[key], stable=True)]
    rows, cols, values = rows[key], cols[key], values[key]
    counts = torch.bincount(rows, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(rows)) - starts[rows]
    chosen = rank < keep
    rows, cols, values = rows[chosen], cols[chosen], values[chosen]
    crow = torch.zeros(n + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values.float(), (n, m))


def population_plan(
    x,
    y,
    guided_pairs,
    eps,
    plan="dense",
    k=50,
    keep=64,
    max_iter=300,
    tol=1e-4,
    dense_limit=50_000_000,
    init=None,
    keep_dense=False,
):
    """The GOUM plan between populations ``x`` (n, d) and ``y`` (m, d) (see the module doc).

    ``guided_pairs``: (2, g) long tensor of (row of x, row of y) that are the same overlapped
    person (their cost is 0, Eq 17). ``plan``: 'dense' (refused when n * m > ``dense_limit``) or
    'sparse' (``k`` candidates a side). ``keep``: entries kept per user. ``init``: a warm-start
    potential (``info['potential']`` of the previous plan of the same populations).
    """
    if plan not in PLANS:
        raise ValueError(f"plan must be one of {PLANS}, got {plan!r}")
    n, m = len(x), len(y)
    x, y = x.detach().cpu().double(), y.detach().cpu().double()
    guided_pairs = guided_pairs.cpu()
    if init is not None and init.shape != (n,):
        init = None  # the populations changed: a cold start
    if plan == "dense":
        if n * m > dense_limit:
            raise ValueError(
                f"a dense population plan of {n:,} x {m:,} users ({n * m:,} entries) exceeds "
                f"ot_dense_limit ({dense_limit:,}); set ot_global_plan: sparse (each user's "
                "ot_candidates nearest users) or raise the limit"
            )
        cost = squared_euclidean_cost(x, y, normalize="mean")
        guide = torch.zeros(n, m, dtype=torch.bool)
        guide[guided_pairs[0], guided_pairs[1]] = True
        full, info = goum(cost, guide, eps, max_iter=max_iter, tol=tol, return_info=True, init=init)
        del cost, guide
        by_source, by_target = _dense_top_entries(full, keep), _dense_top_entries(full.T, keep)
        info["kept_mass"] = float(by_source.values().double().sum() / n)
        info["support"] = n * m
        return PopulationPlan(by_source, by_target, info, full.float() if keep_dense else None)
    else:
        rows, cols = candidate_pairs(x, y, k, guided_pairs)
        scale = mean_squared_distance(x, y) or 1.0
        cost = _zero_guided(((x[rows] - y[cols]) ** 2).sum(1) / scale, rows, cols, guided_pairs, m)
        values, info = sparse_entropic_plan(rows, cols, cost, n, m, eps, max_iter=max_iter, tol=tol, init=init)
    by_source = _top_entries_csr(rows, cols, values, n, m, keep)
    by_target = _top_entries_csr(cols, rows, values, m, n, keep)
    info["kept_mass"] = float(by_source.values().double().sum() / values.double().sum().clamp_min(1e-300))
    info["support"] = int(len(values))
    return PopulationPlan(by_source, by_target, info)


def _dense_top_entries(plan, keep):
    """CSR of each row's ``keep`` largest entries of a dense plan."""
    n, m = plan.shape
    keep = min(int(keep), m)
    values, cols = torch.topk(plan, keep, dim=1)
    crow = torch.arange(0, n * keep + 1, keep)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols.reshape(-1), values.reshape(-1).float(), (n, m))


def _zero_guided(cost, rows, cols, guided_pairs, m):
    """The support's cost with the guided pairs' entries at 0 (Eq 17's mask)."""
    if guided_pairs.numel() == 0:
        return cost
    guided = torch.isin(rows * m + cols, guided_pairs[0] * m + guided_pairs[1])
    return cost.masked_fill(guided, 0.0)
