"""Loss terms that the cross-domain baselines share (pure torch; no framework import).

- :func:`info_nce`: contrastive loss of anchors against their positives, the other rows'
  positives serving as negatives (CL-DTCDR's intra- and inter-domain tasks);
- :func:`nearest_rows`: each query's most similar row of a bank, searched over blocks of the
  bank (CL-DTCDR's positive for a user without a counterpart in the other domain);
- :func:`gaussian_mmd`: kernel maximum mean discrepancy between two samples (DURation's
  distribution alignment);
- :func:`coral`: distance between two samples' feature covariances (correlation alignment).

Every function takes 2-D float tensors whose rows are samples and returns a 0-d tensor (or
indices), differentiable where a loss is.
"""

import torch
import torch.nn.functional as F

from sieoug_recbole.checks import integer_in_range, positive_number

# Bandwidths of gaussian_mmd's kernels, as multiples of the mean pairwise squared distance of
# the pooled sample (a mixture of widths: no single scale to tune)
MMD_BANDWIDTHS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _check_samples(**samples):
    width = None
    for name, x in samples.items():
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
            raise ValueError(f"{name} must be a 2-D floating-point tensor (rows are samples)")
        if width is not None and x.shape[1] != width:
            widths = ", ".join(f"{n} {s.shape[1]}" for n, s in samples.items())
            raise ValueError(f"sample widths differ: {widths}")
        width = x.shape[1]


def info_nce(anchors, positives, temperature, positive_ids=None):
    """Mean over rows i of ``-log softmax_j(cos(a_i, p_j) / temperature)[i]``: anchor i's
    positive is ``positives[i]``; the other rows of ``positives`` are its negatives (InfoNCE
    with in-batch negatives). 0 (with the inputs' graph) for no rows.

    ``positive_ids``: an id per row of ``positives`` (e.g. its table row); a row whose
    positive has the same id as row i's is not a negative of row i (it is the same vector)."""
    _check_samples(anchors=anchors, positives=positives)
    if len(anchors) != len(positives):
        raise ValueError(f"anchors and positives need one row each per pair, got {len(anchors)} and {len(positives)}")
    temperature = positive_number(temperature, "temperature")
    if len(anchors) == 0:
        return anchors.sum() * 0.0 + positives.sum() * 0.0
    logits = F.normalize(anchors, dim=1) @ F.normalize(positives, dim=1).T / temperature
    diagonal = torch.arange(len(anchors), device=anchors.device)
    if positive_ids is not None:
        same = positive_ids.unsqueeze(0) == positive_ids.unsqueeze(1)
        same[diagonal, diagonal] = False
        logits = logits.masked_fill(same, -float("inf"))
    return F.cross_entropy(logits, diagonal)


def nearest_rows(queries, bank, block_size=4096):
    """Index of the row of ``bank`` with the largest cosine similarity to each query (the
    first on a tie), without gradient. The bank is read ``block_size`` rows at a time, so no
    more than ``len(queries) x block_size`` similarities exist at once."""
    _check_samples(queries=queries, bank=bank)
    block_size = integer_in_range(block_size, "block_size", 1)
    if len(bank) == 0:
        raise ValueError("bank has no rows to choose from")
    with torch.no_grad():
        q = F.normalize(queries.detach(), dim=1)
        best = torch.full((len(q),), -float("inf"), dtype=q.dtype, device=q.device)
        index = torch.zeros(len(q), dtype=torch.long, device=q.device)
        for start in range(0, len(bank), block_size):
            block = F.normalize(bank[start : start + block_size].detach(), dim=1)
            value, arg = (q @ block.T).max(dim=1)
            better = value > best  # strict: an earlier block keeps a tie
            best = torch.where(better, value, best)
            index = torch.where(better, arg + start, index)
    return index


def gaussian_mmd(x, y, bandwidths=MMD_BANDWIDTHS):
    """Squared maximum mean discrepancy between the samples ``x`` and ``y`` (the biased
    V-statistic mean k(x, x') + mean k(y, y') - 2 mean k(x, y)), with k the mean of the
    Gaussian kernels ``exp(-|a - b|^2 / (b s))`` over ``bandwidths`` b, s the mean pairwise
    squared distance of the pooled sample (held constant: no gradient through the scale), so
    k is in (0, 1] and the discrepancy in [0, 2].

    0 when the two samples are the same set of points, > 0 for different distributions; it
    compares every moment, which a mean or variance match alone does not."""
    _check_samples(x=x, y=y)
    if len(x) == 0 or len(y) == 0:
        return x.sum() * 0.0 + y.sum() * 0.0
    pooled = torch.cat([x, y])
    norms = pooled.pow(2).sum(dim=1)
    # |a|^2 + |b|^2 - 2 a.b: differentiable at a = b, where the norm of a - b is not
    squared = (norms.unsqueeze(1) + norms.unsqueeze(0) - 2 * pooled @ pooled.T).clamp_min(0)
    scale = squared.detach().mean().clamp_min(torch.finfo(pooled.dtype).tiny)
    kernel = sum(torch.exp(-squared / (positive_number(b, "bandwidth") * scale)) for b in bandwidths) / len(bandwidths)
    n = len(x)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def covariance(x):
    """The (d, d) feature covariance of the rows of ``x`` (unbiased; zero for one row)."""
    centred = x - x.mean(dim=0, keepdim=True)
    return centred.T @ centred / max(len(x) - 1, 1)


def coral(x, y):
    """Correlation alignment (CORAL): ``|C_x - C_y|_F^2 / (4 d^2)`` with C the feature
    covariances of the two samples and d their width. 0 for samples with the same
    covariance (e.g. one shifted copy of the other)."""
    _check_samples(x=x, y=y)
    d = x.shape[1]
    return (covariance(x) - covariance(y)).pow(2).sum() / (4 * d * d)
