"""Multi-modal item-item graphs shared by the multi-modal baselines (LATTICE, FREEDOM).

A domain's graphs are built on its items' feature rows ``0..n_d-1`` (aligned with the joint
ids that :func:`sieoug_recbole.domain_data.domain_features` returns) and then lifted onto the
rows of the model's item table (the padding row, and in a global layout the other domain's
rows, stay empty, so a propagation never mixes the two domains). Everything is sparse (scipy
matrices or torch neighbour tables); no dense N x N matrix is formed.

- :class:`DomainModalities`: a domain's ids, table rows, features and kNN graphs;
- :func:`cosine_values` / :func:`modality_weights` / :func:`mix_graphs`: weighting and mixing;
- :func:`lift_item_graph`: a graph on feature rows, normalised, as an operator on table rows;
- :func:`knn_neighbours`, :func:`knn_edge_values`, :func:`knn_propagate`: a kNN graph as an
  (n, k) neighbour table whose edge values carry gradients (LATTICE's learned graph).
"""

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from sieoug_recbole.config_checks import check_within_items
from sieoug_recbole.domain_data import domain_features
from sieoug_recbole.graph import SparseOperator, lift
from sieoug_recbole.similarity import knn_graph, normalize_item_graph


class DomainModalities:
    """One domain's items and modality features, plus their kNN graphs.

    ``ids``: joint ids of the domain's real items (padding excluded); ``rows``: their rows in
    the model's item tables (``layout``, an :class:`~sieoug_recbole.id_layout.IdLayout`);
    ``features``: ``{modality: (n_d, d_m) float32}`` aligned with ``ids``, modalities in sorted
    order.
    """

    def __init__(self, config, dataset, domain, layout):
        self.domain = domain
        ids, features = domain_features(config, dataset, domain)
        self.ids = np.asarray(ids, dtype=np.int64)
        self.rows = layout.to_rows("item", domain, self.ids)
        self.features = {m: np.asarray(features[m], dtype=np.float32) for m in sorted(features)}
        self.modalities = list(self.features)

    def __len__(self):
        return len(self.ids)

    def knn_graphs(self, k, include_self=True, weighted=False):
        """``{modality: (n_d, n_d) csr}`` directed top-``k`` cosine graphs (row i: i's neighbours).

        Binary, or with ``weighted`` the edge values are the cosines clipped at 0 (an edge
        with a non-positive cosine disappears). ``k`` (config key ``knn_k``) above the domain's
        item count is a :class:`~sieoug_recbole.config_checks.ConfigError`.
        """
        k = check_within_items("knn_k", int(k), len(self), self.domain, excluding_self=not include_self)
        graphs = {}
        for m, x in self.features.items():
            graph = knn_graph(x, k, include_self=include_self)
            graphs[m] = cosine_values(graph, x) if weighted else graph
        return graphs

    def feature_rows(self, num_rows):
        """(num_rows,) int64: the feature row of each item-table row, ``n_d`` for the rows
        without features (the padding, the other domain's items in a global layout): index a
        feature matrix padded with one zero row."""
        rows = np.full(num_rows, len(self), dtype=np.int64)
        rows[self.rows] = np.arange(len(self))
        return rows

    def padded_features(self, device=None):
        """``{modality: (n_d + 1, d_m) torch float32}``: the features plus a final zero row."""
        out = {}
        for m, x in self.features.items():
            padded = np.vstack([x, np.zeros((1, x.shape[1]), dtype=np.float32)])
            out[m] = torch.from_numpy(padded).to(device)
        return out


def cosine_values(graph, features):
    """``graph``'s pattern with each edge (i, j) valued max(cos(x_i, x_j), 0), zeros dropped."""
    coo = sp.coo_matrix(graph)
    x = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1)
    unit = np.divide(x, norms[:, None], out=np.zeros_like(x), where=norms[:, None] > 0)
    values = np.einsum("ij,ij->i", unit[coo.row], unit[coo.col])
    out = sp.csr_matrix((np.maximum(values, 0.0).astype(np.float32), (coo.row, coo.col)), shape=graph.shape)
    out.eliminate_zeros()
    return out


