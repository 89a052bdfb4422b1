"""Minibatch optimal-transport pairing of data and noise (stage 1).

Within a batch the noise items are permuted so that data item i is paired with a nearby noise item: a
straighter, lower-variance flow. Two assignment rules: the official one (a Sinkhorn plan, then greedy
row-by-row argmax without replacement) and the exact optimum (Hungarian, ``scipy``), cheap on small batches.
"""

from __future__ import annotations

import torch

SINKHORN_ITERATIONS = 20  # the official wrapper's count


def transport_cost(data: torch.Tensor, noise: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, B) cost C[i, j] = sum of (data_i - noise_j)^2 over data item i's valid frames (all if None)."""
    weights = torch.ones(data.shape[0], data.shape[-1]) if valid is None else valid.to(data.dtype)
    x = data.float() * weights[:, None, :]
    cost = []
    for i in range(data.shape[0]):
        diff = (x[i][None] - noise.float() * weights[i][None, None, :]) ** 2
        cost.append(diff.flatten(1).sum(dim=1))
    return torch.stack(cost)


def sinkhorn_greedy(cost: torch.Tensor, iterations: int = SINKHORN_ITERATIONS) -> torch.Tensor:
    """The official rule: log P = -C / mean(C), alternate row and column log-normalisation, then for each
    row in order take its most probable column among those not taken. Returns perm with noise[perm[i]]
    paired to data[i]."""
    log_p = -cost.double() / cost.double().mean().clamp(min=1e-12)
    for _ in range(iterations):
        log_p = log_p - torch.logsumexp(log_p, dim=1, keepdim=True)
        log_p = log_p - torch.logsumexp(log_p, dim=0, keepdim=True)
    taken = torch.zeros(cost.shape[1], dtype=torch.bool)
    perm = []
    for row in log_p:
        j = int(torch.where(taken, torch.tensor(float("-inf"), dtype=row.dtype), row).argmax())
        taken[j] = True
        perm.append(j)
    return torch.tensor(perm, dtype=torch.int64)


def hungarian(cost: torch.Tensor) -> torch.Tensor:
    """The assignment of least total cost (scipy's linear_sum_assignment)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost.double().numpy())
    perm = torch.empty(cost.shape[0], dtype=torch.int64)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.int64)
    return perm


PAIRINGS = {"sinkhorn": sinkhorn_greedy, "hungarian": hungarian}


def pair_noise(data: torch.Tensor, noise: torch.Tensor, valid: torch.Tensor | None, method: str) -> torch.Tensor:
    """``noise`` permuted along the batch to pair with ``data`` (``method``: "sinkhorn", "hungarian", "none")."""
    if method == "none" or data.shape[0] < 2:
        return noise
    if method not in PAIRINGS:
        raise ValueError(f"pairing: expected one of none, {', '.join(PAIRINGS)}; got {method!r}")
    return noise[PAIRINGS[method](transport_cost(data, noise, valid))]
