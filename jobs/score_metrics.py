"""The pure core of comparing two models' scores of the same entities (``jobs.compare``) and of judging them.

No I/O, numpy only (no scipy or scikit-learn: they stay off the scoring and comparison paths):

- ``average_ranks``: 1-based ranks, ties sharing their average rank;
- ``rank_correlation``: Spearman's rho (Pearson's correlation of the average ranks), None when either list is
  constant or shorter than two;
- ``decision_change``: the share of entities whose threshold decision differs between two score lists. A decision
  is the label of the highest threshold a score reaches (``score >= value``), else none — the rule the API labels
  answers with (``online.policy.label_for``);
- ``quality``: realized metrics on labels, by objective as ``jobs.train`` evaluates a hold-out day: ``auc`` (rank
  based, ties counted half) and, for probabilities, ``logloss`` for the ``binary:*`` objectives; ``rmse`` and ``mae``
  (and ``logloss`` for ``reg:logistic``) for every other one;
- ``calibration``: the reliability of probabilities: ``CALIBRATION_BINS`` equal-width bins over [0, 1], each with its
  count, mean predicted probability and observed positive rate, and the expected calibration error (the bins' gaps
  weighted by their share of rows); ``bias``: the mean error (score − label) of a regression;
- ``quality_loss``: how much worse the challenger's headline metric is than the champion's — AUC points lost
  (champion − challenger) for binary objectives, the relative RMSE increase ((challenger − champion) / champion)
  otherwise, as ``jobs.train`` compares a new version with production; negative when the challenger is better.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from warehouse.objectives import is_probability

_CLIP = 1e-15  # probabilities are clipped to [eps, 1 - eps] for the log loss


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (float64), tied values sharing the average of the ranks they span."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1]))) if len(x) else np.array([], int)
    ends = np.append(starts[1:], len(x))  # exclusive
    group = np.repeat(np.arange(len(starts)), ends - starts)
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ((starts + ends + 1) / 2.0)[group]  # mean of ranks start+1 .. end
    return ranks


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rho of two equally long score lists; None when undefined (fewer than two, or a constant list)."""
    if len(a) != len(b):
        raise ValueError(f"score lists differ in length: {len(a)} vs {len(b)}")
    if len(a) < 2:
        return None
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = float(np.sqrt(np.dot(ra, ra) * np.dot(rb, rb)))
    if denominator == 0.0:
        return None
    return float(np.clip(np.dot(ra, rb) / denominator, -1.0, 1.0))


def decision_levels(scores: np.ndarray, thresholds: Mapping[str, float]) -> np.ndarray:
    """For each score, how many of the threshold values it reaches (``>=``): equal levels, equal decisions."""
    cuts = np.sort(np.asarray(list(thresholds.values()), dtype=np.float64))
    return np.searchsorted(cuts, np.asarray(scores, dtype=np.float64), side="right")


def decision_change(a: np.ndarray, b: np.ndarray, thresholds: Mapping[str, float]) -> float | None:
    """The share of entities whose decision differs between scores ``a`` and ``b``; None without thresholds or
    entities."""
    if not thresholds or len(a) == 0:
        return None
    return float(np.mean(decision_levels(a, thresholds) != decision_levels(b, thresholds)))


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve of 0/1 ``labels`` by ``scores`` (Mann-Whitney; tied scores count half); None when
    either class is absent."""
    y = np.asarray(labels) != 0
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = average_ranks(scores)
    return float((ranks[y].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean cross-entropy of labels in [0, 1] under ``probabilities`` (clipped away from 0 and 1)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _CLIP, 1.0 - _CLIP)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def is_binary(objective: str) -> bool:
    """Whether ``objective``'s quality is judged by AUC (``binary:*``), else by RMSE."""
    return objective.startswith("binary:")


def quality(objective: str, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Realized metrics of ``scores`` on ``labels`` under ``objective`` (see the module docstring); {} when there
    is nothing to measure (no rows; for a binary objective, labels other than 0/1 or a single class)."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if len(y) == 0:
        return {}
    if is_binary(objective):
        if not np.isin(y, (0.0, 1.0)).all():
            return {}
        area = auc(y, s)
        if area is None:
            return {}
        out = {"auc": area}
        if is_probability(objective):
            out["logloss"] = log_loss(y, s)
        return out
    error = s - y
    out = {"rmse": float(np.sqrt(np.mean(error * error))), "mae": float(np.mean(np.abs(error)))}
    if objective == "reg:logistic":
        out["logloss"] = log_loss(y, s)
    return out


CALIBRATION_BINS = 10


def calibration(labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, object]:
    """Reliability bins and the expected calibration error of ``probabilities`` on 0/1 ``labels`` (module
    docstring); a bin without rows has count 0 and None means. ``{}`` without rows."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    if len(y) == 0:
        return {}
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    mean_p = np.bincount(which, weights=p, minlength=bins)
    rate = np.bincount(which, weights=y, minlength=bins)
    out, ece = [], 0.0
    for i in range(bins):
        n = int(counts[i])
        predicted = float(mean_p[i] / n) if n else None
        observed = float(rate[i] / n) if n else None
        if n:
            ece += n / len(y) * abs(predicted - observed)  # type: ignore[operator]
        out.append({"low": i / bins, "high": (i + 1) / bins, "count": n,
                    "predicted": None if predicted is None else round(predicted, 6),
                    "observed": None if observed is None else round(observed, 6)})  # fmt: skip
    return {"bins": out, "ece": round(ece, 6)}


def bias(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Mean error (score − label); None without rows."""
    y = np.asarray(labels, dtype=np.float64)
    return float(np.mean(np.asarray(scores, dtype=np.float64) - y)) if len(y) else None


def quality_loss(objective: str, champion: Mapping[str, float], challenger: Mapping[str, float]) -> float | None:
    """How much worse the challenger is than the champion under ``objective`` (module docstring); None when either
    lacks the headline metric (or the champion's RMSE is 0)."""
    if is_binary(objective):
        if "auc" not in champion or "auc" not in challenger:
            return None
        return float(champion["auc"] - challenger["auc"])
    if "rmse" not in champion or "rmse" not in challenger or champion["rmse"] == 0:
        return None
    return float((challenger["rmse"] - champion["rmse"]) / champion["rmse"])