def modality_weights(spec, modalities):
    """``{modality: weight}`` summing to 1.

    ``spec``: None (uniform) or a dict ``{modality: weight}``. A dict that names none of
    ``modalities`` also gives uniform weights (e.g. FREEDOM's visual/text defaults on a
    dataset with other modality names); a dict that names only some of them is an error.
    """
    modalities = list(modalities)
    if not spec:
        return {m: 1.0 / len(modalities) for m in modalities}
    spec = dict(spec)
    named = [m for m in modalities if m in spec]
    if not named:
        return {m: 1.0 / len(modalities) for m in modalities}
    if len(named) != len(modalities):
        missing = [m for m in modalities if m not in spec]
        raise ValueError(
            f"modality_weights names {named} but not {missing}; give every "
            f"modality of the data a weight, or none of them"
        )
    weights = {m: float(spec[m]) for m in modalities}
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"modality_weights must be non-negative with a positive sum, got {weights}")
    return {m: w / total for m, w in weights.items()}


def mix_graphs(graphs, weights):
    """``sum_m weights[m] * graphs[m]`` as csr (same shape for every modality)."""
    total = None
    for m, graph in graphs.items():
        term = sp.csr_matrix(graph, dtype=np.float64) * weights[m]
        total = term if total is None else total + term
    return total.tocsr()


def lift_item_graph(local_graph, rows, num_rows, device=None, normalize=True):
    """A domain's item graph on its feature rows (optionally ``D^-1/2 A D^-1/2``-normalised
    first) as a (num_rows, num_rows) :class:`SparseOperator` on the item table's ``rows``."""
    graph = normalize_item_graph(local_graph) if normalize else sp.csr_matrix(local_graph)
    return SparseOperator(lift(graph, rows, rows, (num_rows, num_rows)), device)


# ----- torch kNN graphs whose edge values need gradients (LATTICE's learned graph) ----------
# A directed kNN graph on n items has exactly k edges per row, so it is held as an (n, k)
# neighbour table (row i: the columns of its k edges) with an (n, k) table of edge values.
@torch.no_grad()
def knn_neighbours(x, k, include_self=True, block_rows=1024):
    """(n, k) long tensor: row i holds the ``k`` rows of ``x`` nearest to row i by cosine.

    Computed on ``x``'s device in blocks of rows (memory O(block_rows * N)). With
    ``include_self`` every item is its own first neighbour. No gradient flows here: the
    values are computed separately by :func:`knn_edge_values`.
    """
    n = x.shape[0]
    k = min(int(k), n if include_self else n - 1)
    unit = torch.nn.functional.normalize(x, dim=1)
    blocks = []
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        sim = unit[start:stop] @ unit.T
        local = torch.arange(stop - start, device=x.device)
        sim[local, local + start] = float("inf") if include_self else float("-inf")
        blocks.append(torch.topk(sim, k, dim=1).indices)
    return torch.cat(blocks)


def knn_edge_values(x, neighbours):
    """Differentiable (n, k) values of the kNN graph of the rows of ``x``: max(cos, 0), then
    ``D^-1/2 S D^-1/2`` with D the row sums (as :func:`normalize_item_graph`)."""
    unit = torch.nn.functional.normalize(x, dim=1)
    values = torch.relu(knn_dots(neighbours, unit))
    degree = values.sum(dim=1)
    scale = torch.where(degree > 0, degree.clamp_min(1e-12).rsqrt(), torch.zeros_like(degree))
    return values * scale.unsqueeze(1) * scale[neighbours]


def knn_dots(neighbours, x):
    """(n, k) dot products <x_i, x_{neighbours[i, j]}>, differentiable in ``x``.

    On the CPU the backward pass is two CSR products (dL/dx = G x + G^T x, G the graph valued
    with the incoming gradient) instead of torch's scatter-add of (n k) x d rows.
    """
    if x.device.type == "cpu":
        return _KnnDots.apply(x, neighbours)
    return _edge_dots(x, x, neighbours)


