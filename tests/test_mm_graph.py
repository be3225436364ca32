"""The learned kNN graph's pure functions (LATTICE): neighbour table, edge values, product."""

import numpy as np
import pytest
import torch

from sieoug_recbole.models.mm_graph import (
    knn_dots,
    knn_edge_values,
    knn_neighbours,
    knn_propagate,
    knn_propagate_reference,
)
from sieoug_recbole.similarity import knn_graph, normalize_item_graph


def _features(n=60, d=12, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32))


@pytest.mark.parametrize("include_self", [True, False])
def test_neighbour_table_is_the_knn_graph(include_self):
    x = _features()
    neighbours = knn_neighbours(x, 5, include_self, block_rows=16)  # several blocks
    assert neighbours.shape == (60, 5)
    reference = knn_graph(x.numpy(), 5, include_self=include_self)  # the similarity module's kNN
    for i in range(60):
        assert set(neighbours[i].tolist()) == set(reference[i].indices.tolist())
    if include_self:
        assert torch.equal(neighbours[:, 0], torch.arange(60))
    else:
        assert not (neighbours == torch.arange(60).unsqueeze(1)).any()
    assert knn_neighbours(x[:3], 5).shape == (3, 3)  # k capped by a tiny catalogue


def test_edge_values_are_the_normalised_clipped_cosine_graph():
    x = _features()
    neighbours = knn_neighbours(x, 6)
    values = knn_edge_values(x, neighbours)
    unit = x / x.norm(dim=1, keepdim=True)
    dense = torch.zeros(60, 60)  # only for this check
    rows = torch.arange(60).repeat_interleave(6)
    dense[rows, neighbours.reshape(-1)] = torch.relu((unit[rows] * unit[neighbours.reshape(-1)]).sum(1))
    expected = torch.from_numpy(normalize_item_graph(dense.numpy()).toarray()).float()
    torch.testing.assert_close(values, expected[rows, neighbours.reshape(-1)].reshape(60, 6))


def test_product_and_its_gradients_match_the_reference():
    x = _features().double().requires_grad_()
    neighbours = knn_neighbours(x.detach(), 7)
    raw = torch.rand(60, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, y: knn_propagate(neighbours, v, y), (raw, x))
    upstream = torch.randn(60, 12, dtype=torch.float64)
    grads = []
    for product in (knn_propagate, knn_propagate_reference):
        out = product(neighbours, raw, x)
        grads.append((out, *torch.autograd.grad((out * upstream).sum(), (raw, x))))
    for ours, reference in zip(*grads):
        torch.testing.assert_close(ours, reference)
    # a rectangular product (n rows over a longer x) and float32, as LATTICE uses it
    longer = _features(90).requires_grad_()
    values = torch.rand(60, 7)
    torch.testing.assert_close(
        knn_propagate(neighbours, values, longer), knn_propagate_reference(neighbours, values, longer)
    )


def test_edge_dots_and_their_gradient_match_plain_torch():
    x = _features().double().requires_grad_()
    neighbours = knn_neighbours(x.detach(), 4)
    assert torch.autograd.gradcheck(lambda y: knn_dots(neighbours, y), (x,))
    upstream = torch.randn(60, 4, dtype=torch.float64)
    ours = knn_dots(neighbours, x)
    plain = (x.unsqueeze(1) * x[neighbours]).sum(-1)
    torch.testing.assert_close(ours, plain)
    torch.testing.assert_close(
        torch.autograd.grad((ours * upstream).sum(), x)[0], torch.autograd.grad((plain * upstream).sum(), x)[0]
    )
