"""Is the training order linearly decodable from the model? (Krasheninnikov et al. 2025, arXiv 2509.14223)

The target is a document's *age*: how many episodes ago it was last trained, read at the model
after episode k (age 0: trained in episode k itself). A linear probe on the document's
activations predicts the age; it is cross-validated by document, so every prediction is for a
document the probe never saw in training and cannot come from recognising the document.
Episodes are 1-based (``schedule_doc[k - 1]`` is trained in episode k), documents 0-based.
"""

from __future__ import annotations

import numpy as np

RIDGE_ALPHAS = np.logspace(-3, 4, 15)  # the ridge penalty is chosen by leave-one-out within each fold


def ages_since_training(schedule_doc: np.ndarray, episodes: np.ndarray, docs) -> np.ndarray:
    """[A, n] episodes since each document in ``docs`` was last trained, at the model after each of
    ``episodes`` [A]; NaN where the document has not been trained yet."""
    schedule_doc = np.asarray(schedule_doc, dtype=int)
    ages = np.full((len(episodes), len(docs)), np.nan)
    for j, doc in enumerate(docs):
        trained = np.flatnonzero(schedule_doc == doc) + 1  # 1-based episodes
        for a, k in enumerate(episodes):
            done = trained[trained <= k]
            if len(done):
                ages[a, j] = k - done[-1]
    return ages


def mean_pool(values: np.ndarray, lengths) -> np.ndarray:
    """[A, n, d] mean over each document's real (non-pad) positions of activations [A, n, C, d]."""
    lengths = np.clip(np.asarray(lengths, dtype=int), 1, values.shape[2])
    return np.stack([values[:, j, : lengths[j], :].mean(axis=1) for j in range(values.shape[1])], axis=1)


def decode_ages(features: np.ndarray, ages: np.ndarray, groups: np.ndarray, n_splits: int = 5) -> np.ndarray:
    """Held-out predicted ages [N] of samples ``features`` [N, d] with true ``ages`` [N]: a ridge
    regression on standardised features, fitted with ``groups`` [N] (the document) split into
    ``n_splits`` folds, each sample predicted by the model fitted without its group."""
    # lazy: optional extra
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.asarray(features, dtype=np.float64)
    n_splits = min(n_splits, len(np.unique(groups)))
    assert n_splits >= 2, "need at least two documents to cross-validate by document"
    predicted = np.full(len(ages), np.nan)
    for train, test in GroupKFold(n_splits=n_splits).split(features, ages, groups):
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))
        model.fit(features[train], ages[train])
        predicted[test] = model.predict(features[test])
    return predicted


def rankdata(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` [n], ties sharing their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); NaN if either side is constant or < 3 pairs."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return float("nan")
    ra, rb = rankdata(a[keep]), rankdata(b[keep])
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def pairwise_order_accuracy(predicted: np.ndarray, ages: np.ndarray) -> float:
    """Among pairs of documents with different true ages (one model, one row), the fraction whose
    predicted ages are in the same order; ties in the prediction count half. Chance is 0.5.
    NaN with no such pair. ``predicted``, ``ages``: [n] (NaN ages ignored)."""
    keep = np.isfinite(ages) & np.isfinite(predicted)
    p, t = predicted[keep], ages[keep]
    dp, dt = np.sign(p[:, None] - p[None, :]), np.sign(t[:, None] - t[None, :])
    pairs = dt != 0
    if not pairs.any():
        return float("nan")
    return float(np.mean(np.where(dp[pairs] == 0, 0.5, dp[pairs] == dt[pairs])))


def last_trained_hit(predicted: np.ndarray, ages: np.ndarray) -> float:
    """1.0 if the document with the smallest predicted age is the one trained most recently, else
    0.0 (chance: 1 / the number of documents with an age); NaN when no document has an age."""
    keep = np.isfinite(ages) & np.isfinite(predicted)
    if not keep.any():
        return float("nan")
    p, t = predicted[keep], ages[keep]
    return float(t[int(np.argmin(p))] == t.min())
