"""Candidate losses (per example, from logits) and their registry.

``candidate_losses(names, task)`` gives a :class:`CandidateSet`; ``cs(logits, y)`` is the (B, K)
matrix of per-example losses that a loss policy weights (``weighted_loss``).
"""

from autoloss.losses.candidates import (
    DEFAULT_CANDIDATES,
    DEFAULT_FOCAL_GAMMA,
    DEFAULT_KL_EPS,
    CandidateLoss,
    CandidateSet,
    binary_ce,
    binary_focal,
    binary_hinge,
    binary_kl,
    binary_mse,
    candidate_losses,
    candidate_names,
    get_candidate,
    multiclass_ce,
    multiclass_focal,
    multiclass_hinge,
    multiclass_kl,
    multiclass_mse,
    register_candidate,
    unregister_candidate,
    weighted_loss,
)

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_FOCAL_GAMMA",
    "DEFAULT_KL_EPS",
    "CandidateLoss",
    "CandidateSet",
    "binary_ce",
    "binary_focal",
    "binary_hinge",
    "binary_kl",
    "binary_mse",
    "candidate_losses",
    "candidate_names",
    "get_candidate",
    "multiclass_ce",
    "multiclass_focal",
    "multiclass_hinge",
    "multiclass_kl",
    "multiclass_mse",
    "register_candidate",
    "unregister_candidate",
    "weighted_loss",
]
