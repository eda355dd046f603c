"""Determinantal point process (DPP) for the rerank stage: kernel construction and greedy
MAP inference, numpy only.

Kernel (Chen, Zhang, Zhou, "Fast Greedy MAP Inference for Determinantal Point Process to
Improve Recommendation Diversity", NeurIPS 2018, section 5):

    L = diag(r) · S · diag(r)

r_u > 0 is the ranker's relevance of video u, S a PSD similarity (cosine of video vectors,
optionally plus "same song" / "same uploader" priors). log det(L_Y) = Σ log r_u² + log det(S_Y),
so relevance and diversity are traded inside one determinant. Chen et al. weight the two
with θ ∈ [0, 1):  θ·Σ_{u∈Y} r_u + (1−θ)·log det(S_Y), which is (up to the factor 1−θ) the
log det of the DPP with r'_u = exp(α·r_u), α = θ / (2(1−θ)). θ → 0 is pure diversity,
θ → 1 pure relevance order.

MAP inference (argmax_Y det L_Y, |Y| = k) is NP-hard; the greedy algorithm adds, at each
step, the item with the largest marginal gain log det(L_{Y∪i}) − log det(L_Y) = log d_i².
`greedy_map` computes every d_i² incrementally from the Cholesky factor of L_Y (Chen et al.
Algorithm 1): O(N·k) per step, O(N·k²) total, against O(N·k³) per step (O(N·k⁴) total) for
the naive greedy that recomputes each log-det (`naive_greedy_map`, kept for tests and the
benchmark). `greedy_map_window` is the sliding-window variant (Algorithm 2): a new item only
has to differ from the w−1 items placed just before it, which is what a user scrolling a
page sees; the oldest item leaves the factor by Givens rotations, O(N·w) per step.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

DEFAULT_EPS = 1e-10  # a marginal gain d_i² below this means L_{Y∪i} is (numerically) singular


def theta_to_alpha(theta: float) -> float:
    """Chen et al.: θ·Σr + (1−θ)·log det S  ⇔  DPP with r' = exp(α·r), α = θ / (2(1−θ))."""
    if not (0.0 <= theta < 1.0):
        raise ValueError(f"theta must be in [0, 1) (0 = pure diversity, → 1 = pure relevance), got {theta}")
    return theta / (2.0 * (1.0 - theta))


def relevance_weights(scores: Sequence[float], theta: float = 0.7, mode: str = "exp", normalize: str = "minmax",
                      floor: float = 0.05) -> np.ndarray:
    """The ranker's scores → positive relevance r for the kernel.

    normalize="minmax" maps the candidates' scores to [0, 1] first, so θ means the same
    whatever the ranker's scale (formula scores in ~[0, 1], model logits, probabilities).
    mode="exp": r = exp(α(θ)·s) (Chen et al.); mode="linear": r = s + floor (θ unused)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError("scores must be a 1-d sequence")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if normalize == "minmax":
        span = float(s.max() - s.min()) if s.size else 0.0
        s = (s - s.min()) / span if span > 0 else np.ones_like(s)
    elif normalize != "none":
        raise ValueError(f"normalize must be 'minmax' or 'none', got {normalize!r}")
    if mode == "exp":
        # exp(α(s − max s)): a common factor scales det L_Y by a constant for every |Y| = k,
        # so the picks are unchanged, and r stays in (0, 1] (no overflow as θ → 1; the top
        # video's L_ii = 1, which is what the stopping threshold eps is relative to).
        return np.exp(theta_to_alpha(theta) * (s - s.max(initial=0.0)))
    if mode == "linear":
        r = s - min(0.0, float(s.min(initial=0.0))) + floor
        return r
    raise ValueError(f"relevance mode must be 'exp' or 'linear', got {mode!r}")


def group_matrix(keys: Sequence[str | None]) -> np.ndarray:
    """1 where two items share a key (same song, same uploader), 1 on the diagonal.

    An equivalence relation gives a block-diagonal all-ones matrix, which is PSD, so adding
    it to S keeps the kernel a valid DPP kernel (an "any shared song" relation would not be:
    it is not transitive). An item without a key is a group of its own."""
    codes: dict[str, int] = {}
    ids = np.array([codes.setdefault(k, len(codes)) if k is not None else -1 - i for i, k in enumerate(keys)], dtype=np.int64)
    return (ids[:, None] == ids[None, :]).astype(np.float64)


def similarity(vectors: np.ndarray, priors: Sequence[tuple[Sequence[str | None], float]] = ()) -> np.ndarray:
    """S = (cos(v_i, v_j) + Σ_g w_g·[same key_g]) / (1 + Σ_g w_g): PSD with unit diagonal.

    A video without a vector (no known tokens) is treated as orthogonal to every other one
    (unit diagonal), not as a zero row that the DPP could never select."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError("vectors must be a 2-d array (items × dims)")
    norms = np.linalg.norm(v, axis=1)
    empty = norms == 0
    e = v / np.where(empty, 1.0, norms)[:, None]
    s = e @ e.T
    s[np.diag_indices_from(s)] = 1.0
    total = 1.0
    for keys, w in priors:
        if w < 0:
            raise ValueError(f"prior weights must be >= 0, got {w}")
        if w == 0:
            continue
        if len(keys) != v.shape[0]:
            raise ValueError(f"prior has {len(keys)} keys for {v.shape[0]} items")
        s += w * group_matrix(keys)
        total += w
    return s / total


