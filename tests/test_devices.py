"""Every model computes the same on the GPU as on the CPU, and the same twice on one device.

Each model is built twice on the synthetic pair from one seed: with ``use_gpu: False`` and with
``use_gpu: True`` (the GPU where there is one, else the CPU again). Both get the same weights and
the same first training batch, in eval mode (NeuMF's dropout draws from a per-device random
stream); then the loss, every parameter's gradient and the full-sort scores of both domains
must agree: exactly when both builds are on the CPU (building is deterministic),
to float32 rounding when the second is on the GPU.
"""

import pytest
import torch
from conftest import build_on_synthetic
from recbole.data.interaction import Interaction

from sieoug_recbole.models.base import DOMAINS
from sieoug_recbole.registry import model_names

ON_GPU = torch.cuda.is_available()
USERS = torch.tensor([1, 2, 7, 40])  # overlapped users (1..n) and one more: valid in both domains


def _build(name, config, use_gpu):
    model, batch, _, config = build_on_synthetic(name, dict(config, use_gpu=use_gpu))
    return model, batch, config["device"]


def _loss_grads_scores(model, batch, device):
    """The eval-mode loss, the gradient of every parameter and both domains' full-sort scores,
    all on the CPU."""
    model.eval()
    model.zero_grad(set_to_none=True)
    loss = model.calculate_loss(batch.to(device))
    loss = sum(loss) if isinstance(loss, (tuple, list)) else loss
    loss.backward()
    grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}
    scores = {}
    with torch.no_grad():
        for domain in DOMAINS:
            user_field = model.fields(domain)[0]
            interaction = Interaction({user_field: USERS}).to(device)
            scores[domain] = model.full_sort_predict(interaction).detach().cpu()
    return loss.detach().cpu(), grads, scores


def device_differences(name, config):
    """Build ``name`` for the CPU and for the GPU (the CPU again without one), give both the
    CPU build's weights and compare: (second device, {quantity: (cpu value, other value)})."""
    cpu_model, batch, cpu_device = _build(name, config, use_gpu=False)
    other_model, _, other_device = _build(name, config, use_gpu=True)
    assert str(cpu_device) == "cpu"
    if other_device == cpu_device:  # deterministic build: the same initial weights
        for key, value in cpu_model.state_dict().items():
            assert torch.equal(value, other_model.state_dict()[key]), (name, key)
    other_model.load_state_dict(cpu_model.state_dict())
    cpu = _loss_grads_scores(cpu_model, batch, cpu_device)
    other = _loss_grads_scores(other_model, batch, other_device)
    pairs = {"loss": (cpu[0], other[0])}
    assert cpu[1].keys() == other[1].keys(), name
    pairs.update({f"grad {n}": (g, other[1][n]) for n, g in cpu[1].items()})
    pairs.update({f"scores {d}": (s, other[2][d]) for d, s in cpu[2].items()})
    return str(other_device), pairs


# every model with something to learn (not Pop), with its yaml's defaults; and SIEOUG solving
# GOUM on the model's device rather than on the CPU (ot_device)
CASES = [(n, {}) for n in model_names() if n != "Pop"] + [("SIEOUG", {"ot_device": "model"})]


@pytest.mark.parametrize(
    "name, overrides", CASES, ids=[n + "".join(f"-{k}={v}" for k, v in o.items()) for n, o in CASES]
)
def test_model_same_on_both_devices(name, overrides, fast_config, tmp_path):
    fast_config.update(graph_cache_dir=str(tmp_path / "graphs"), n_clusters=8, ot_eps=0.05, **overrides)
    device, pairs = device_differences(name, fast_config)
    assert len(pairs) > 3, "no gradients"
    for what, (cpu, other) in pairs.items():
        if device == "cpu":
            assert torch.equal(cpu, other), (name, what)
        else:  # float32 rounding, relative to the quantity's scale
            scale = float(cpu.abs().max()) or 1.0
            torch.testing.assert_close(
                other, cpu, rtol=1e-3, atol=1e-4 * scale, msg=lambda m: f"{name} {what} on {device}: {m}"
            )


@pytest.mark.skipif(not ON_GPU, reason="no CUDA device")
def test_sparse_operator_on_cuda_takes_cuda_tensors():
    # RecBole's config holds the device "cuda", tensors report "cuda:0": both must be accepted
    import scipy.sparse as sp

    from sieoug_recbole.graph import SparseOperator

    matrix = sp.random(30, 20, density=0.2, format="csr", random_state=0, dtype="float32")
    operator = SparseOperator(matrix, "cuda")
    assert operator.to("cuda:0") is operator and operator.to(torch.device("cuda")) is operator
    x = torch.randn(20, 4, requires_grad=True)
    y = operator(x.detach().cuda().requires_grad_())
    torch.testing.assert_close(y.cpu(), SparseOperator(matrix)(x), rtol=1e-5, atol=1e-6)