def _edge_dots(left, right, neighbours):
    """(n, k): <left_i, right_{neighbours[i, j]}>. On the CPU torch's sampled dense-dense
    product (SDDMM) on the neighbour pattern, without gathering (n k) x d rows first."""
    n, k = neighbours.shape
    if left.device.type != "cpu":
        return (_rows(right, neighbours) * left.unsqueeze(1)).sum(dim=-1)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(
            torch.arange(0, n * k + 1, k),
            neighbours.reshape(-1),
            torch.zeros(n * k, dtype=left.dtype),
            (n, right.shape[0]),
        )
        return torch.sparse.sampled_addmm(pattern, left, right.T, beta=0.0).values().view(n, k)


def _rows(x, neighbours):
    """(n, k, d): the rows of ``x`` named by the neighbour table (index_select: a 2-d index
    into ``x`` is several times slower on the CPU)."""
    return x.index_select(0, neighbours.reshape(-1)).view(*neighbours.shape, x.shape[1])


def _csr(neighbours, values, n_cols):
    """The (n, n_cols) CSR matrix with values[i, j] at (i, neighbours[i, j])."""
    n, k = neighbours.shape
    return sp.csr_matrix(
        (values.detach().numpy().ravel(), neighbours.numpy().ravel(), np.arange(0, n * k + 1, k)), shape=(n, n_cols)
    )


def knn_propagate(neighbours, values, x):
    """``S @ x`` for the (n, len(x)) matrix with S[i, neighbours[i, j]] = values[i, j],
    differentiable in ``values`` and ``x``.

    On the CPU it is a CSR product (scipy) whose backward is the transposed product plus a
    sampled dense-dense product for the values' gradient; the plain formulation (gather x's
    rows, weight, sum: :func:`knn_propagate_reference`, used on other devices; the tests check
    that both agree) gathers (n k) x d rows forward and scatter-adds them backward.
    """
    if x.device.type == "cpu":
        return _KnnProduct.apply(values, x, neighbours)
    return knn_propagate_reference(neighbours, values, x)


def knn_propagate_reference(neighbours, values, x):
    """:func:`knn_propagate` written with torch's gather and batched product."""
    return torch.bmm(values.unsqueeze(1), _rows(x, neighbours)).squeeze(1)


class _KnnProduct(torch.autograd.Function):
    """y = S x, dL/dx = S^T dL/dy, dL/dS[i, j] = <dL/dy_i, x_j> on S's edges only."""

    @staticmethod
    def forward(ctx, values, x, neighbours):
        matrix = _csr(neighbours, values, x.shape[0])
        ctx.matrix = matrix
        ctx.save_for_backward(x, neighbours)
        return torch.from_numpy(matrix @ x.detach().numpy())

    @staticmethod
    def backward(ctx, grad):
        x, neighbours = ctx.saved_tensors
        grad = grad.contiguous()
        grad_values = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_values = _edge_dots(grad, x.detach(), neighbours)
        if ctx.needs_input_grad[1]:
            grad_x = torch.from_numpy(ctx.matrix.T @ grad.numpy())
        return grad_values, grad_x, None


class _KnnDots(torch.autograd.Function):
    """d_ij = <x_i, x_{n_ij}>; dL/dx = G x + G^T x with G[i, n_ij] = dL/dd_ij."""

    @staticmethod
    def forward(ctx, x, neighbours):
        ctx.save_for_backward(x, neighbours)
        return _edge_dots(x.detach(), x.detach(), neighbours)

    @staticmethod
    def backward(ctx, grad):
        x, neighbours = ctx.saved_tensors
        graph = _csr(neighbours, grad.contiguous(), x.shape[0])
        x = x.detach().numpy()
        return torch.from_numpy(graph @ x + graph.T @ x), None