def dpp_kernel(relevance: np.ndarray, sim: np.ndarray) -> np.ndarray:
    r = np.asarray(relevance, dtype=np.float64)
    if np.any(r <= 0):
        raise ValueError("relevance weights must be positive")
    return r[:, None] * sim * r[None, :]


def _check(kernel: np.ndarray, k: int) -> int:
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"kernel must be square, got shape {kernel.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return min(k, kernel.shape[0])


def greedy_map(kernel: np.ndarray, k: int, eps: float = DEFAULT_EPS) -> tuple[list[int], list[float]]:
    """Fast greedy MAP (Chen et al. Algorithm 1). Returns the picked indices in pick order
    and each pick's marginal gain d² (det L_{Y∪j} / det L_Y). Stops early when every
    remaining gain is below eps (the rest is linearly dependent on what was picked).

    Invariant: for a selected set Y with Cholesky L_Y = V Vᵀ, c_i = V⁻¹ L_{Y,i} and
    d_i² = L_ii − ‖c_i‖². Adding j appends row e_i = (L_ji − ⟨c_j, c_i⟩)/d_j to every c_i
    and lowers d_i² by e_i², so no determinant or solve is ever computed."""
    L = np.asarray(kernel, dtype=np.float64)
    k = _check(L, k)
    n = L.shape[0]
    c = np.zeros((k, n))
    d2 = np.diag(L).copy()
    free = np.ones(n, dtype=bool)
    picked: list[int] = []
    gains: list[float] = []
    while len(picked) < k:
        masked = np.where(free, d2, -np.inf)
        j = int(np.argmax(masked))
        if masked[j] < eps:
            break
        t = len(picked)
        dj = math.sqrt(d2[j])
        picked.append(j)
        gains.append(float(d2[j]))
        free[j] = False
        if len(picked) == k:
            break
        e = (L[j] - c[:t, j] @ c[:t]) / dj
        c[t] = e
        d2 -= e * e
    return picked, gains


