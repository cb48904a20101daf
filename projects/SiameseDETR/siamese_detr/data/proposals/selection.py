"""DETReg's proposal selection policies (Bar et al., CVPR 2022, §4 "Selecting Bounding Box Proposals").

Input: proposals in the method's ranking order (rank 1 = first = most object-like; Selective Search's grouping
order, EdgeBoxes' score order), output: the indices of the ones used as pretext targets.

* ``topk``: the first K (the official default and the only policy that runs in the released code).
* ``random``: K drawn uniformly WITHOUT replacement from all proposals (the official ``random`` branch loads
  another image's cache by mistake; this is the paper's definition).
* ``importance``: each proposal ``b_i`` kept independently with ``Pr(X_i = 1) ∝ -log(i / n)`` (paper §4);
  normalised as the official ``mc`` branch: ``p_i = min(1, -log(i / (N + 1)) * K / N)`` with ``N`` the
  candidate count (the official fixes ``N = 300``, ``K / N = 0.1``: ``-log(arange(1, 301) / 301) / 10``),
  so about K proposals are kept on average (``sum_i -log(i / (N + 1)) ≈ N``); ``i / (N + 1)`` instead of
  ``i / n`` keeps the last one possible; ranks beyond ``N`` are never drawn (the official draws from the
  first 300 of Selective Search's thousands). At most ``max_sampled`` (default: no cap, as the official) are
  returned, in rank order.
"""

from typing import Optional

import numpy as np

from ...utils.user_errors import UserValueError

__all__ = ["POLICIES", "importance_probabilities", "select_proposals"]

POLICIES = ("topk", "random", "importance")


def importance_probabilities(num_candidates: int, k: int, total: Optional[int] = None) -> np.ndarray:
    """``p_i = min(1, -log(i / (N + 1)) * k / N)`` for ranks ``i = 1..num_candidates``, ``N = total`` (default
    ``num_candidates``). float64 ``[num_candidates]``, non-increasing in the rank."""
    total = num_candidates if total is None else int(total)
    if total < num_candidates:
        raise ValueError(f"total ({total}) must be >= the number of candidates ({num_candidates})")
    ranks = np.arange(1, num_candidates + 1, dtype=np.float64)
    if total == 0:
        return ranks
    return np.minimum(1.0, -np.log(ranks / (total + 1)) * k / total)


def select_proposals(
    rng: np.random.Generator,
    num_candidates: int,
    k: int,
    policy: str = "topk",
    importance_total: Optional[int] = None,
    max_sampled: Optional[int] = None,
) -> np.ndarray:
    """Indices (int64 ``[K']``, 0-based rows of the ranked list; increasing rank order for ``topk`` /
    ``importance``, draw order for ``random``) of the proposals to use among ``num_candidates`` ranked ones.
    ``K' = min(k, num_candidates)`` for ``topk`` / ``random``; random for ``importance`` (about ``k`` on
    average when ``N`` is the candidate count; at most ``max_sampled``).

    Args:
        rng: numpy generator (the mapper's per-sample generator).
        k: K (30 in DETReg).
        policy: "topk", "random" or "importance".
        importance_total: ``N`` of :func:`importance_probabilities` (default the candidate count; the
            official uses 300 for every image): only the first ``N`` ranks can be drawn, as the official.
        max_sampled: cap for ``importance`` (its count is random: keep it <= the model's ``num_queries``).
    """
    if policy not in POLICIES:
        raise UserValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if k < 1:
        raise UserValueError(f"k must be >= 1, got {k}")
    if policy == "topk":
        return np.arange(min(k, num_candidates), dtype=np.int64)
    if policy == "random":
        return rng.choice(num_candidates, size=min(k, num_candidates), replace=False).astype(np.int64)
    # only the first N ranks can be drawn (official: ``dist2[:len(boxes)]`` with N = 300 for Selective
    # Search's thousands of boxes); N defaults to the candidate count
    n = num_candidates if importance_total is None else min(num_candidates, int(importance_total))
    probs = importance_probabilities(n, k, importance_total)
    keep = np.flatnonzero(rng.uniform(size=n) < probs).astype(np.int64)
    return keep if max_sampled is None else keep[:max_sampled]
