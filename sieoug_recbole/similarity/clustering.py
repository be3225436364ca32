"""SISHE: balanced sparse soft clustering of the items (SIEOUG Eq 6-10, Algorithm 1).

Objective and safeguard.  The outer update of ``sishe`` (linearise, then solve the
transport problem for G) is the conditional-gradient (majorise-minimise) step of
``J(gamma) = -trace(gamma^T A gamma) + eta ||gamma||^2`` (Eq 6's regulariser with the 1/2
dropped: with ``Y = -A gamma`` and ``eta/2`` in Eq 7, Eq 6's printed 1/2
cannot also hold, since the gradient of Eq 6's first term is ``-2 A_s gamma``); the step
direction ``G - gamma`` is a descent direction of J.  A kNN graph is not positive
semi-definite, so the full step can overshoot and increase J; we therefore take the
exact line search on the segment ``gamma + t (G - gamma)``, t in (0, 1] (J is quadratic
in t, closed form).  J is thus non-increasing.  The segment stays feasible because the
feasible set is convex.

Stopping rule (``_stopping_rule``; the reason is ``history['stopped']``): 'step_tol' when
the step changes gamma by less than ``tol`` (max abs, after the line search; also when
the transport solution itself is within ``tol`` of gamma), 'objective_tol' when J falls
by less than ``tol * max(1, |J|)``, 'no_descent' when the direction is not a descent
direction (round-off only), 'max_iter' after ``max_iter`` outer iterations
(``converged`` is False only then).  The update moves an item towards the clusters of
its graph neighbours, so a change of clusters spreads one kNN hop per iteration; a
start far from a local optimum (e.g. on a graph that mixes two unrelated cluster
structures) can need well over 100 iterations, hence the default cap of 300.

Initialisation.  Algorithm 1 starts from ``gamma = 1/K``: that is a fixed point (then
Y_ij = -(A_s 1)_i / K is the same in every column, so the transport solution is the
uniform gamma again) and nothing is ever clustered.  ``init='spectral'`` (default)
breaks the symmetry with a seeded spectral-like start (``spectral.spectral_start``:
subspace iteration on the normalised graph, then seeded k-means; only used to form the
first Y).
``init='random'`` uses a seeded random row-stochastic matrix; ``init='uniform'``
reproduces Algorithm 1's start (returns the uniform gamma; for demonstration).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from sieoug_recbole.checks import integer_in_range, positive_number

from ._inputs import as_square_csr
from .spectral import spectral_start
from .transport import marginal_error, regularised_transport

#: prune entries of a step below this (round-off of rows that did not move)
_NEGLIGIBLE = 1e-14


def _symmetric_part(A):
    return ((A + A.T) * 0.5).tocsr()


def _inner(a, b):
    """Frobenius inner product of two sparse matrices of one shape."""
    return float(a.multiply(b).sum())


def sishe(
    A, n_clusters, eta, seed=0, max_iter=300, tol=1e-6, inner_max_iter=2000, return_history=False, init="spectral"
):
    """Sparsity Item Similarity Hypergraph Exploration (Eq 6-10, Algorithm 1).

    Balanced soft clustering of the N items of the graph A into K clusters::

        gamma in R^{N x K}_+,  rows sum to 1,  columns sum to N / K.

    Each outer iteration linearises the quadratic term, ``Y = -A_s gamma`` (A_s = (A + A^T)/2,
    which equals A for symmetric A and is the part of A that trace(gamma^T A gamma) sees),
    and solves the quadratically regularised transport ``min <Y, G> + eta/2 ||G||^2`` under
    the two marginals, whose solution is ``G_ij = [(f_i + g_j - Y_ij) / eta]_+`` (Eq 8)
    (``regularised_transport``: f exact per row, Eq 9; g by damped-Newton steps on the
    K-variable semi-dual, the paper's exact column step, Eq 10, as fallback; until the
    marginal error is below ``tol``, at most ``inner_max_iter`` iterations).  f and g are
    warm-started across outer iterations.  Y, gamma and every intermediate are sparse
    (the quadratic regulariser yields exact zeros; gamma has about one entry per row), so
    an iteration costs about O(nnz(A_s) + N log K), never O(N K) memory.

    The objective, the line search, the stopping rule and the start are described in
    the module docstring.

    Parameters
    ----------
    A : (N, N) sparse or dense, non-negative similarity graph (e.g. the RISGF output)
    n_clusters : int, 1 <= K <= N
    eta : float > 0
    seed : int, seeds the initialisation (results are deterministic per seed)
    max_iter : int, outer iterations
    tol : float, marginal / stopping tolerance
    inner_max_iter : int, inner (dual) iterations per outer iteration
    return_history : bool
    init : {'spectral', 'random', 'uniform'}

    Returns
    -------
    gamma : scipy.sparse.csr_matrix (N, K) float64; with ``return_history=True``
    ``(gamma, history)`` where history has ``objective`` (J per iteration, starting with the
    first iterate), ``trace`` (trace(gamma^T A gamma)), ``step`` (line-search t),
    ``inner_iterations``, ``marginal_error`` (per iteration and ``final_marginal_error``),
    ``iterations``, ``stopped`` (the stopping rule that ended it) and ``converged``.
    """
    A = as_square_csr(A)
    n = A.shape[0]
    k, eta, tol, max_iter, inner_max_iter = _checked_arguments(n, n_clusters, eta, tol, max_iter, inner_max_iter, init)
    As = _symmetric_part(A)
    gamma0 = _start(As, k, init, np.random.default_rng(seed))

    # first iterate: the regularised-OT solution for Y from the start (which need not be
    # feasible; it only breaks the symmetry)
    gamma, f, g, it_in, err = regularised_transport(-(As @ gamma0), eta, tol=tol, max_iter=inner_max_iter)
    ag = (As @ gamma).tocsr()
    hist = _History(eta)
    obj = hist.record(gamma, ag, 1.0, it_in, err)
    stopped = "max_iter"
    for _ in range(max_iter):
        cand, f, g, it_in, err = regularised_transport(-ag, eta, f, g, tol, inner_max_iter)
        d = _direction(gamma, cand, tol)
        step = None if d is None else _line_search(As, gamma, ag, d, eta)
        if step is None:
            stopped = "step_tol" if d is None else "no_descent"
            break
        gamma, ag, t, moved = step
        new_obj = hist.record(gamma, ag, t, it_in, marginal_error(gamma, n / k))
        stopped = _stopping_rule(moved, obj - new_obj, new_obj, tol) or "max_iter"
        obj = new_obj
        if stopped != "max_iter":
            break

    out = gamma.tocsr()
    out.eliminate_zeros()
    out.sort_indices()
    if not return_history:
        return out
    return out, hist.finish(stopped, marginal_error(gamma, n / k), init)


def _checked_arguments(n, n_clusters, eta, tol, max_iter, inner_max_iter, init):
    k = integer_in_range(n_clusters, "n_clusters", 1)
    if k > n:
        raise ValueError(f"n_clusters must be in [1, N={n}] for A of shape ({n}, {n}), got {k}")
    eta = positive_number(eta, "eta")
    tol = positive_number(tol, "tol")
    max_iter = integer_in_range(max_iter, "max_iter", 0)
    inner_max_iter = integer_in_range(inner_max_iter, "inner_max_iter", 1)
    if init not in ("spectral", "random", "uniform"):
        raise ValueError(f"init must be 'spectral', 'random' or 'uniform', got {init!r}")
    return k, eta, tol, max_iter, inner_max_iter


def _start(As, k, init, rng):
    """The (N, K) matrix whose Y = -A_s gamma0 forms the first transport problem."""
    n = As.shape[0]
    if init == "spectral" and k > 1:
        return spectral_start(As, k, rng)
    if init == "random" and k > 1:
        gamma0 = rng.random((n, k))
        gamma0 /= gamma0.sum(axis=1, keepdims=True)
        return sp.csr_matrix(gamma0)
    return sp.csr_matrix(np.full((n, k), 1.0 / k))


def _direction(gamma, cand, tol):
    """The step direction ``cand - gamma`` (csr, round-off pruned), or None when the
    transport solution is within ``tol`` of gamma (max abs)."""
    d = (cand - gamma).tocsr()
    d.data[np.abs(d.data) < _NEGLIGIBLE] = 0.0
    d.eliminate_zeros()
    if d.nnz == 0 or float(np.abs(d.data).max()) < tol:
        return None
    return d


def _line_search(As, gamma, ag, d, eta):
    """Exact line search of J on ``gamma + t d``, t in (0, 1].

    J is quadratic in t: ``J(gamma + t d) = J + t slope + t^2 curv``.  Returns
    ``(gamma, A_s gamma, t, t * max|d|)``, or None when ``d`` is not a descent direction
    (only possible through round-off).
    """
    ad = As @ d
    slope = 2.0 * (-_inner(d, ag) + eta * _inner(gamma, d))  # <grad J, d>
    curv = -_inner(d, ad) + eta * float(d.data @ d.data)
    if slope >= 0.0:
        return None
    t = 1.0 if curv <= 0.0 else min(1.0, -slope / (2.0 * curv))
    gamma = (gamma + t * d).tocsr()
    ag = (ag + t * ad).tocsr()
    if t < 1.0:
        gamma.data[gamma.data < 1e-15] = 0.0
        gamma.eliminate_zeros()
    return gamma, ag, t, t * float(np.abs(d.data).max())


def _stopping_rule(moved, gain, objective, tol):
    """'step_tol' when the step changed gamma by less than ``tol`` (max abs), 'objective_tol'
    when J fell by less than ``tol * max(1, |J|)``, else None (go on)."""
    if moved < tol:
        return "step_tol"
    if gain <= tol * max(1.0, abs(objective)):
        return "objective_tol"
    return None


def sishe_objective(gamma, ag, eta):
    """SISHE's ``J = -trace(gamma^T A_s gamma) + eta ||gamma||^2`` from gamma and
    ``ag = A_s gamma``; returns (J, trace)."""
    tr = _inner(gamma, ag)
    return -tr + eta * float(gamma.data @ gamma.data), tr


class _History:
    """Per-iteration record of SISHE: J, trace, step, inner iterations, marginal error."""

    def __init__(self, eta):
        self.eta = eta
        self.data = {"objective": [], "trace": [], "step": [], "inner_iterations": [], "marginal_error": []}

    def record(self, gamma, ag, step, inner_iterations, error):
        """Append one iteration; returns its objective J."""
        obj, tr = sishe_objective(gamma, ag, self.eta)
        for key, value in (
            ("objective", obj),
            ("trace", tr),
            ("step", step),
            ("inner_iterations", inner_iterations),
            ("marginal_error", error),
        ):
            self.data[key].append(value)
        return obj

    def finish(self, stopped, final_error, init):
        return {
            **self.data,
            "iterations": len(self.data["objective"]),
            "stopped": stopped,
            "converged": stopped != "max_iter",
            "final_marginal_error": final_error,
            "init": init,
        }
