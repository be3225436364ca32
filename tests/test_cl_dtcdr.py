"""CL-DTCDR (sieoug_recbole/models/cl_dtcdr.py) and the contrastive pieces it uses
(sieoug_recbole/transfer_losses.py): InfoNCE and the nearest-neighbour search against their
formulas, the inter-domain positives, the perturbed views and the coupling of the domains."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import build_on_synthetic

from sieoug_recbole.models.base import DOMAINS
from sieoug_recbole.transfer_losses import info_nce, nearest_rows


# ----- pure functions ---------------------------------------------------------------------------
def test_info_nce_equals_its_formula():
    torch.manual_seed(0)
    anchors, positives = torch.randn(4, 3), torch.randn(4, 3)
    expected = 0.0
    for i in range(4):
        logits = [float(F.cosine_similarity(anchors[i], positives[j], dim=0)) / 0.5 for j in range(4)]
        expected -= logits[i] - math.log(sum(math.exp(v) for v in logits))
    assert float(info_nce(anchors, positives, 0.5)) == pytest.approx(expected / 4, rel=1e-5)


def test_info_nce_does_not_count_a_shared_positive_as_a_negative():
    # rows 0 and 2 have the same positive (one table row): neither is a negative of the other
    torch.manual_seed(0)
    anchors, positives = torch.randn(3, 3), torch.randn(3, 3)
    positives[2] = positives[0]
    ids = [7, 5, 7]
    expected = 0.0
    for i in range(3):
        logits = {
            j: float(F.cosine_similarity(anchors[i], positives[j], dim=0)) / 0.2
            for j in range(3)
            if j == i or ids[j] != ids[i]
        }
        expected -= logits[i] - math.log(sum(math.exp(v) for v in logits.values()))
    loss = info_nce(anchors, positives, 0.2, positive_ids=torch.tensor(ids))
    assert float(loss) == pytest.approx(expected / 3, rel=1e-5)
    assert float(info_nce(anchors, positives, 0.2)) > float(loss)  # unmasked, the twin is a hard negative


def test_info_nce_of_no_rows_is_zero_and_bad_input_is_an_error():
    empty = torch.zeros(0, 3, requires_grad=True)
    assert float(info_nce(empty, empty, 0.2).detach()) == 0.0
    with pytest.raises(ValueError, match="one row each"):
        info_nce(torch.zeros(2, 3), torch.zeros(3, 3), 0.2)
    with pytest.raises(ValueError, match="widths differ"):
        info_nce(torch.zeros(2, 3), torch.zeros(2, 4), 0.2)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)


@pytest.mark.parametrize("block_size", [1, 3, 7, 1000])
def test_nearest_rows_is_the_largest_cosine_in_any_block_size(block_size):
    torch.manual_seed(0)
    queries, bank = torch.randn(9, 4), torch.randn(20, 4) * torch.rand(20, 1) * 5  # norms differ
    expected = (F.normalize(queries) @ F.normalize(bank).T).argmax(dim=1)
    assert nearest_rows(queries, bank, block_size).tolist() == expected.tolist()


def test_nearest_rows_keeps_the_first_of_tied_rows_across_blocks():
    bank = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])  # rows 1..3 tie for (1, 0)
    assert nearest_rows(torch.tensor([[1.0, 0.0]]), bank, block_size=2).tolist() == [1]
    with pytest.raises(ValueError, match="no rows"):
        nearest_rows(torch.zeros(1, 2), torch.zeros(0, 2))


# ----- the model ----------------------------------------------------------------------------------
def test_positive_is_the_same_person_or_the_closest_other_domain_user(fast_config):
    built = build_on_synthetic("CL-DTCDR", fast_config)
    model, batch = built.model, built.batch
    representations = {d: model.training_representations(d) for d in DOMAINS}
    n_o = model.overlapped_num_users
    for domain, other in (("source", "target"), ("target", "source")):
        rows = torch.unique(model.batch(domain, batch)[0])
        assert (rows < n_o).any() and (rows >= n_o).any()  # the batch has both kinds
        users, other_users = representations[domain].users, representations[other].users
        positives = model.counterpart_rows(domain, rows, users, other_users)
        overlapped = rows < n_o
        assert torch.equal(positives[overlapped], rows[overlapped])  # the same person
        candidates = torch.from_numpy(model.layout.domain_rows("user", other)[1:])  # the other domain's users
        similarity = F.normalize(users[rows[~overlapped]]) @ F.normalize(other_users[candidates]).T
        assert positives[~overlapped].tolist() == candidates[similarity.argmax(dim=1)].tolist()
        assert (positives[~overlapped] > 0).all()  # never the padding row


def test_views_are_the_encoder_perturbed_by_noise_eps(fast_config):
    model = build_on_synthetic("CL-DTCDR", {**fast_config, "noise_eps": 0.0}).model
    step = model.training_representations("target")
    for view in step.views:  # no noise: both views are the clean encoder
        torch.testing.assert_close(view[0], step.users)
        torch.testing.assert_close(view[1], step.items)
    model = build_on_synthetic("CL-DTCDR", {**fast_config, "noise_eps": 0.1}).model
    step = model.training_representations("target")
    (users_1, _), (users_2, _) = step.views
    shift = users_1 - step.users
    # layer l carries l perturbations of Frobenius norm <= eps sqrt(rows) each (the normalised
    # graph does not lengthen them); the readout averages layers 0..L
    rows = model.n_users["target"] + model.n_items["target"]
    bound = 0.1 * math.sqrt(rows) * sum(range(model.n_layers + 1)) / (model.n_layers + 1)
    assert float(shift.norm()) <= bound and float(shift.norm(dim=1).mean()) > 0.01
    assert float(shift[0].norm()) == 0.0  # the padding row has no edge: nothing to perturb
    assert not torch.allclose(users_1, users_2)  # two different draws
    model.eval()  # no draws outside training (as dropout): the loss of a weight is reproducible
    step = model.training_representations("target")
    for view in step.views:
        torch.testing.assert_close(view[0], step.users)


def test_intra_domain_task_off_leaves_one_zero_term(fast_config):
    built = build_on_synthetic("CL-DTCDR", {**fast_config, "intra_weight": 0.0, "inter_weight": 0.0})
    model = built.model
    parts = model.calculate_loss(built.batch)
    assert len(parts) == 5  # (BPR, intra) per domain, inter: the same count as with the tasks on
    assert [float(p) for p in (parts[1], parts[3], parts[4])] == [0.0, 0.0, 0.0]
    assert model.training_representations("source").views == ()  # no perturbed propagation made


def test_inter_domain_task_reaches_the_other_domain(fast_config):
    built = build_on_synthetic("CL-DTCDR", {**fast_config, "intra_weight": 0.0})
    model, batch = built.model, built.batch
    representations = {d: model.training_representations(d) for d in DOMAINS}
    (inter,) = model.transfer_loss(batch, representations)
    inter.backward()
    for domain in DOMAINS:  # gradients reach both domains' tables, anchors and positives alike
        assert model.user_embedding[domain].weight.grad.abs().sum() > 0
    # a source-only user's vector is pulled by its nearest target user: the target rows that were
    # chosen (and only users' rows) receive gradient through the positives
    target_grad = model.user_embedding["target"].weight.grad
    assert target_grad[0].abs().sum() == 0  # the padding row is never a positive
