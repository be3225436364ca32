"""Sparse graph helpers shared by every graph model (no dense N x N matrix anywhere).

- :func:`bipartite_adjacency`: the symmetric-normalised user-item graph of LightGCN (Eq 11),
  built from coo arrays (scipy >= 1.13 removed ``dok_matrix._update``, which RecBole's own
  LightGCN relies on);
- :func:`symmetric_normalize`: D^-1/2 A D^-1/2 of any square sparse matrix (zero-degree rows
  stay zero);
- :class:`SparseOperator`: a frozen scipy sparse matrix as a fast differentiable ``M @ x``;
- :func:`propagate`: repeated sparse multiplication, returning every layer or their mean.
"""

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def symmetric_normalize(matrix):
    """D_r^-1/2 M D_c^-1/2 with D_r, D_c the row and column sums (equal for symmetric M)."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    row_sum = np.asarray(matrix.sum(axis=1)).ravel()
    col_sum = np.asarray(matrix.sum(axis=0)).ravel()
    with np.errstate(divide="ignore"):
        row_scale = np.where(row_sum > 0, row_sum**-0.5, 0.0).astype(np.float32)
        col_scale = np.where(col_sum > 0, col_sum**-0.5, 0.0).astype(np.float32)
    return sp.diags(row_scale) @ matrix @ sp.diags(col_scale)


def bipartite_adjacency(user_ids, item_ids, num_users, num_items):
    """Normalised (U+I) x (U+I) adjacency of the user-item interaction graph.

    Repeated (user, item) pairs count once. Users are nodes 0..U-1, items U..U+I-1.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    inter = sp.coo_matrix(
        (np.ones(len(user_ids), dtype=np.float32), (user_ids, item_ids)), shape=(num_users, num_items)
    ).tocsr()
    inter.data[:] = 1.0  # duplicates were summed; a pair is an edge of weight 1
    adjacency = sp.bmat([[None, inter], [inter.T, None]], format="csr")
    return symmetric_normalize(adjacency)


class SparseOperator:
    """A frozen sparse matrix ``M`` applied to dense tensors: ``M @ x``, differentiable in ``x``.

    ``M`` is kept in CSR together with its transpose, so the backward pass is one CSR product
    with the stored ``M^T``. On the CPU the products are scipy's CSR kernel by default; on a
    GPU, torch's CSR product. (Measured on one CPU thread, ``benchmarks/sparse_product.py``:
    torch's COO product transposes and re-sorts ``M`` on every backward call, and its CSR
    product zero-fills and then copies the output; scipy's kernel writes it once.)
    No gradient flows to the values of ``M``.

    ``backend``: ``"scipy"`` (the CPU default) or ``"torch"`` (torch's CSR product; the only
    one off the CPU, and selectable on the CPU, e.g. to test or time the GPU's code path).
    """

    def __init__(self, matrix, device=None, backend=None):
        csr = sp.csr_matrix(matrix, dtype=np.float32, copy=True)  # the caller's matrix stays as it is
        csr.sum_duplicates()  # (sorts the indices in place: a shared index array would corrupt it)
        self.shape = csr.shape
        self.nnz = int(csr.nnz)
        self.device = resolve_device(device)
        self.backend = _product_backend(backend, self.device)
        self._requested_backend = backend  # what .to() passes on
        self._scipy = (csr, csr.T.tocsr())  # (M, M^T)
        self._torch = None  # (M, M^T) as torch CSR tensors, with the torch backend only
        if self.backend == "torch":
            self._torch = tuple(_torch_csr(m, self.device) for m in self._scipy)

    def __matmul__(self, x):
        if x.dim() != 2 or x.shape[0] != self.shape[1]:
            raise ValueError(
                f"SparseOperator of shape {tuple(self.shape)} cannot multiply a tensor "
                f"of shape {tuple(x.shape)} (expected ({self.shape[1]}, d))"
            )
        if x.dtype != torch.float32:
            raise TypeError(f"SparseOperator holds float32 values; got a {x.dtype} tensor")
        if x.device != self.device:
            raise ValueError(f"SparseOperator is on {self.device}, the tensor on {x.device}")
        return _FrozenSparseProduct.apply(x, self)

    __call__ = __matmul__

    def product(self, x, transpose=False):
        """``M @ x`` (``M^T @ x`` with ``transpose``), no autograd."""
        if self._torch is not None:
            return self._torch[transpose] @ x
        return torch.from_numpy(self._scipy[transpose] @ x.detach().numpy())

    def to(self, device):
        """The same operator on ``device`` (self when it is there already)."""
        if resolve_device(device) == self.device:
            return self
        return SparseOperator(self._scipy[0], device, self._requested_backend)

    def to_scipy(self):
        """A copy of ``M`` as a scipy CSR matrix (float32)."""
        return self._scipy[0].copy()

    def to_dense(self):
        return torch.from_numpy(self._scipy[0].toarray()).to(self.device)

    def indices(self):
        """(2, nnz) long tensor of the (row, column) of every stored entry, row-major."""
        coo = self._scipy[0].tocoo()
        return torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64)).to(self.device)


