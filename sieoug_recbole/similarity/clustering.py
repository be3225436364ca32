"""SISHE: balanced sparse soft clustering of the items (SIEOUG Eq 6-10, Algorithm 1)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from sieoug_recbole.checks import integer_in_range, positive_number

from ._inputs import as_square_csr
from .operators import normalize_item_graph
from .transport import marginal_error, regularised_transport


def _symmetric_part(A):
    return ((A + A.T) * 0.5).tocsr()


def _sq_dist(x, sq, centers):
    """Squared distances (N, K); einsum avoids BLAS thread overhead on these thin products."""
    cc = np.einsum("ij,ij->i", centers, centers)
    return sq[:, None] - 2.0 * np.einsum("ij,kj->ik", x, centers) + cc[None, :]


def _kmeans(x, k, rng, n_iter=50, n_init=3):
    """Small seeded k-means (k-means++ seeding, Lloyd), returns labels of the best run."""
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centers = np.empty((k, x.shape[1]))
        centers[0] = x[rng.integers(n)]
        d2 = np.maximum(sq - 2 * x @ centers[0] + centers[0] @ centers[0], 0.0)
        for c in range(1, k):
            tot = d2.sum()
            idx = rng.choice(n, p=d2 / tot) if tot > 0 else rng.integers(n)
            centers[c] = x[idx]
            d2 = np.minimum(d2, np.maximum(sq - 2 * x @ centers[c] + centers[c] @ centers[c], 0.0))
        labels = None
        for _ in range(n_iter):
            dist = _sq_dist(x, sq, centers)
            new = dist.argmin(axis=1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            counts = np.bincount(labels, minlength=k)
            onehot = sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
            sums = np.asarray(onehot @ x)
            empty = counts == 0
            centers[~empty] = sums[~empty] / counts[~empty, None]
            if empty.any():  # re-seed empty clusters at the points farthest from their centre
                far = np.argsort(-dist[np.arange(n), labels], kind="stable")[: int(empty.sum())]
                centers[empty] = x[far]
        dist = _sq_dist(x, sq, centers)
        labels = dist.argmin(axis=1)
        inertia = float(dist[np.arange(n), labels].sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def _orthonormalize(q):
    """Orthonormal basis of the columns of a tall q (Cholesky QR, twice for accuracy)."""
    for _ in range(2):
        gram = q.T @ q
        gram += 1e-12 * max(float(np.trace(gram)), 1e-300) * np.eye(gram.shape[0])
        chol = np.linalg.cholesky(gram)
        q = np.linalg.solve(chol, q.T).T
    return q


def _spectral_start(As, k, rng, n_power=30):
    """Seeded spectral-like start: subspace iteration on (I + D^-1/2 A_s D^-1/2)/2, row
    normalisation, k-means; returns one-hot labels (N, K)."""
    n = As.shape[0]
    p = normalize_item_graph(As)
    dim = min(n, k + 5)
    q = _orthonormalize(rng.standard_normal((n, dim)))
    for t in range(n_power):
        q = 0.5 * (q + p @ q)
        if t % 5 == 4 or t == n_power - 1:
            q = _orthonormalize(q)
    emb = q[:, :dim]
    nr = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.where(nr > 0, nr, 1.0)
    labels = _kmeans(emb, k, rng)
    gamma0 = np.zeros((n, k))
    gamma0[np.arange(n), labels] = 1.0
    return gamma0


def sishe(A, n_clusters, eta, seed=0, max_iter=100, tol=1e-6, inner_max_iter=2000,
          return_history=False, init="spectral"):
    """Sparsity Item Similarity Hypergraph Exploration (Eq 6-10, Algorithm 1).

    Balanced soft clustering of the N items of the graph A into K clusters::

        gamma in R^{N x K}_+,  rows sum to 1,  columns sum to N / K.

    Each outer iteration linearises the quadratic term, ``Y = -A_s gamma`` (A_s = (A + A^T)/2,
    which equals A for symmetric A and is the part of A that trace(gamma^T A gamma) sees),
    and solves the quadratically regularised transport ``min <Y, G> + eta/2 ||G||^2`` under
    the two marginals, whose solution is ``G_ij = [(f_i + g_j - Y_ij) / eta]_+`` (Eq 8).
    f (rows, Eq 9) is found exactly by sorting (1-D monotone piecewise-linear roots, all rows
    at once); g (columns) by damped-Newton steps on the K-variable semi-dual, with the
    paper's exact sorting-based column step (Eq 10) as fallback, until the marginal error
    is below ``tol`` (at most ``inner_max_iter`` iterations).  This has the same solution as
    the paper's plain f/g alternation, which crawls on kNN graphs (see ``transport``); f and g
    are warm-started across outer iterations.  The quadratic regulariser yields exact
    zeros, so gamma is sparse.

    Objective and safeguard.  This update is the conditional-gradient (majorise-minimise)
    step of ``J(gamma) = -trace(gamma^T A gamma) + eta ||gamma||^2`` (Eq 6's regulariser
    with the 1/2 dropped: with ``Y = -A gamma`` and ``eta/2`` in Eq 7, Eq 6's printed 1/2
    cannot also hold, since the gradient of Eq 6's first term is ``-2 A_s gamma``); the step
    direction ``G - gamma`` is a descent direction of J.  A kNN graph is not positive
    semi-definite, so the full step can overshoot and increase J; we therefore take the
    exact line search on the segment ``gamma + t (G - gamma)``, t in (0, 1] (J is quadratic
    in t, closed form).  J is thus non-increasing.  The segment stays feasible because the
    feasible set is convex.  Outer iterations stop when the step changes gamma by less than
    ``tol`` (max abs) or J by less than ``tol * max(1, |J|)``.

    Initialisation.  Algorithm 1 starts from ``gamma = 1/K``: that is a fixed point (then
    Y_ij = -(A_s 1)_i / K is the same in every column, so the transport solution is the
    uniform gamma again) and nothing is ever clustered.  ``init='spectral'`` (default)
    breaks the symmetry with a seeded spectral-like start (subspace iteration on the
    normalised graph, then seeded k-means; only used to form the first Y).
    ``init='random'`` uses a seeded random row-stochastic matrix; ``init='uniform'``
    reproduces Algorithm 1's start (returns the uniform gamma; for demonstration).

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
    ``iterations`` and ``converged``.
    """
    A = as_square_csr(A)
    n = A.shape[0]
    k, eta, tol, max_iter, inner_max_iter = _checked_arguments(
        n, n_clusters, eta, tol, max_iter, inner_max_iter, init)
    As = _symmetric_part(A)
    gamma0 = _start(As, k, init, np.random.default_rng(seed))

    # first iterate: the regularised-OT solution for Y from the start (which need not be
    # feasible; it only breaks the symmetry)
    gamma, f, g, it_in, err = regularised_transport(-(As @ gamma0), eta, tol=tol, max_iter=inner_max_iter)
    ag = As @ gamma
    hist = _History(eta)
    obj = hist.record(gamma, ag, 1.0, it_in, err)
    converged = False
    for _ in range(max_iter):
        cand, f, g, it_in, err = regularised_transport(-ag, eta, f, g, tol, inner_max_iter)
        step = _line_search(As, gamma, ag, cand, eta, tol)
        if step is None:
            converged = True
            break
        gamma, ag, t, moved = step
        new_obj = hist.record(gamma, ag, t, it_in, marginal_error(gamma, n / k))
        small_gain = obj - new_obj <= tol * max(1.0, abs(new_obj))
        obj = new_obj
        if moved < tol or small_gain:
            converged = True
            break

    out = sp.csr_matrix(gamma)
    out.eliminate_zeros()
    if not return_history:
        return out
    return out, hist.finish(converged, marginal_error(gamma, n / k), init)


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
        return _spectral_start(As, k, rng)
    if init == "random" and k > 1:
        gamma0 = rng.random((n, k))
        gamma0 /= gamma0.sum(axis=1, keepdims=True)
        return gamma0
    return np.full((n, k), 1.0 / k)


def _line_search(As, gamma, ag, cand, eta, tol):
    """Exact line search of J on ``gamma + t (cand - gamma)``, t in (0, 1].

    J is quadratic in t: ``J(gamma + t d) = J + t slope + t^2 curv``.  Returns
    ``(gamma, A_s gamma, t, t * max|d|)``, or None when ``cand`` is (numerically) ``gamma`` or
    ``d`` is not a descent direction (only possible through round-off).
    """
    d = cand - gamma
    if float(np.abs(d).max()) < tol:
        return None
    ad = As @ d
    slope = 2.0 * (-float(np.sum(d * ag)) + eta * float(np.sum(gamma * d)))  # <grad J, d>
    curv = -float(np.sum(d * ad)) + eta * float(np.sum(d * d))
    if slope >= 0.0:
        return None
    t = 1.0 if curv <= 0.0 else min(1.0, -slope / (2.0 * curv))
    gamma = gamma + t * d
    ag = ag + t * ad
    if t < 1.0:
        gamma[gamma < 1e-15] = 0.0
    return gamma, ag, t, t * float(np.abs(d).max())


class _History:
    """Per-iteration record of SISHE: J, trace, step, inner iterations, marginal error."""

    def __init__(self, eta):
        self.eta = eta
        self.data = {"objective": [], "trace": [], "step": [], "inner_iterations": [], "marginal_error": []}

    def record(self, gamma, ag, step, inner_iterations, error):
        """Append one iteration; returns its objective J."""
        tr = float(np.sum(gamma * ag))
        obj = -tr + self.eta * float(np.sum(gamma * gamma))
        for key, value in (("objective", obj), ("trace", tr), ("step", step),
                           ("inner_iterations", inner_iterations), ("marginal_error", error)):
            self.data[key].append(value)
        return obj

    def finish(self, converged, final_error, init):
        return {**self.data, "iterations": len(self.data["objective"]), "converged": converged,
                "final_marginal_error": final_error, "init": init}
