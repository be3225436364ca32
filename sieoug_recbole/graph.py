"""Sparse graph helpers shared by every graph model (no dense N x N matrix anywhere).

- :func:`bipartite_adjacency`: the symmetric-normalised user-item graph of LightGCN (Eq 11),
  built from coo arrays (scipy >= 1.13 removed ``dok_matrix._update``, which RecBole's own
  LightGCN relies on);
- :func:`symmetric_normalize`: D^-1/2 A D^-1/2 of any square sparse matrix (zero-degree rows
  stay zero);
- :func:`to_torch_sparse`: scipy -> torch sparse tensor;
- :func:`propagate`: repeated sparse multiplication, returning every layer or their mean.
"""
import numpy as np
import scipy.sparse as sp
import torch


def symmetric_normalize(matrix):
    """D_r^-1/2 M D_c^-1/2 with D_r, D_c the row and column sums (equal for symmetric M)."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    row_sum = np.asarray(matrix.sum(axis=1)).ravel()
    col_sum = np.asarray(matrix.sum(axis=0)).ravel()
    with np.errstate(divide="ignore"):
        row_scale = np.where(row_sum > 0, row_sum ** -0.5, 0.0).astype(np.float32)
        col_scale = np.where(col_sum > 0, col_sum ** -0.5, 0.0).astype(np.float32)
    return sp.diags(row_scale) @ matrix @ sp.diags(col_scale)


def bipartite_adjacency(user_ids, item_ids, num_users, num_items):
    """Normalised (U+I) x (U+I) adjacency of the user-item interaction graph.

    Repeated (user, item) pairs count once. Users are nodes 0..U-1, items U..U+I-1.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    inter = sp.coo_matrix((np.ones(len(user_ids), dtype=np.float32), (user_ids, item_ids)),
                          shape=(num_users, num_items)).tocsr()
    inter.data[:] = 1.0  # duplicates were summed; a pair is an edge of weight 1
    adjacency = sp.bmat([[None, inter], [inter.T, None]], format="csr")
    return symmetric_normalize(adjacency)


def to_torch_sparse(matrix, device=None):
    """A scipy sparse matrix as a coalesced torch sparse COO float32 tensor."""
    coo = sp.coo_matrix(matrix)
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data.astype(np.float32))
    return torch.sparse_coo_tensor(indices, values, coo.shape, device=device,
                                   check_invariants=False).coalesce()


def propagate(operator, embeddings, n_layers, reduce="mean"):
    """Apply ``operator`` ``n_layers`` times to ``embeddings``.

    ``operator``: a torch sparse matrix, or any callable ``x -> operator @ x``.
    ``reduce='mean'`` returns the mean of layers 0..n_layers (LightGCN's readout), ``'last'``
    the last layer, ``None`` the list of all layers.
    """
    apply = operator if callable(operator) else (lambda x: torch.sparse.mm(operator, x))
    if reduce == "mean":  # a running sum: no (n_layers + 1) x N x D stack to build and read
        layer = total = embeddings
        for _ in range(n_layers):
            layer = apply(layer)
            total = total + layer
        return total / (n_layers + 1)
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
