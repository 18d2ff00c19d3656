"""Pure numpy science behind the mechanistic probes (paper Sec. 4.1-4.3, App. C).

Everything here takes plain arrays and returns plain arrays or numbers: no store, no plots.
Shapes use named dimensions: ``[snapshot, dim]`` is a trajectory of flattened vectors.
"""

from __future__ import annotations

import numpy as np

# Columns of [snapshot, dim] matrices are read in blocks of this many, so a Gram matrix of
# large recordings (an unembedding of 1M floats per snapshot) never holds a float64 copy.
GRAM_BLOCK = 1 << 16


# --- inner products ---------------------------------------------------------------------------


def gram_matrix(vectors: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """X Xᵀ [n, n] in float64 of rows [n, dim], optionally after subtracting ``center`` [dim].

    Subtracting a common vector first (e.g. the mean snapshot) keeps the products of small
    differences accurate when the vectors themselves are large and nearly equal.
    """
    vectors = np.asarray(vectors)
    assert vectors.ndim == 2, vectors.shape
    n, dim = vectors.shape
    gram = np.zeros((n, n))
    for start in range(0, dim, GRAM_BLOCK):
        block = vectors[:, start : start + GRAM_BLOCK].astype(np.float64)
        if center is not None:
            block -= np.asarray(center[start : start + GRAM_BLOCK], dtype=np.float64)
        gram += block @ block.T
    return gram


def cosine_from_gram(gram: np.ndarray) -> np.ndarray:
    """Cosine similarities [n, n] from a Gram matrix; NaN where a vector is zero."""
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = gram / np.outer(norms, norms)
    cos[(norms == 0)[:, None] | (norms == 0)[None, :]] = np.nan
    return np.clip(cos, -1.0, 1.0)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity [n, n] of rows [n, dim]."""
    return cosine_from_gram(gram_matrix(vectors))


def step_norms(vectors: np.ndarray) -> np.ndarray:
    """‖x_k − x_{k−1}‖ for k = 1..n−1 of rows [n, dim]: returns [n − 1]."""
    vectors = np.asarray(vectors)
    out = np.zeros(max(len(vectors) - 1, 0))
    for start in range(0, vectors.shape[1], GRAM_BLOCK):
        block = vectors[:, start : start + GRAM_BLOCK].astype(np.float64)
        out += np.sum(np.diff(block, axis=0) ** 2, axis=1)
    return np.sqrt(out)


# --- residuals (paper Sec. 4.2) ------------------------------------------------------------------


def residual_operator(n: int, mode: str, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Matrix A [m, n] with residual_r = Σ_s A[r, s] x_s, and which snapshots the rows are [m].

    mode "window": x_t minus the mean of the snapshots in a centred window of ``window``
      snapshots (the paper's w_res(t) = w(t) − 1/T Σ_{n=t−T/2}^{t+T/2} w(n)). An even window
      cannot be centred on t, so it takes window/2 on each side (window + 1 snapshots) and
      divides by their number; only t whose whole window was recorded get a row.
    mode "initial": x_t minus x_0, for t = 1..n−1.
    Every row sums to zero, so subtracting any common vector from all x leaves residuals unchanged.
    """
    if mode == "initial":
        rows = np.arange(1, n)
        op = np.zeros((len(rows), n))
        op[np.arange(len(rows)), rows] = 1.0
        op[:, 0] -= 1.0
        return op, rows
    assert mode == "window", mode
    half = max(window // 2, 1)
    rows = np.arange(half, n - half)
    op = np.zeros((len(rows), n))
    for r, t in enumerate(rows):
        op[r, t - half : t + half + 1] -= 1.0 / (2 * half + 1)
        op[r, t] += 1.0
    return op, rows


def residual_cosines(gram: np.ndarray, mode: str, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity [m, m] of weight residuals, from the Gram matrix [n, n] of the snapshots.

    Residuals are linear in the snapshots, so their Gram matrix is A G Aᵀ: no residual
    vector is ever materialised. Returns (cosines, snapshot index of each row [m]).
    """
    op, rows = residual_operator(gram.shape[0], mode, window)
    return cosine_from_gram(op @ gram @ op.T), rows


# --- periodicity --------------------------------------------------------------------------------


def diagonal_means(matrix: np.ndarray) -> np.ndarray:
    """Mean of the lag-th super-diagonal of a square matrix, lag = 0..n−1: returns [n] (NaNs ignored)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.shape[0]
    out = np.full(n, np.nan)
    for lag in range(n):
        d = np.diagonal(matrix, offset=lag)
        out[lag] = _nanmean(d)
    return out


def stripe_period(similarity: np.ndarray, min_pairs: int | None = None) -> int | None:
    """Period, in rows, of the stripes parallel to the diagonal of a similarity matrix [n, n].

    Reads the mean similarity at each lag (an autocorrelation of the trajectory) and returns
    the lag of its highest local maximum, among lags with at least ``min_pairs`` pairs
    (default n/3: a lag seen by few pairs is noise). None if there is no local maximum.
    A multiple of the period can tie with it; the smaller lag wins ties within 5%.
    """
    profile = diagonal_means(similarity)
    n = len(profile)
    min_pairs = max(2, n // 3) if min_pairs is None else min_pairs
    last = n - min_pairs  # lag L has n − L pairs
    peaks = [
        lag
        for lag in range(1, last + 1)
        if np.isfinite(profile[lag])
        and profile[lag] >= _at(profile, lag - 1)
        and profile[lag] > _at(profile, lag + 1)
    ]
    if not peaks:
        return None
    best = max(profile[p] for p in peaks)
    spread = np.nanmax(profile) - np.nanmin(profile)
    return int(min(p for p in peaks if profile[p] >= best - 0.05 * spread))


def _at(profile: np.ndarray, i: int) -> float:
    return profile[i] if 0 <= i < len(profile) and np.isfinite(profile[i]) else -np.inf


def dominant_period(signal: np.ndarray) -> float | None:
    """Period (in samples) of the strongest non-constant Fourier component of a 1-D signal."""
    signal = np.asarray(signal, dtype=np.float64)
    signal = signal[np.isfinite(signal)]
    if len(signal) < 4:
        return None
    power = np.abs(np.fft.rfft(signal - signal.mean())) ** 2
    k = int(np.argmax(power[1:]) + 1)
    return len(signal) / k if power[k] > 0 else None


# --- distances in a cycle ------------------------------------------------------------------------


def cyclic_distance(i, j, period: int):
    """min(|i − j| mod T, T − |i − j| mod T): how far apart two documents are in a cycle of T."""
    d = np.abs(np.asarray(i) - np.asarray(j)) % period
    return np.minimum(d, period - d)


def mean_by_cyclic_distance(matrix: np.ndarray) -> np.ndarray:
    """For a doc×doc matrix [T, T]: mean of entries at cyclic distance d = 0..T//2 (NaNs ignored)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    T = matrix.shape[0]
    i, j = np.indices((T, T))
    dist = cyclic_distance(i, j, T)
    return np.array([_nanmean(matrix[dist == d]) for d in range(T // 2 + 1)])


def mean_by_offset(matrix: np.ndarray) -> np.ndarray:
    """For a doc×doc matrix [T, T]: mean of M[i, (i + o) mod T] for offset o = 0..T−1 (NaNs ignored).

    Unlike the cyclic distance this keeps direction: o = 1 is the next document in the cycle.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    T = matrix.shape[0]
    rows = np.arange(T)
    return np.array([_nanmean(matrix[rows, (rows + o) % T]) for o in range(T)])


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite entries; NaN (without numpy's empty-slice warning) if there are none."""
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def binned_means(values: np.ndarray, bins: np.ndarray, n_bins: int) -> np.ndarray:
    """Mean of ``values`` per integer bin 0..n_bins−1 (NaN for an empty bin)."""
    values, bins = np.asarray(values, dtype=np.float64).ravel(), np.asarray(bins).ravel()
    out = np.full(n_bins, np.nan)
    for b in range(n_bins):
        sel = (bins == b) & np.isfinite(values)
        if sel.any():
            out[b] = values[sel].mean()
    return out


def symmetry(matrix: np.ndarray) -> float:
    """Pearson correlation of the off-diagonal entries of M with those of Mᵀ (1: symmetric)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    off = ~np.eye(matrix.shape[0], dtype=bool)
    a, b = matrix[off], matrix.T[off]
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


# --- PCA and helices (paper Fig. 9) -------------------------------------------------------------


def pca_from_gram(gram: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k principal-component scores [n, k] and explained-variance ratios [k] of the rows
    whose (uncentred) Gram matrix is ``gram`` [n, n].

    The SVD of the double-centred Gram matrix H G H = U Σ² Uᵀ gives the scores U Σ of the
    SVD of the centred data, with an n×n problem instead of n×dim.
    """
    n = gram.shape[0]
    h = np.eye(n) - 1.0 / n
    centred = h @ gram @ h
    u, s2, _ = np.linalg.svd((centred + centred.T) / 2)
    s2 = np.clip(s2, 0.0, None)
    k = min(k, n)
    scores = u[:, :k] * np.sqrt(s2[:k])
    total = s2.sum()
    ratio = s2[:k] / total if total > 0 else np.zeros(k)
    # Fix each component's sign so the first snapshot has a non-positive score: with the
    # SVD's arbitrary signs two identical runs could plot mirrored helices.
    signs = np.where(scores[0] > 0, -1.0, 1.0)
    return scores * signs, ratio


def pca(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k PC scores [n, k] and explained-variance ratios [k] of rows [n, dim]."""
    vectors = np.asarray(vectors)
    return pca_from_gram(gram_matrix(vectors, center=vectors.mean(axis=0)), k)


def snapshot_epochs(episodes: np.ndarray, schedule_epoch: np.ndarray) -> np.ndarray:
    """Epoch [S] in which each snapshot was taken: the epoch of its episode (0: before training).

    episodes [S] are 1-based episode numbers (0 for the initial model); schedule_epoch [K] is the
    run's stored epoch of every episode, so epochs of any length are read as they were trained.
    """
    episodes = np.asarray(episodes, dtype=int)
    schedule_epoch = np.asarray(schedule_epoch, dtype=int)
    return np.where(episodes > 0, schedule_epoch[np.clip(episodes, 1, None) - 1], 0).astype(int)


def epoch_segments(snapshot_epoch: np.ndarray) -> dict[int, np.ndarray]:
    """Snapshot indices that trace each epoch, including the snapshot just before it starts.

    snapshot_epoch [n]: epoch in which each snapshot was taken (0 for the initial model). The
    snapshot that closes epoch e − 1 opens epoch e, so consecutive segments share one point.
    """
    snapshot_epoch = np.asarray(snapshot_epoch)
    segments = {}
    for e in sorted(set(int(x) for x in snapshot_epoch if x > 0)):
        idx = np.flatnonzero(snapshot_epoch == e)
        if idx[0] > 0:
            idx = np.concatenate([[idx[0] - 1], idx])
        segments[e] = idx
    return segments


def winding_angle(points_2d: np.ndarray, centre: np.ndarray | None = None) -> float:
    """Signed angle (radians) swept by a path of points [n, 2] about ``centre`` (default: their centroid).

    Each step's angle difference is wrapped into [−π, π), so a step must turn less than half
    a revolution to be counted right. One anticlockwise revolution gives +2π.
    """
    points_2d = np.asarray(points_2d, dtype=np.float64)
    if len(points_2d) < 3:
        return float("nan")
    centre = points_2d.mean(axis=0) if centre is None else np.asarray(centre, dtype=np.float64)
    offsets = points_2d - centre
    angle = np.arctan2(offsets[:, 1], offsets[:, 0])
    steps = (np.diff(angle) + np.pi) % (2 * np.pi) - np.pi
    return float(steps.sum())


def mean_radius(points_2d: np.ndarray) -> float:
    """Mean distance of points [n, 2] from their centroid."""
    points_2d = np.asarray(points_2d, dtype=np.float64)
    return float(np.linalg.norm(points_2d - points_2d.mean(axis=0), axis=1).mean())


def helix_per_epoch(scores_2d: np.ndarray, snapshot_epoch: np.ndarray) -> dict[str, np.ndarray]:
    """Winding angle and radius of a 2-D trajectory [n, 2] in every epoch.

    Returns {"epoch" [E], "winding" [E] radians (≈ 2π for one revolution per epoch),
    "radius" [E] mean distance from the epoch's centroid, "points" [E] snapshots taken in the
    epoch}. The centroid of each epoch is its own, so a helix that drifts along its axis still
    winds about the right centre. An epoch with fewer points than the others is only partly
    covered and winds less than a full epoch would.
    """
    segments = epoch_segments(snapshot_epoch)
    epochs = np.array(sorted(segments), dtype=int)
    # Centre and radius come from the epoch's own snapshots: the opening point belongs to the
    # previous epoch's loop and would pull a one-revolution circle's centroid off centre.
    snapshot_epoch = np.asarray(snapshot_epoch)
    own = {e: scores_2d[snapshot_epoch == e] for e in epochs}
    winding = np.array([winding_angle(scores_2d[segments[e]], centre=own[e].mean(axis=0)) for e in epochs])
    radius = np.array([mean_radius(own[e]) for e in epochs])
    points = np.array([len(own[e]) for e in epochs], dtype=int)
    return {"epoch": epochs, "winding": winding, "radius": radius, "points": points}


def trajectory_winding(
    gram: np.ndarray, snapshot_epoch: np.ndarray, *, detrend: str = "window", window: int = 2
) -> dict:
    """Winding per epoch of a trajectory of snapshots in its top PC plane (paper Fig. 9).

    gram [S, S]: Gram matrix of the snapshots (any common vector subtracted); snapshot_epoch [S]
    (0: before training). detrend "window": the plane is PC1-PC2 of the residuals (each snapshot
    minus the mean of a centred window of ``window`` snapshots, one cycle), where a helix's
    rotation is left once its drift is gone; "none": PC1-PC2 of the raw snapshots.

    Returns the plane's scores [m, 2] and explained variance [2], the snapshots' epochs [m], and
    per epoch (``helix_per_epoch``) "epoch", "winding" (radians), "radius", "points", plus
    "complete" [E]: the window kept every snapshot of the epoch (the first and last half-cycle
    of a run are cut by it), and "revolutions" = winding / 2π.
    """
    snapshot_epoch = np.asarray(snapshot_epoch, dtype=int)
    if detrend == "window":
        op, rows = residual_operator(len(snapshot_epoch), "window", window)
        plane, ratio = pca_from_gram(op @ gram @ op.T, 2)
        plane_epoch = snapshot_epoch[rows]
    else:
        assert detrend == "none", detrend
        plane, ratio = pca_from_gram(gram, 2)
        plane_epoch = snapshot_epoch
    helix = helix_per_epoch(plane, plane_epoch)
    recorded = np.array([(snapshot_epoch == e).sum() for e in helix["epoch"]], dtype=int)
    return {
        **helix,
        "complete": helix["points"] >= recorded,
        "revolutions": helix["winding"] / (2 * np.pi),
        "plane": plane,
        "plane_explained_variance": ratio,
        "plane_epoch": plane_epoch,
    }


def next_training_pairs(snapshot_episodes: np.ndarray, schedule_doc: np.ndarray) -> np.ndarray:
    """Pairs [p, 2] of snapshot indices (i, j): snapshot j is taken right after the next training of
    the document trained just before snapshot i, so both follow an update on the same document.

    Works for any order: in a cyclic run j − i is one cycle, in a shuffled or insert run it
    varies. Snapshots before training (episode 0) and documents not trained again pair with nothing.
    """
    snapshot_episodes = np.asarray(snapshot_episodes, dtype=int)
    schedule_doc = np.asarray(schedule_doc, dtype=int)
    index_of = {int(e): i for i, e in enumerate(snapshot_episodes)}
    pairs = []
    for i, episode in enumerate(snapshot_episodes):
        if episode < 1:
            continue
        later = np.flatnonzero(schedule_doc[episode:] == schedule_doc[episode - 1])
        if len(later) and int(episode + later[0] + 1) in index_of:
            pairs.append((i, index_of[int(episode + later[0] + 1)]))
    return np.array(pairs, dtype=int).reshape(-1, 2)


# --- summary helpers ----------------------------------------------------------------------------


def intervals_between(curve: np.ndarray, trained: np.ndarray) -> dict[str, np.ndarray]:
    """Forgetting and recovery of one loss curve between consecutive trainings.

    curve [K+1]: row k is the loss after episode k (row 0 before training); trained: the
    1-based episodes in which the document was trained. Interval n runs from row trained[n]
    (just after the n-th training) to row trained[n+1] − 1 (just before the next). Returns per
    interval: after, peak, before, peak_position (episodes since the training when the loss
    peaks, 0 = right after) and recovered = (peak − before) / (peak − after), NaN where
    nothing was forgotten.
    """
    curve = np.asarray(curve, dtype=np.float64)
    trained = np.asarray(trained, dtype=int)
    n_intervals = max(len(trained) - 1, 0)
    out = {k: np.full(n_intervals, np.nan) for k in ("after", "peak", "before", "peak_position", "recovered")}
    for n in range(n_intervals):
        window = curve[trained[n] : trained[n + 1]]
        after, before = window[0], window[-1]
        peak_at = int(np.argmax(window))
        out["after"][n], out["before"][n], out["peak"][n] = after, before, window[peak_at]
        out["peak_position"][n] = peak_at
        if window[peak_at] > after:
            out["recovered"][n] = (window[peak_at] - before) / (window[peak_at] - after)
    return out


def common_training_offsets(schedule_doc: np.ndarray, docs, length: int) -> np.ndarray | None:
    """Offsets on a shift-averaged curve (offset 0 = just before a document's first training) at
    which every one of ``docs`` is trained, below ``length``; None if the documents return at
    different offsets (shuffled orders), where the averaged curve has no common intervals.

    Cyclic order: 1, T + 1, 2T + 1, ...; insert order, the repeating block: 1 plus the episodes
    between the starts of its epochs, whatever their lengths.
    """
    schedule_doc = np.asarray(schedule_doc, dtype=int)
    offsets = None
    for t in docs:
        eps = np.flatnonzero(schedule_doc == int(t)) + 1
        if not len(eps):
            continue
        mine = eps - eps[0] + 1
        mine = mine[mine < length]
        if offsets is None:
            offsets = mine
        elif not np.array_equal(offsets, mine):
            return None
    return offsets


def interval_peaks(curve: np.ndarray, trained) -> dict[str, np.ndarray]:
    """``intervals_between`` for a shift-averaged curve (offset 0 = just before the first
    training). ``trained``: the offsets of the trainings (``common_training_offsets``), or an
    int period T for a cyclic run, whose trainings fall at offsets 1, T + 1, 2T + 1, ..."""
    curve = np.asarray(curve)
    if np.ndim(trained) == 0:
        trained = np.arange(1, len(curve), int(trained))
    return intervals_between(curve, trained)


def pearson(a, b) -> float:
    """Pearson correlation of two equal-length series (NaN pairs dropped); NaN if either is constant
    or fewer than 3 pairs remain."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def trend(values: np.ndarray) -> float:
    """Least-squares slope of values against their index (NaNs dropped); NaN with < 2 points."""
    values = np.asarray(values, dtype=np.float64)
    x = np.arange(len(values))
    keep = np.isfinite(values)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(x[keep], values[keep], 1)[0])


# --- a helix against a random walk (issue 21) ----------------------------------------------------
#
# PCA of a high-dimensional random walk is close to sinusoids by itself, so a trajectory that winds
# about once per epoch in its top PC plane is no evidence of a helix. What a helix has and a walk
# has not is memory one cycle back: after the drift is removed, the residual one cycle later points
# the same way. With the paper's centred window of one cycle, the residuals at k and k + T of a walk
# are built from disjoint steps, so for independent isotropic steps their cosine is 0 on average
# (variance 1/dim per pair).


def factor_from_gram(gram: np.ndarray) -> np.ndarray:
    """Rows F [n, r] with F Fᵀ = ``gram`` [n, n] (up to rounding): vectors with the same inner
    products, in at most n dimensions, so a statistic of inner products can be computed on them."""
    gram = np.asarray(gram, dtype=np.float64)
    values, vectors = np.linalg.eigh((gram + gram.T) / 2)
    keep = values > values.max() * 1e-12 if values.max() > 0 else values > 0
    return vectors[:, keep] * np.sqrt(values[keep])


def window_residual_rows(rows: np.ndarray, window: int) -> np.ndarray:
    """``residual_operator(n, "window", window)`` applied to rows [n, p], in O(n p): each row t that
    has its whole centred window minus the mean of that window (window + 1 rows for an even window).
    Returns [m, p] for the snapshots ``residual_operator`` names."""
    rows = np.asarray(rows, dtype=np.float64)
    half = max(window // 2, 1)
    n = len(rows)
    if n < 2 * half + 1:
        return np.zeros((0, rows.shape[1]))
    csum = np.concatenate([np.zeros((1, rows.shape[1])), np.cumsum(rows, axis=0)])  # [n + 1, p]
    t = np.arange(half, n - half)
    means = (csum[t + half + 1] - csum[t - half]) / (2 * half + 1)
    return rows[t] - means


def mean_lag_cosine(rows: np.ndarray, lag: int) -> float:
    """Mean over k of cos(row k, row k + lag) for rows [m, p]; NaN if no pair is defined."""
    rows = np.asarray(rows, dtype=np.float64)
    if lag < 1 or lag >= len(rows):
        return float("nan")
    a, b = rows[:-lag], rows[lag:]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    ok = norms > 0
    if not ok.any():
        return float("nan")
    return float(np.mean(np.sum(a[ok] * b[ok], axis=1) / norms[ok]))


def residual_lag_cosine(rows: np.ndarray, lag: int, window: int) -> float:
    """The helix statistic of a trajectory rows [n, p]: the residual of each snapshot (minus the mean
    of a centred window of ``window`` snapshots, one cycle: Sec. 4.2's w_res) against the residual
    ``lag`` snapshots later (one cycle), as the mean cosine over every pair the window allows.

    An ideal helix (constant radius, any drift that is linear over a window) gives 1; a random walk
    with independent isotropic steps 0 ± 1/√dim per pair when lag ≥ window."""
    return mean_lag_cosine(window_residual_rows(rows, window), lag)


def residual_lag_cosine_from_gram(gram: np.ndarray, lag: int, window: int) -> float:
    """``residual_lag_cosine`` of the snapshots whose Gram matrix is ``gram`` [n, n] (any common
    vector subtracted first: residuals do not see it)."""
    return residual_lag_cosine(factor_from_gram(gram), lag, window)


def random_walk_rows(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Rows [n, r] with the inner products of a Gaussian random walk of n snapshots in ``dim``
    dimensions (x_0 = 0, x_k = x_{k−1} + z_k, z_k ~ N(0, I)), in r = min(dim, n − 1) dimensions.

    Steps Z [n − 1, dim] have Gram Z Zᵀ ~ Wishart(dim, I); when dim ≥ n − 1 it is drawn through
    its Bartlett factor A (lower-triangular, A_ii = √χ²(dim − i), A_ij ~ N(0, 1)), which costs
    O(n²) whatever dim is: a walk the size of a model's weights is as cheap as a small one."""
    p = n - 1
    if dim < p:
        steps = rng.standard_normal((p, dim))
    else:
        steps = np.tril(rng.standard_normal((p, p)), -1)
        steps[np.diag_indices(p)] = np.sqrt(rng.chisquare(dim - np.arange(p)))
    return np.concatenate([np.zeros((1, steps.shape[1])), np.cumsum(steps, axis=0)])


def random_walk_null(
    n: int, dim: int, lag: int, window: int, *, walks: int = 200, seed: int = 0
) -> dict[str, float]:
    """``residual_lag_cosine`` of ``walks`` Gaussian random walks of the run's shape (n snapshots,
    ``dim`` dimensions), with a fixed seed: {"mean", "q975" (97.5th percentile), "walks", "seed"}."""
    rng = np.random.default_rng(seed)
    values = np.array([residual_lag_cosine(random_walk_rows(n, dim, rng), lag, window) for _ in range(walks)])
    return _null_summary(values, walks=walks, seed=seed)


def step_permutation_null(
    rows: np.ndarray, lag: int, window: int, *, walks: int = 200, seed: int = 0
) -> dict[str, float]:
    """``residual_lag_cosine`` of the trajectory rows [n, p] rebuilt from its own steps taken in a
    random order (``walks`` permutations, fixed seed): a random walk with the run's step sizes and
    directions, momentum and common drift, but no order. {"mean", "q975", "walks", "seed"}."""
    rows = np.asarray(rows, dtype=np.float64)
    steps = np.diff(rows, axis=0)  # [n − 1, p]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(walks):
        walk = np.cumsum(steps[rng.permutation(len(steps))], axis=0)
        values.append(residual_lag_cosine(np.concatenate([rows[:1], rows[:1] + walk]), lag, window))
    return _null_summary(np.array(values), walks=walks, seed=seed)


def _null_summary(values: np.ndarray, **about) -> dict[str, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"mean": float("nan"), "q975": float("nan"), **about}
    return {"mean": float(values.mean()), "q975": float(np.quantile(values, 0.975)), **about}


# --- position in the sequence against distance in the cycle (paper Fig. 8a) ----------------------
#
# Fig. 8a's finding is positional: gradients are most alike "near the center of the heat map rather
# than ... along the diagonal". A mean by cyclic distance mixes the two (central pairs are also
# near pairs), so a doc×doc matrix is split into a positional part, μ + a_i + a_j (each document's
# own level), and what is left, whose mean by cyclic distance is the distance pattern.


def position_fit(matrix: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares fit of the off-diagonal entries of a symmetric doc×doc matrix [T, T] (rows and
    columns in sequence order, T ≥ 3) by μ + a_i + a_j with Σ a = 0.

    Closed form of the normal equations: μ is the off-diagonal mean and
    a_i = (R_i − (T − 1) μ) / (T − 2), R_i the off-diagonal sum of row i (of (M + Mᵀ)/2).
    Returns (μ, a [T], residual [T, T] with NaN on the diagonal)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    T = matrix.shape[0]
    assert T >= 3, T
    sym = (matrix + matrix.T) / 2
    off = ~np.eye(T, dtype=bool)
    mu = float(sym[off].mean())
    row_sums = np.where(off, sym, 0.0).sum(axis=1)
    a = (row_sums - (T - 1) * mu) / (T - 2)
    residual = sym - mu - a[:, None] - a[None, :]
    residual[~off] = np.nan
    return mu, a, residual


def centre_mask(n_docs: int) -> np.ndarray:
    """[T] bool: the documents of the middle third of the sequence (positions ⌊T/3⌋ .. ⌈2T/3⌉ − 1)."""
    pos = np.arange(n_docs)
    return (pos >= n_docs // 3) & (pos < -(-2 * n_docs // 3))


def position_and_distance_effects(matrix: np.ndarray) -> dict:
    """The positional and the distance pattern of a doc×doc similarity [T, T] (sequence order).

    "positional_effect": mean a_i of the middle third minus mean a_i of the outer thirds (> 0: the
    centre of the sequence is more alike, Fig. 8a); "neighbour_effect": mean residual of pairs at
    cyclic distance 1 minus that of pairs further apart (> 0: neighbours are more alike beyond what
    their positions explain); "position_profile" a [T]; "distance_profile" [T//2]: mean residual by
    cyclic distance d = 1..T//2; "centre_pairs_mean" / "edge_pairs_mean": raw mean of pairs with both
    documents in the middle third / both in the outer thirds."""
    matrix = np.asarray(matrix, dtype=np.float64)
    T = matrix.shape[0]
    _, a, residual = position_fit(matrix)
    centre = centre_mask(T)
    i, j = np.indices((T, T))
    dist = cyclic_distance(i, j, T)
    off = i != j
    profile = np.array([_nanmean(residual[dist == d]) for d in range(1, T // 2 + 1)])
    both_centre = off & centre[i] & centre[j]
    both_edge = off & ~centre[i] & ~centre[j]
    return {
        "positional_effect": float(a[centre].mean() - a[~centre].mean()),
        "neighbour_effect": _nanmean(residual[dist == 1]) - _nanmean(residual[off & (dist > 1)]),
        "position_profile": a,
        "distance_profile": profile,
        "centre_pairs_mean": _nanmean(matrix[both_centre]),
        "edge_pairs_mean": _nanmean(matrix[both_edge]),
    }


def label_permutation_null(matrix: np.ndarray, *, permutations: int = 500, seed: int = 0) -> dict:
    """The two effects of ``position_and_distance_effects`` when the documents' places in the
    sequence are drawn at random (rows and columns permuted together; fixed seed): what they read
    with no link between a document's place and its similarities. Returns, per effect, {"mean",
    "q025", "q975"} over the permutations."""
    matrix = np.asarray(matrix, dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = {"positional_effect": [], "neighbour_effect": []}
    for _ in range(permutations):
        p = rng.permutation(matrix.shape[0])
        effects = position_and_distance_effects(matrix[np.ix_(p, p)])
        for key in draws:
            draws[key].append(effects[key])
    out = {}
    for key, values in draws.items():
        values = np.array(values)
        values = values[np.isfinite(values)]
        out[key] = {
            "mean": float(values.mean()) if len(values) else float("nan"),
            "q025": float(np.quantile(values, 0.025)) if len(values) else float("nan"),
            "q975": float(np.quantile(values, 0.975)) if len(values) else float("nan"),
        }
    out["permutations"], out["seed"] = permutations, seed
    return out