def resolve_device(device=None):
    """``device`` as the torch device a tensor made there reports: ``"cuda"`` (what RecBole's
    config holds) becomes ``cuda:0`` (the current GPU), so that it compares equal to
    ``tensor.device``. None is the CPU."""
    return torch.empty(0, device="cpu" if device is None else device).device


PRODUCT_BACKENDS = ("scipy", "torch")


def _product_backend(backend, device):
    """The backend a :class:`SparseOperator` on ``device`` uses: ``backend``, or by default
    scipy on the CPU and torch elsewhere."""
    if backend is None:
        return "scipy" if device.type == "cpu" else "torch"
    if backend not in PRODUCT_BACKENDS:
        raise ValueError(f"SparseOperator backend must be one of {PRODUCT_BACKENDS}, got {backend!r}")
    if backend == "scipy" and device.type != "cpu":
        raise ValueError(f"SparseOperator backend 'scipy' runs on the CPU only, not on {device}")
    return backend


def _torch_csr(csr, device):
    with warnings.catch_warnings():  # "sparse CSR support is in beta": products with dense are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(csr.indptr.astype(np.int64)),
            torch.from_numpy(csr.indices.astype(np.int64)),
            torch.from_numpy(csr.data),
            csr.shape,
            device=device,
            check_invariants=False,
        )


class _FrozenSparseProduct(torch.autograd.Function):
    """y = M x with dL/dx = M^T dL/dy."""

    @staticmethod
    def forward(ctx, x, operator):
        ctx.operator = operator
        return operator.product(x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.operator.product(grad, transpose=True), None


def propagate(operator, embeddings, n_layers, reduce="mean"):
    """Apply ``operator`` ``n_layers`` times to ``embeddings``.

    ``operator``: a :class:`SparseOperator` (or torch sparse matrix), or any callable
    ``x -> operator @ x``.
    ``reduce='mean'`` returns the mean of layers 0..n_layers (LightGCN's readout), ``'last'``
    the last layer, ``None`` the list of all layers.
    """
    apply = operator if callable(operator) else (lambda x: operator @ x)
    if reduce == "mean":  # a running sum: no (n_layers + 1) x N x D stack to build and read
        if n_layers == 0:
            return embeddings / 1
        layer = apply(embeddings)
        total = embeddings + layer
        for _ in range(n_layers - 1):
            layer = apply(layer)
            total.add_(layer)  # in place (a sum's backward keeps no tensor): one N x D buffer
        return total.div_(n_layers + 1)
    layers = [embeddings]
    for _ in range(n_layers):
        layers.append(apply(layers[-1]))
    if reduce == "last":
        return layers[-1]
    if reduce is None:
        return layers
    raise ValueError(f"reduce must be 'mean', 'last' or None, got {reduce!r}")


def lift(matrix, row_ids, col_ids, shape):
    """Place a local sparse matrix into a larger id space: entry (r, c) goes to
    (row_ids[r], col_ids[c]) of a ``shape`` matrix (``None`` ids keep local indices)."""
    coo = sp.coo_matrix(matrix)
    rows = coo.row if row_ids is None else np.asarray(row_ids)[coo.row]
    cols = coo.col if col_ids is None else np.asarray(col_ids)[coo.col]
    return sp.csr_matrix((coo.data, (rows, cols)), shape=shape)
