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


# --- held-out stage decoding (the published protocol) ------------------------------------------
#
# Krasheninnikov et al. fine-tune on S disjoint sets of documents in sequence (the training stages)
# and, at the ONE final model, train a logistic-regression probe on some documents' activations
# labelled by stage and test it on documents it never saw: ~90% for telling an early stage from a
# late one (chance 0.5). Here the stages are consecutive groups of documents in the order of their
# last training before the model read, every sample of a document stays on one side of each split,
# and the accuracy is counted per document (its samples are not independent of each other).


def default_stages(n_docs: int) -> int:
    """The number of stages when none is asked for: up to 5, at least 2 documents in each."""
    return min(5, n_docs // 2)


def stages_by_last_training(schedule_doc: np.ndarray, episode: int, n_docs: int, n_stages: int) -> np.ndarray:
    """[T] the training stage of every document at the model after ``episode`` (1-based): the
    documents ordered by their last training up to that episode, oldest first, cut into ``n_stages``
    consecutive groups as equal as possible (the earlier groups one larger when T is not a multiple
    of S). Stage 0 was trained longest ago, stage S − 1 most recently."""
    ages = ages_since_training(schedule_doc, np.array([episode]), list(range(n_docs)))[0]
    assert np.isfinite(ages).all(), "every document must have been trained by the episode read"
    assert 1 <= n_stages <= n_docs
    oldest_first = np.argsort(-ages, kind="stable")
    stages = np.empty(n_docs, dtype=int)
    for stage, group in enumerate(np.array_split(oldest_first, n_stages)):
        stages[group] = stage
    return stages


def window_means(values: np.ndarray, lengths, windows: int) -> np.ndarray:
    """[n, W, d] means of activations ``values`` [n, C, d] over ``windows`` consecutive token windows
    of each document's real positions (its first ``lengths[j]``), as equal as possible."""
    n, context, _ = values.shape
    lengths = np.clip(np.asarray(lengths, dtype=int), 1, context)
    assert 1 <= windows <= lengths.min(), "a window needs at least one real token"
    chunks = [np.array_split(values[j, : lengths[j]], windows) for j in range(n)]
    return np.stack([np.stack([w.mean(axis=0) for w in doc]) for doc in chunks])


def stratified_folds(stages: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """[T] the fold (0 … n_folds − 1) in which each document is held out: within every stage its
    documents, in a seeded random order, are dealt to the folds in turn, so each fold holds out
    documents of every stage (needs n_folds ≤ the smallest stage) and every document exactly once."""
    stages = np.asarray(stages, dtype=int)
    assert n_folds >= 2 and np.bincount(stages).min() >= n_folds
    rng = np.random.default_rng(seed)
    folds = np.empty(len(stages), dtype=int)
    for stage in np.unique(stages):
        members = rng.permutation(np.flatnonzero(stages == stage))
        folds[members] = np.arange(len(members)) % n_folds
    return folds


def document_splits(folds: np.ndarray, keep: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training documents, held-out documents) of every fold, among the documents ``keep`` [T] bool
    (all when None); the two never share a document."""
    folds = np.asarray(folds)
    keep = np.ones(len(folds), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    return [
        (np.flatnonzero(keep & (folds != f)), np.flatnonzero(keep & (folds == f)))
        for f in np.unique(folds[keep])
    ]


def heldout_classify(features: np.ndarray, labels: np.ndarray, splits, inverse_l2: float = 1.0) -> np.ndarray:
    """[T, W] held-out predicted labels of the samples ``features`` [T, W, d] (W samples per
    document) labelled by their document's ``labels`` [T]: for each (train, test) pair of document
    indices in ``splits``, a logistic regression on standardised features (multinomial with more than
    two labels; scikit-learn's C = ``inverse_l2``) fitted on the training documents' samples predicts
    the held-out documents' samples. −1 where a document is in no held-out set."""
    # lazy: scikit-learn is an optional extra
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.asarray(features, dtype=np.float64)
    n_docs, n_windows, dim = features.shape
    labels = np.asarray(labels, dtype=int)
    predicted = np.full((n_docs, n_windows), -1, dtype=int)
    for train, test in splits:
        assert not np.intersect1d(train, test).size, "a document on both sides of a split"
        model = make_pipeline(StandardScaler(), LogisticRegression(C=inverse_l2, max_iter=2000))
        model.fit(features[train].reshape(-1, dim), np.repeat(labels[train], n_windows))
        predicted[test] = model.predict(features[test].reshape(-1, dim)).reshape(len(test), n_windows)
    return predicted


def document_accuracy(predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[T] the fraction of each document's samples ``predicted`` [T, W] with its label ``labels`` [T];
    NaN for a document that was never held out (predicted −1)."""
    hit = (np.asarray(predicted) == np.asarray(labels)[:, None]).mean(axis=1)
    return np.where((np.asarray(predicted) >= 0).all(axis=1), hit, np.nan)


def stage_accuracy(features: np.ndarray, stages: np.ndarray, folds: np.ndarray, inverse_l2: float = 1.0):
    """(accuracy, [T] per-document accuracy, [T, W] predictions) of the S-way held-out stage probe:
    the mean over documents of the fraction of each one's samples given its own stage."""
    predicted = heldout_classify(features, stages, document_splits(folds), inverse_l2)
    per_doc = document_accuracy(predicted, stages)
    return float(np.mean(per_doc)), per_doc, predicted


def pairwise_stage_accuracy(
    features: np.ndarray, stages: np.ndarray, folds: np.ndarray, inverse_l2: float = 1.0
) -> np.ndarray:
    """[S, S] held-out accuracy of a binary probe for every pair of stages (a, b), symmetric, NaN on
    the diagonal: trained and tested only on the documents of those two stages, with the same folds,
    the mean over those documents of the fraction of their samples given the right one of the two."""
    n_stages = int(np.max(stages)) + 1
    accuracy = np.full((n_stages, n_stages), np.nan)
    for a in range(n_stages):
        for b in range(a + 1, n_stages):
            keep = (stages == a) | (stages == b)
            predicted = heldout_classify(features, stages, document_splits(folds, keep), inverse_l2)
            accuracy[a, b] = accuracy[b, a] = float(np.nanmean(document_accuracy(predicted, stages)[keep]))
    return accuracy


def accuracy_by_distance(pairwise: np.ndarray) -> np.ndarray:
    """[S − 1] mean pairwise-stage accuracy over the pairs 1, 2, … S − 1 stages apart."""
    n_stages = len(pairwise)
    a, b = np.triu_indices(n_stages, k=1)
    return np.array([float(np.mean(pairwise[a, b][(b - a) == gap])) for gap in range(1, n_stages)])


def mean_off_diagonal(pairwise: np.ndarray) -> float:
    """Mean of the [S, S] pairwise matrix over its pairs (upper triangle)."""
    return float(np.mean(pairwise[np.triu_indices(len(pairwise), k=1)]))


def wilson_interval(accuracy: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a proportion ``accuracy`` observed over ``n`` units
    (here documents; a fractional count of successes is allowed)."""
    if n <= 0:
        return float("nan"), float("nan")
    denom = 1 + z**2 / n
    centre = (accuracy + z**2 / (2 * n)) / denom
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z**2 / (4 * n**2)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def permutation_null(
    features: np.ndarray,
    stages: np.ndarray,
    n_folds: int,
    permutations: int,
    seed: int = 0,
    inverse_l2: float = 1.0,
    pairwise: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracies the held-out probes reach when the stages are dealt to the documents at random:
    ([P] S-way stage accuracy, [P] mean pairwise-stage accuracy, NaN when ``pairwise`` is False),
    every permutation with its own stratified folds, the same sizes of stage, documents kept whole."""
    rng = np.random.default_rng(seed)
    stage_null, pair_null = np.full(permutations, np.nan), np.full(permutations, np.nan)
    for p in range(permutations):
        shuffled = rng.permutation(stages)
        folds = stratified_folds(shuffled, n_folds, seed=int(rng.integers(2**31)))
        stage_null[p] = stage_accuracy(features, shuffled, folds, inverse_l2)[0]
        if pairwise:
            pair_null[p] = mean_off_diagonal(pairwise_stage_accuracy(features, shuffled, folds, inverse_l2))
    return stage_null, pair_null


def heldout_verdict(
    accuracy: float, interval: tuple[float, float], chance: float, null_q975: float | None
) -> str:
    """'yes' when the 95% interval lies above chance and the accuracy beats the permutation null's
    97.5% quantile (when there is one); 'no' when the interval lies below chance; else 'inconclusive'."""
    low, high = interval
    if low > chance and (null_q975 is None or not np.isfinite(null_q975) or accuracy > null_q975):
        return "yes"
    if high < chance:
        return "no"
    return "inconclusive"