def greedy_map_window(kernel: np.ndarray, k: int, window: int, eps: float = DEFAULT_EPS) -> tuple[list[int], list[float]]:
    """Sliding-window greedy MAP (Chen et al. Algorithm 2): each new pick maximizes
    det L_{W∪i} / det L_W where W is the window − 1 most recent picks. window >= k is the
    full greedy; window = 1 is plain relevance order.

    When the window is full the oldest pick leaves: with the factor V of L_W and
    C = V⁻¹ L_{W,:}, rows 2.. of V are rotated (Givens, columns 1 and j) until column 1 is
    zero; the remaining block is the Cholesky factor of the smaller window, the same
    rotations applied to the rows of C give its C, and the dropped row's squared entries
    are added back to d². O(N·w) per step."""
    L = np.asarray(kernel, dtype=np.float64)
    k = _check(L, k)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    n = L.shape[0]
    cap = max(1, min(window, k))
    v = np.zeros((cap, cap))   # Cholesky factor of the window (lower triangular), first m rows used
    c = np.zeros((cap, n))     # V⁻¹ L_{W,:}
    m = 0
    d2 = np.diag(L).copy()
    free = np.ones(n, dtype=bool)
    picked: list[int] = []
    gains: list[float] = []
    while len(picked) < k:
        masked = np.where(free, d2, -np.inf)
        j = int(np.argmax(masked))
        if masked[j] < eps:
            break
        dj = math.sqrt(d2[j])
        picked.append(j)
        gains.append(float(d2[j]))
        free[j] = False
        if len(picked) == k:
            break
        # append j to the window: its factor row is (c_j, d_j)
        v[m, :m] = c[:m, j]
        v[m, m] = dj
        e = (L[j] - c[:m, j] @ c[:m]) / dj
        c[m] = e
        d2 -= e * e
        m += 1
        if m > window - 1:  # the oldest pick leaves the window
            # The rotations act on the rows of C as one m×m orthogonal map: accumulate it on a
            # small identity and apply it to C in one product (O(m²·N), one call, instead of
            # 2(m−1) vector updates in Python).
            rot = np.eye(m)
            for r in range(1, m):
                a, b = v[r, 0], v[r, r]
                h = math.hypot(a, b)
                cs, sn = b / h, a / h
                col_r, col_0 = v[r:m, r].copy(), v[r:m, 0].copy()
                v[r:m, r] = cs * col_r + sn * col_0
                v[r:m, 0] = cs * col_0 - sn * col_r
                row_r, row_0 = rot[r].copy(), rot[0].copy()
                rot[r] = cs * row_r + sn * row_0
                rot[0] = cs * row_0 - sn * row_r
            c[:m] = rot @ c[:m]
            d2 += c[0] * c[0]
            v[: m - 1, : m - 1] = v[1:m, 1:m].copy()
            c[: m - 1] = c[1:m].copy()
            m -= 1
            v[m, :] = 0.0
            v[:, m] = 0.0
            c[m] = 0.0
    return picked, gains


def log_det(kernel: np.ndarray, items: Sequence[int]) -> float:
    """log det L_Y (−inf when singular), with numpy's slogdet."""
    if not len(items):
        return 0.0
    idx = np.asarray(items)
    sign, ld = np.linalg.slogdet(np.asarray(kernel)[np.ix_(idx, idx)])
    return float(ld) if sign > 0 else -math.inf


def naive_greedy_map(kernel: np.ndarray, k: int, eps: float = DEFAULT_EPS, window: int | None = None) -> tuple[list[int], list[float]]:
    """Reference greedy: at every step recompute log det(L_{W∪i}) with slogdet for every
    remaining i (W = all picks, or the window − 1 most recent). O(N·k³) per step. The
    determinants of one step are computed as one stacked slogdet call (numpy's fastest
    way), so the benchmark compares algorithms, not Python loops."""
    L = np.asarray(kernel, dtype=np.float64)
    k = _check(L, k)
    n = L.shape[0]
    picked: list[int] = []
    gains: list[float] = []
    log_eps = math.log(eps) if eps > 0 else -math.inf
    while len(picked) < k:
        ctx = picked if window is None else (picked[max(0, len(picked) - (window - 1)):] if window > 1 else [])
        cand = np.array([i for i in range(n) if i not in set(picked)])
        if cand.size == 0:
            break
        base = log_det(L, ctx)
        idx = np.concatenate([np.tile(np.asarray(ctx, dtype=int), (cand.size, 1)), cand[:, None]], axis=1)
        sub = L[idx[:, :, None], idx[:, None, :]]
        sign, ld = np.linalg.slogdet(sub)
        gain = np.where(sign > 0, ld - base, -np.inf)
        b = int(np.argmax(gain))
        if gain[b] < log_eps:
            break
        picked.append(int(cand[b]))
        gains.append(float(math.exp(gain[b])))
    return picked, gains


def brute_force_map(kernel: np.ndarray, k: int) -> tuple[tuple[int, ...], float]:
    """Exact MAP over all subsets of size k (tests only: C(N, k) determinants)."""
    from itertools import combinations

    L = np.asarray(kernel, dtype=np.float64)
    best, best_ld = (), -math.inf
    for sub in combinations(range(L.shape[0]), k):
        ld = log_det(L, sub)
        if ld > best_ld:
            best, best_ld = sub, ld
    return best, best_ld


__all__ = ["theta_to_alpha", "relevance_weights", "group_matrix", "similarity", "dpp_kernel", "greedy_map",
           "greedy_map_window", "naive_greedy_map", "brute_force_map", "log_det", "DEFAULT_EPS"]
