"""Quadratically regularised optimal transport, the inner problem of SISHE (Eq 7-10).

``min_G <Y, G> + eta/2 ||G||^2`` over ``G >= 0`` with rows summing to 1 and columns to N/K.

Y may be sparse: entries off its pattern are 0 (in SISHE ``Y = -A_s gamma`` is as sparse as
the graph times the clustering).  Everything here works on the pattern plus a sorted
vector of the K (or N) dual values, never on a dense N x K array, so the cost of one
solve is about O(nnz(Y) + N log K).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import scipy.sparse as sp

from sieoug_recbole.checks import integer_in_range, positive_number

Transport = namedtuple("Transport", ["gamma", "f", "g", "iterations", "marginal_error"])
Transport.__doc__ = """Result of regularised_transport: the plan ``gamma`` (N, K), the duals ``f`` (N,) and
``g`` (K,), the iterations used and the final marginal error."""

# Newton steps of a threshold-root problem before giving up on the last rows (each step
# drops at least one entry of a row's active set; about 3 are used in practice)
_ROOT_MAX_STEPS = 100


def regularised_transport(Y, eta, f=None, g=None, tol=1e-9, max_iter=1000, method="newton"):
    """Solve ``min_G <Y, G> + eta/2 ||G||^2``, ``G >= 0``, rows sum to 1, columns to N/K.

    The solution has the form of Eq 8, ``G_ij = [(f_i + g_j - Y_ij) / eta]_+``, with duals
    ``f`` (Eq 9: row i sums to 1) and ``g`` (Eq 10: column j sums to N/K).

    Parameters
    ----------
    Y : array or scipy sparse matrix (N, K), finite; a sparse Y is 0 off its pattern
    eta : float > 0
    f, g : warm-start duals, (N,) and (K,); zeros when None
    tol : stop when the marginal error max(|row sum - 1|, |column sum - N/K|) is below tol
    max_iter : iteration cap
    method : 'newton' (default): exact rows, damped-Newton columns (see ``_damped_newton``);
        'alternating': the paper's plain alternation of exact row (Eq 9) and column (Eq 10)
        steps.  Both converge to the same, unique, plan; the alternation can need thousands
        of sweeps where Newton needs about ten.

    Returns
    -------
    Transport(gamma, f, g, iterations, marginal_error); gamma is a numpy array for a dense
    Y and a csr matrix for a sparse one.
    """
    sparse_input = sp.issparse(Y)
    y = sp.csr_matrix(Y, dtype=np.float64) if sparse_input else np.asarray(Y, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 1 or y.shape[1] < 1:
        raise ValueError(f"Y must be a non-empty 2-D array (N, K), got shape {y.shape}")
    if not np.isfinite(y.data if sparse_input else y).all():
        raise ValueError("Y contains NaN or infinite values")
    eta = positive_number(eta, "eta")
    tol = positive_number(tol, "tol")
    max_iter = integer_in_range(max_iter, "max_iter", 1)
    n, k = y.shape
    f = np.zeros(n) if f is None else np.asarray(f, dtype=np.float64)
    g = np.zeros(k) if g is None else np.asarray(g, dtype=np.float64)
    if f.shape != (n,) or g.shape != (k,):
        raise ValueError(f"f and g must have shapes ({n},) and ({k},), got {f.shape} and {g.shape}")
    if method not in ("newton", "alternating"):
        raise ValueError(f"method must be 'newton' or 'alternating', got {method!r}")
    costs = Costs(y, eta)
    solve = _damped_newton if method == "newton" else _alternating
    plan, iterations, err = solve(costs, f, g, tol, max_iter)
    gamma = plan.gamma()
    return Transport(gamma if sparse_input else gamma.toarray(), plan.f, plan.g, iterations, err)


class _Thresholds:
    """For a csr matrix M (n_out x n_in, 0 off its pattern) and a fixed vector h (n_in,):
    ``phi_o(x) = sum_in [x + h_in - M_o,in]_+``, convex, increasing and piecewise linear
    in x, with breakpoints ``c = M_o,in - h_in``.

    Off the pattern the breakpoints are ``-h_in`` for every row, so that part is one sorted
    vector with prefix sums (O(log n_in) per row); the pattern adds a correction per
    entry.  This is how rows (M = Y, h = g, Eq 9) and columns (M = Y^T, h = f, Eq 10) of
    the transport problem are solved without a dense array.
    """

    def __init__(self, m, row_of, h):
        self.m = m
        self.row_of = row_of
        self.order = np.argsort(-h, kind="stable")  # columns by breakpoint -h, ascending
        self.t = -h[self.order]
        self.prefix = np.concatenate(([0.0], np.cumsum(self.t)))
        self.c = m.data - h[m.indices]  # breakpoints of the pattern's entries
        self.base = -h[m.indices]  # what the off-pattern part counts for those entries

    def evaluate(self, x, rows=None, entries=None):
        """(phi_o(x_o), its left slope) for the rows ``rows`` (all when None), whose pattern
        entries are ``entries``."""
        n_out = self.m.shape[0]
        if rows is None:
            xr, owner, c, base = x, self.row_of, self.c, self.base
        else:
            xr, owner, c, base = x[rows], self.row_of[entries], self.c[entries], self.base[entries]
        cnt = np.searchsorted(self.t, xr, side="left")
        val = cnt * xr - self.prefix[cnt]
        slope = cnt.astype(np.float64)
        if owner.size:
            xe = x[owner]
            a = xe - c
            b = xe - base
            corr = np.bincount(owner, np.maximum(a, 0.0) - np.maximum(b, 0.0), minlength=n_out)
            dslope = np.bincount(owner, (a > 0).astype(np.float64) - (b > 0), minlength=n_out)
            val += corr if rows is None else corr[rows]
            slope += dslope if rows is None else dslope[rows]
        return val, slope

    def upper_start(self, s):
        """A point right of every root: s plus one of the row's breakpoints (the smallest
        pattern breakpoint, or the smallest off-pattern one for a row without entries)."""
        m = self.m
        x = np.full(m.shape[0], s + self.t[0])
        nonempty = np.flatnonzero(np.diff(m.indptr) > 0)
        if nonempty.size:
            x[nonempty] = s + np.minimum.reduceat(self.c, m.indptr[nonempty])
        return x

    def roots(self, s, x0=None):
        """For each row the x with ``phi_o(x) = s`` (s > 0), by Newton steps.

        From a point with positive slope a Newton step of a convex piecewise-linear function
        lands at or right of the root; from the right every step drops part of the active
        set and the last one is exact.  Rows whose start has slope 0 start at
        ``upper_start``.  A row stops when the residual is round-off.
        """
        n_out = self.m.shape[0]
        x = self.upper_start(s) if x0 is None else np.array(x0, dtype=np.float64)
        up = None
        rows = np.arange(n_out)
        entries = None
        for _ in range(_ROOT_MAX_STEPS):
            if entries is None:  # all rows (or most of them): no gathers
                val, slope = self.evaluate(x)
                val, slope = (val, slope) if len(rows) == n_out else (val[rows], slope[rows])
            else:
                val, slope = self.evaluate(x, rows, entries)
            flat = slope == 0
            if flat.any():
                if up is None:
                    up = self.upper_start(s)
                x[rows[flat]] = up[rows[flat]]
                val[flat], slope[flat] = self.evaluate(x, rows[flat], self._entries_of(rows[flat]))
            resid = val - s
            xr = x[rows]
            done = np.abs(resid) <= 1e-12 * (s + slope * np.abs(xr))
            x[rows] = xr - resid / slope
            if done.all():
                break
            rows = rows[~done]
            entries = self._entries_of(rows) if 2 * len(rows) < n_out else None
        return x

    def _entries_of(self, rows):
        mask = np.zeros(self.m.shape[0], dtype=bool)
        mask[rows] = True
        return np.flatnonzero(mask[self.row_of])

    def positive_part(self, x):
        """The entries with ``x_o + h_in - M_o,in > 0``: (rows, columns, values)."""
        m = self.m
        a = x[self.row_of] - self.c
        on = a > 0
        rows, cols, vals = [self.row_of[on]], [m.indices[on]], [a[on]]
        cnt = np.searchsorted(self.t, x, side="left")  # off-pattern: the cnt smallest -h
        total = int(cnt.sum())
        if total:
            irow = np.repeat(np.arange(m.shape[0]), cnt)
            rank = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            icol = self.order[rank]
            ival = x[irow] - self.t[rank]
            counted = (x[self.row_of] - self.base) > 0  # pattern entries counted above
            if counted.any():
                n_in = m.shape[1]
                known = self.row_of[counted].astype(np.int64) * n_in + m.indices[counted]
                keep = ~np.isin(irow.astype(np.int64) * n_in + icol, known)
                irow, icol, ival = irow[keep], icol[keep], ival[keep]
            rows.append(irow)
            cols.append(icol)
            vals.append(ival)
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


class Costs:
    """The cost matrix Y of one transport problem, in csr form for rows and for columns."""

    def __init__(self, y, eta):
        self.y = sp.csr_matrix(y, dtype=np.float64)
        self.y.sum_duplicates()
        self.eta = eta
        self.n, self.k = self.y.shape
        self.col_target = self.n / self.k
        self.row_of = np.repeat(np.arange(self.n), np.diff(self.y.indptr))
        self._columns = None  # Y^T in csr form and its row owners, built on first use

    def plan(self, g, f0=None):
        """The plan for column duals g with exact row duals f (Eq 9), warm-started at f0."""
        thr = _Thresholds(self.y, self.row_of, g)
        f = thr.roots(self.eta, f0)
        rows, cols, pos = thr.positive_part(f)
        return _Plan(self, f, g, rows, cols, pos)

    def column_duals(self, f, g0=None):
        """The exact column duals g for row duals f (Eq 10): every column sums to N/K."""
        if self._columns is None:
            y_t = self.y.T.tocsr()
            self._columns = (y_t, np.repeat(np.arange(self.k), np.diff(y_t.indptr)))
        return _Thresholds(*self._columns, f).roots(self.eta * self.col_target, g0)


class _Plan:
    """``G = pos / eta`` on the entries (rows, cols) for the duals (f, g), with its column
    sums, the dual objective ``sum f + N/K sum g - 1/(2 eta) sum pos^2`` and marginal error."""

    def __init__(self, costs, f, g, rows, cols, pos):
        self.costs, self.f, self.g = costs, f, g
        self.rows, self.cols, self.pos = rows, cols, pos
        eta = costs.eta
        self.colsum = np.bincount(cols, pos, minlength=costs.k) / eta
        self.dual = float(f.sum() - 0.5 / eta * float(pos @ pos) + costs.col_target * g.sum())

    def column_error(self):
        return float(np.abs(self.costs.col_target - self.colsum).max())

    def error(self):
        rowsum = np.bincount(self.rows, self.pos, minlength=self.costs.n) / self.costs.eta
        return max(float(np.abs(rowsum - 1.0).max()), self.column_error())

    def jacobian(self):
        """Generalised Hessian of the semi-dual in g: ``(diag(counts) - W^T W) / eta`` with
        ``W_ij = 1 / sqrt(size_i)`` on the active entries (size_i = active entries of row i)."""
        costs = self.costs
        size = np.bincount(self.rows, minlength=costs.n)
        w = sp.csr_matrix((1.0 / np.sqrt(size[self.rows]), (self.rows, self.cols)), shape=(costs.n, costs.k))
        counts = np.bincount(self.cols, minlength=costs.k).astype(np.float64)
        return (np.diag(counts) - (w.T @ w).toarray()) / costs.eta

    def gamma(self):
        costs = self.costs
        out = sp.csr_matrix((self.pos / costs.eta, (self.rows, self.cols)), shape=(costs.n, costs.k))
        out.sort_indices()
        return out


def _damped_newton(costs, f, g, tol, max_iter):
    """Exact dual ascent on ``max_{f,g} sum f + N/K sum g - 1/(2 eta) sum [f_i + g_j - Y_ij]_+^2``.

    f (rows, Eq 9) is always the exact maximiser for the current g (``Costs.plan``), so
    rows sum to 1 to round-off.  g is improved on the concave semi-dual
    ``D(g) = max_f dual(f, g)`` (K variables, gradient = N/K - column sums) by damped Newton
    steps (Levenberg-Marquardt): ``(J + lam I) delta = grad`` with J the generalised
    Hessian of the active set, lam adapted trust-region style.  The damping matters: rows
    that sit in a single cluster add no curvature, so D is locally linear along some
    directions and plain Newton (and the paper's column step, which then only inflates
    those rows) crawls; the damped step crosses such flat pieces.  A step is accepted on a
    sufficient dual increase, or, once gains are below round-off, when it halves the
    marginal error; if no damping is accepted, the paper's exact column step (Eq 10) is
    taken.  Every step ascends the dual and the primal solution is unique, so the result is
    the one of the paper's alternation (``_alternating``, tested), in about 10 iterations
    instead of hundreds to thousands.  Returns (plan, iterations, column error); stops when
    the largest column error is below ``tol``.
    """
    plan = costs.plan(g, f)
    lam = 0.0
    err = np.inf
    it = 0
    for it in range(1, max_iter + 1):
        err = plan.column_error()
        if err < tol or it == max_iter:
            break
        step, lam = _levenberg_marquardt_step(costs, plan, lam, err)
        plan = step if step is not None else costs.plan(costs.column_duals(plan.f, plan.g), plan.f)
    return plan, it, err


def _levenberg_marquardt_step(costs, plan, lam, err):
    """One accepted damped-Newton step on g from ``plan``: (new plan, new lam), or
    (None, lam) when no damping in 4^0 .. 4^39 times the start is accepted."""
    k = costs.k
    grad = costs.col_target - plan.colsum  # gradient of the semi-dual in g
    jac = plan.jacobian()
    scale = max(float(np.trace(jac)) / k, 1.0)
    floor = 1e-12 * max(1.0, abs(plan.dual))  # dual gains below this are round-off
    lam_try = max(lam, 1e-10 * scale)
    eye = np.eye(k)
    for _ in range(40):
        delta = np.linalg.solve(jac + lam_try * eye, grad)
        delta -= delta.mean()  # D is invariant to g + c 1
        pred = float(grad @ delta - 0.5 * delta @ jac @ delta)
        trial = costs.plan(plan.g + delta, plan.f)
        gain = trial.dual - plan.dual
        rho = gain / pred if pred > 0 else -1.0
        ok = gain > floor and rho > 0.1
        if not ok and gain >= -floor:
            ok = trial.column_error() <= 0.5 * err
        if ok:
            lam = lam_try / 4.0 if rho > 0.75 else lam_try
            return trial, (0.0 if lam < 1e-10 * scale else lam)
        lam_try *= 4.0
    return None, lam


def _alternating(costs, f, g, tol, max_iter):
    """Reference: the paper's plain alternation, f (rows, Eq 9) then g (columns, Eq 10),
    each exact, until the marginal error is below ``tol``."""
    err = np.inf
    it = 0
    plan = None
    for it in range(1, max_iter + 1):
        f = _Thresholds(costs.y, costs.row_of, g).roots(costs.eta, f)
        g = costs.column_duals(f, g)
        plan = costs.plan(g, f)
        err = plan.error()
        if err < tol:
            break
    return plan, it, err


def marginal_error(gamma, col_target):
    """max(|row sum - 1|, |column sum - col_target|) of a dense or sparse (N, K) gamma."""
    re = np.abs(np.asarray(gamma.sum(axis=1)).ravel() - 1.0).max()
    ce = np.abs(np.asarray(gamma.sum(axis=0)).ravel() - col_target).max()
    return float(max(re, ce))
