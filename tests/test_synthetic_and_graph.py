"""The synthetic generator's planted structure, and the shared sparse graph helpers."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from sieoug_recbole.graph import SparseOperator, bipartite_adjacency, propagate, symmetric_normalize
from sieoug_recbole.synthetic import generate_pair


def _users(folder, name):
    return set(pd.read_csv(f"{folder}/{name}/{name}.inter", sep="\t")["user_id:token"])


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_overlap_ratio_links_that_fraction_of_common_people(tmp_path, ratio):
    summary = generate_pair(
        str(tmp_path), n_common=100, n_source_only=10, n_target_only=10, overlap_ratio=ratio, seed=3
    )
    shared = _users(tmp_path, "synthetic_source") & _users(tmp_path, "synthetic_target")
    assert len(shared) == summary["overlapped_users"] == round(ratio * 100)


def test_generator_is_seeded(tmp_path):
    generate_pair(str(tmp_path / "a"), seed=1)
    generate_pair(str(tmp_path / "b"), seed=1)
    for d in ("source", "target"):
        a = (tmp_path / "a" / f"synthetic_{d}" / f"synthetic_{d}.inter").read_text()
        b = (tmp_path / "b" / f"synthetic_{d}" / f"synthetic_{d}.inter").read_text()
        assert a == b
    with pytest.raises(ValueError, match="overlap_ratio"):
        generate_pair(str(tmp_path / "c"), overlap_ratio=1.5)


def test_features_carry_the_category_signal(tmp_path):
    generate_pair(str(tmp_path), seed=0)
    folder = tmp_path / "synthetic_target"
    category = np.load(folder / "synthetic_target.item_category.npy")
    feats = np.load(folder / "synthetic_target.visual.feat.npz")["feature"]
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    sim = feats @ feats.T
    same = category[:, None] == category[None, :]
    np.fill_diagonal(same, False)
    other = ~same
    np.fill_diagonal(other, False)
    assert sim[same].mean() > sim[other].mean() + 0.3


def test_bipartite_adjacency_is_lightgcn_normalisation():
    users, items = np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 2])  # one duplicate pair
    adj = bipartite_adjacency(users, items, 3, 3).toarray()
    r = np.zeros((3, 3))
    r[[0, 0, 1, 1], [0, 1, 1, 2]] = 1
    a = np.block([[np.zeros((3, 3)), r], [r.T, np.zeros((3, 3))]])
    d = a.sum(1)
    inv = np.zeros_like(d)
    inv[d > 0] = d[d > 0] ** -0.5  # user 2 has no item: its row stays zero
    np.testing.assert_allclose(adj, inv[:, None] * a * inv[None, :], rtol=1e-6)
    assert np.allclose(adj, adj.T)


def test_symmetric_normalize_leaves_isolated_nodes_zero():
    m = sp.csr_matrix(np.array([[0, 2.0, 0], [2, 0, 0], [0, 0, 0]]))
    out = symmetric_normalize(m).toarray()
    np.testing.assert_allclose(out, [[0, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_propagate_mean_and_layers():
    m = sp.csr_matrix(np.array([[0, 1.0], [1, 0]]))
    x = torch.tensor([[1.0], [2.0]])
    layers = propagate(SparseOperator(m), x, 2, reduce=None)
    assert [t.ravel().tolist() for t in layers] == [[1, 2], [2, 1], [1, 2]]
    mean = propagate(SparseOperator(m), x, 2)
    np.testing.assert_allclose(mean.ravel().numpy(), [4 / 3, 5 / 3], rtol=1e-6)
    with pytest.raises(ValueError):
        propagate(SparseOperator(m), x, 1, reduce="sum")


@pytest.mark.parametrize("n_layers", [0, 1, 3])
def test_propagate_mean_matches_the_stacked_mean_and_leaves_its_input_alone(n_layers):
    m = sp.random(30, 30, density=0.2, format="csr", random_state=2, dtype=np.float32)
    dense = torch.tensor(m.toarray())
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    before = x.detach().clone()
    out = propagate(SparseOperator(m), x, n_layers)  # the running sum, accumulated in place
    out.backward(torch.ones(30, 4))
    x_ref = before.clone().requires_grad_()
    layers = [x_ref]
    for _ in range(n_layers):
        layers.append(dense @ layers[-1])
    reference = torch.stack(layers).mean(dim=0)
    reference.backward(torch.ones(30, 4))
    torch.testing.assert_close(out.detach(), reference.detach())
    torch.testing.assert_close(x.grad, x_ref.grad)
    assert torch.equal(x.detach(), before) and out.data_ptr() != x.data_ptr()


def test_sparse_operator_product_and_gradient_match_the_dense_matrix():
    m = sp.random(40, 25, density=0.15, format="csr", random_state=0, dtype=np.float32)
    m = m + sp.csr_matrix(([2.0], ([3], [4])), shape=(40, 25))  # an entry written twice sums
    op = SparseOperator(sp.coo_matrix(m))
    dense = torch.tensor(m.toarray(), dtype=torch.float32)
    x = torch.randn(25, 3, requires_grad=True)
    grad_out = torch.randn(40, 3)
    (op @ x).backward(grad_out)
    torch.testing.assert_close(op @ x.detach(), dense @ x.detach())
    torch.testing.assert_close(x.grad, dense.T @ grad_out)
    assert op.nnz == m.nnz and op.shape == (40, 25)
    torch.testing.assert_close(op.to_dense(), dense)
    np.testing.assert_array_equal(op.to_scipy().toarray(), m.toarray())
    assert op.to("cpu") is op
    assert sorted(map(tuple, op.indices().T.tolist())) == sorted(zip(*m.nonzero()))


def test_sparse_operator_torch_backend_on_the_cpu_matches_scipy():
    # the GPU's code path (torch CSR products with the stored transpose), run on the CPU
    m = sp.random(40, 25, density=0.15, format="csr", random_state=1, dtype=np.float32)
    scipy_op, torch_op = SparseOperator(m), SparseOperator(m, backend="torch")
    assert (scipy_op.backend, torch_op.backend) == ("scipy", "torch")
    results = []
    for op in (scipy_op, torch_op):
        x = torch.randn(25, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
        y = op @ x
        y.backward(torch.ones(40, 3))
        results.append((y.detach(), x.grad))
    torch.testing.assert_close(results[1][0], results[0][0])  # products
    torch.testing.assert_close(results[1][1], results[0][1])  # gradients
    assert torch_op.to("cpu") is torch_op


def test_sparse_operator_rejects_an_unknown_or_misplaced_backend():
    m = sp.eye(3, format="csr")
    with pytest.raises(ValueError, match="backend must be one of .*'cupy'"):
        SparseOperator(m, backend="cupy")
    with pytest.raises(ValueError, match="'scipy' runs on the CPU only, not on meta"):
        SparseOperator(m, "meta", backend="scipy")


def test_sparse_operator_rejects_wrong_shape_and_dtype():
    op = SparseOperator(sp.eye(3, format="csr"))
    with pytest.raises(ValueError, match=r"shape \(3, 3\).*\(4, 2\)"):
        op @ torch.zeros(4, 2)
    with pytest.raises(TypeError, match="float32"):
        op @ torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="on cpu, the tensor on meta"):
        op @ torch.zeros(3, 2, device="meta")
    empty = SparseOperator(sp.csr_matrix((2, 3), dtype=np.float32))
    assert torch.equal(empty @ torch.ones(3, 2), torch.zeros(2, 2))


def test_sparse_operator_leaves_the_callers_matrix_alone():
    m = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([2, 0, 1]), np.array([0, 3])), shape=(1, 3))
    assert not m.has_sorted_indices
    before = m.toarray().copy()
    SparseOperator(m)
    np.testing.assert_array_equal(m.toarray(), before)
