"""Preference losses, per pair (or per list), from summed completion log-probs.

policy_c / policy_r: the policy's summed log-probs of the chosen / rejected completion;
ref_c / ref_r: the reference's (zeros for reference-free losses); len_c / len_r: completion tokens.
Definitions follow TRL 1.16 where TRL has the loss (sigmoid, ipo, hinge, robust; sigmoid_norm is
our ln_dpo), and the papers otherwise: cDPO (Mitchell 2023), RPO (Pang et al. 2024: DPO + NLL of
the chosen answer per token), SimPO (Meng et al. 2024), ORPO (Hong et al. 2024).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pair_loss(name: str, policy_c, policy_r, ref_c, ref_r, len_c, len_r, cfg) -> torch.Tensor:
    beta = cfg.beta
    delta = (policy_c - ref_c) - (policy_r - ref_r)
    if name == "sigmoid":
        return -F.logsigmoid(beta * delta)
    if name == "hinge":
        return torch.relu(1 - beta * delta)
    if name == "ipo":
        average = (policy_c - ref_c) / len_c.clamp(min=1) - (policy_r - ref_r) / len_r.clamp(min=1)
        return (average - 1 / (2 * beta)) ** 2
    if name == "robust":
        eps = cfg.label_smoothing
        return (-(1 - eps) * F.logsigmoid(beta * delta) + eps * F.logsigmoid(-beta * delta)) / (1 - 2 * eps)
    if name == "cdpo":
        eps = cfg.label_smoothing
        return -(1 - eps) * F.logsigmoid(beta * delta) - eps * F.logsigmoid(-beta * delta)
    if name == "sigmoid_nll":
        return -F.logsigmoid(beta * delta) - cfg.rpo_alpha * policy_c / len_c.clamp(min=1)
    if name == "ln_dpo":
        average = (policy_c - ref_c) / len_c.clamp(min=1) - (policy_r - ref_r) / len_r.clamp(min=1)
        return -F.logsigmoid(beta * average)
    if name == "simpo":
        average = policy_c / len_c.clamp(min=1) - policy_r / len_r.clamp(min=1)
        return -F.logsigmoid(beta * average - cfg.simpo_gamma)
    if name == "orpo":
        mean_c, mean_r = policy_c / len_c.clamp(min=1), policy_r / len_r.clamp(min=1)
        log_odds = (mean_c - mean_r) - (torch.log1p(-torch.exp(mean_c)) - torch.log1p(-torch.exp(mean_r)))
        return -mean_c - cfg.orpo_lambda * F.logsigmoid(log_odds)
    raise ValueError(f"unknown loss {name!r}")


def group_contrastive_loss(logratio: torch.Tensor, is_chosen: torch.Tensor, weight: torch.Tensor, beta: float) -> torch.Tensor:
    """One list: -log of the (weighted) share of exp(beta * log-ratio) mass on the chosen answers,
    the InfoNCE-style objective of AMPO / MPO."""
    scaled = beta * logratio + torch.log(weight.clamp(min=1e-12))
    return -(torch.logsumexp(scaled[is_chosen], 0) - torch.logsumexp(scaled, 0))
