"""ETL (sieoug_recbole/models/etl.py) and the shared pieces it is built from
(sieoug_recbole/models/cdr_parts.py): the sparse row reader, the overlapped users' shared
vectors, scoring as the decoder's reconstruction, and the transformation after training."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import SYNTHETIC_YAML, build_on_synthetic
from recbole.data.interaction import Interaction

from sieoug_recbole.models.base import DOMAINS
from sieoug_recbole.models.cdr_parts import InteractionRows
from sieoug_recbole.models.etl import orthogonality_residual, reconstruction_loss
from sieoug_recbole.quick_start import build_run, make_config


# ----- pieces ------------------------------------------------------------------------------------
def small_matrix():
    # user 1 has item 0 twice (one interaction), user 2 nothing
    return sp.csr_matrix((np.ones(5), ([0, 0, 1, 1, 3], [1, 2, 0, 0, 2])), shape=(4, 3))


def test_interaction_rows_product_mean_and_targets():
    rows = InteractionRows(small_matrix(), torch.device("cpu"))
    dense = torch.eye(3)  # X @ I = X
    binary = torch.tensor([[0.0, 1, 1], [1, 0, 0], [0, 0, 0], [0, 0, 1]])
    pick = torch.tensor([3, 0, 2])
    torch.testing.assert_close(rows.product(pick, dense), binary[pick])
    torch.testing.assert_close(rows.product(None, dense), binary)  # every row, one cached operator
    means = binary / binary.sum(1, keepdim=True).clamp_min(1)
    torch.testing.assert_close(rows.product(pick, dense, mean=True), means[pick])
    torch.testing.assert_close(rows.dense(pick, np.array([2, 0])), binary[pick][:, [2, 0]])
    assert rows.row_counts().tolist() == [2, 1, 0, 1]


def test_interaction_rows_dropout_keeps_the_expectation_of_stored_entries_only():
    torch.manual_seed(0)
    matrix = sp.random(20, 30, density=0.3, format="csr", random_state=0)
    rows = InteractionRows(matrix, torch.device("cpu"))
    binary = torch.from_numpy((matrix.toarray() > 0).astype(np.float32))
    draws = torch.stack([rows.product(None, torch.eye(30), dropout=0.5) for _ in range(400)])
    assert ((draws == 0) | (draws == 2.0)).all()  # kept entries scaled by 1 / (1 - p)
    assert (draws[:, binary == 0] == 0).all()  # nothing appears where there was no interaction
    torch.testing.assert_close(draws.mean(0), binary, atol=0.2, rtol=0)


def test_overlapped_users_share_one_vector_in_both_domains(fast_config):
    model = build_on_synthetic("ETL", fast_config).model
    users, n_o = model.user_embedding, model.overlapped_num_users
    source, target = users.table("source"), users.table("target")
    torch.testing.assert_close(source[:n_o], target[:n_o])
    assert not torch.allclose(source[n_o : n_o + 20], target[n_o : n_o + 20])
    rows = torch.tensor([2, n_o + 1, 5])
    torch.testing.assert_close(users("target", rows), target[rows])
    users("target", rows).sum().backward()  # a target step moves the shared vector, seen by the source
    assert users.shared.weight.grad[[2, 5]].abs().sum() > 0 and users.shared.weight.grad[3].abs().sum() == 0


def test_reconstruction_and_orthogonality_follow_their_formulas():
    logits, targets = torch.tensor([[0.5, -1.0], [2.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = (
        -(
            np.log(1 / (1 + np.exp(-0.5)))
            + np.log(1 - 1 / (1 + np.exp(1.0)))
            + np.log(1 - 1 / (1 + np.exp(-2.0)))
            + np.log(0.5)
        )
        / 2
    )
    assert float(reconstruction_loss(logits, targets)) == pytest.approx(expected, rel=1e-5)
    torch.manual_seed(0)
    codes = torch.randn(5, 4)
    rotation = torch.linalg.qr(torch.randn(4, 4))[0]
    assert float(orthogonality_residual(codes, rotation, rotation.T)) == pytest.approx(0.0, abs=1e-5)
    assert float(orthogonality_residual(codes, 2 * rotation, rotation.T)) > 1.0


# ----- the model ----------------------------------------------------------------------------------
def test_scores_are_the_domains_own_reconstruction(fast_config):
    model = build_on_synthetic("ETL", fast_config).model
    model.eval()
    with torch.no_grad():
        for domain in DOMAINS:
            users, items = model.domain_representations(domain)
            rows = torch.tensor([1, 3, model.overlapped_num_users + 2])
            scores = (users[rows] @ items.T)[:, model.decoded_items(domain)]
            torch.testing.assert_close(scores, model.decode(domain, model.codes(domain, rows)))


def test_no_overlapped_user_in_the_step_gives_zero_transfer_terms(fast_config):
    built = build_on_synthetic("ETL", fast_config)
    model, batch = built.model, built.batch
    n_o = model.overlapped_num_users
    fields = {k: batch[k] for k in batch.interaction}
    for field in (model.SOURCE_USER_ID, model.TARGET_USER_ID):  # every batch user made non-overlapped
        users = fields[field]
        fields[field] = users[users >= n_o][:1].repeat(len(users))
    cross, orthogonal = model.transfer_loss(Interaction(fields), None)
    assert float(cross.detach()) == 0.0 and float(orthogonal.detach()) == 0.0


def cross_reconstruction_gap(model):
    """Per direction: the cross reconstruction loss of the overlapped users against a shuffled
    user's rows minus that against their own rows (> 0: the mapped code carries who they are)."""
    model.eval()
    rows = torch.arange(1, model.overlapped_num_users)
    shuffled = torch.roll(torch.arange(len(rows)), 7)
    gaps = {}
    with torch.no_grad():
        w = model.transformation
        for domain, other, map_ in (("source", "target", w), ("target", "source", w.T)):
            logits = model.decode(other, model.codes(domain, rows) @ map_)
            targets = model.targets(other, rows)
            gaps[domain] = float(reconstruction_loss(logits, targets[shuffled]) - reconstruction_loss(logits, targets))
    model.train()
    return gaps


@pytest.mark.parametrize("cross_weight", [1.0, 0.0])
def test_transformation_carries_an_overlapped_users_preferences_across(cross_weight, fast_config):
    config = make_config("ETL", [SYNTHETIC_YAML], {**fast_config, "cross_weight": cross_weight})
    _, train_data, _, _, model, _ = build_run(config)
    train_data.set_mode(train_data.state)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(6):
        for batch in train_data:
            optimizer.zero_grad()
            sum(model.calculate_loss(batch)).backward()
            optimizer.step()
    gaps = cross_reconstruction_gap(model)
    if cross_weight:  # z_s W decodes into the same person's target items (and back)
        assert min(gaps.values()) > 0.2, gaps
    else:  # untrained by the cross terms, W carries nothing user-specific
        assert max(abs(g) for g in gaps.values()) < 0.1, gaps
