"""Small-sample statistics for the verdicts: Student's t quantile and the paired test verdict.

Why not z = 2: verdicts here rest on 2-5 seeds, where the 97.5 % t quantile is 12.7 (1 degree of
freedom), 4.30 (2) or 3.18 (3); a z-threshold would call seed noise a win. scipy is a test-only
dependency, so the quantile is computed here (Simpson's rule on the t density, then bisection)
and tested against scipy.stats.t.ppf.
"""

from __future__ import annotations

import functools
import math


#: The smallest test-AP gain (AP points) that counts as a win: seed noise from 2-3 seeds can be
#: estimated near zero by chance, and near AP 0 every difference is; the goal is >= 1 AP.
MIN_GAIN = 1.0


def t_pdf(x: float, dof: float) -> float:
    log_norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)
    return math.exp(log_norm - (dof + 1) / 2 * math.log1p(x * x / dof))


def t_cdf(x: float, dof: float) -> float:
    """P(T <= x) for Student's t with `dof` degrees of freedom (x >= 0 integrated, symmetry below)."""
    if x < 0:
        return 1.0 - t_cdf(-x, dof)
    n = 2000  # even; the density is smooth, so Simpson's error is far below 1e-9 here
    h = x / n
    total = t_pdf(0.0, dof) + t_pdf(x, dof)
    total += sum((4 if k % 2 else 2) * t_pdf(k * h, dof) for k in range(1, n))
    return 0.5 + total * h / 3


@functools.lru_cache(maxsize=1024)
def t_quantile(p: float, dof: float) -> float:
    """The x with P(T <= x) = p, for 0.5 <= p < 1 (bisection to 1e-9; remembered, as verdicts
    ask for the same few quantiles again and again)."""
    if not 0.5 <= p < 1 or dof <= 0:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and dof > 0, got p={p}, dof={dof}")
    lo, hi = 0.0, 1.0
    while t_cdf(hi, dof) < p:
        hi *= 2
    while hi - lo > 1e-9:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, dof) < p else (lo, mid)
    return (lo + hi) / 2


def mean_std(values) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None where undefined)."""
    values = list(values)
    n = len(values)
    if not n:
        return None, None
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else None
    return mean, std


def paired_difference(a: dict, b: dict, level: float = 0.95) -> dict:
    """Whether `a` beats `b` beyond seed noise, paired by seed: a and b map seed -> score.

    On the seeds both have, d = a - b; `a` beats `b` when mean(d) exceeds the two-sided t
    threshold t(1 - (1 - level)/2, n - 1) · sd(d) / sqrt(n). Needs two common seeds."""
    seeds = sorted(set(a) & set(b), key=str)
    diffs = [a[s] - b[s] for s in seeds]
    mean, sd = mean_std(diffs)
    n = len(diffs)
    if n < 2:
        return {"n": n, "difference": mean, "se": None, "threshold": None, "beats": None}
    se = sd / math.sqrt(n)
    threshold = t_quantile(1 - (1 - level) / 2, n - 1) * se
    return {"n": n, "difference": mean, "se": se, "threshold": threshold, "beats": mean > threshold}


def paired_p_value(difference: float | None, se: float | None, n: int) -> float | None:
    """One-sided p of a paired mean difference > 0 (Student's t, n - 1 degrees of freedom): the
    test the verdict's threshold t(0.975, n - 1)·s.e. makes at level 0.025."""
    if difference is None or se is None or n < 2:
        return None
    if se == 0:
        return 0.0 if difference > 0 else 1.0
    return 1.0 - t_cdf(difference / se, n - 1)


def holm(p_values: dict, alpha: float = 0.025) -> dict:
    """Holm's step-down over a family: sorted ascending, the k-th smallest (from 0) passes while
    p <= alpha / (K - k); the first that fails stops it. Returns name -> passed. Why: with K promoted
    architectures each tested at alpha on its own, "any one wins" happens by chance ~K·alpha of
    the time; Holm keeps the family's rate at alpha and is never weaker than Bonferroni."""
    order = sorted(p_values, key=lambda k: p_values[k])
    passed, family = {}, len(order)
    for rank, name in enumerate(order):
        ok = p_values[name] <= alpha / (family - rank) and all(passed.values())
        passed[name] = ok
    return passed


def seeds_for_power(sd: float, gain: float, alpha: float = 0.025, power: float = 0.8, cap: int = 100) -> int | None:
    """Paired seeds a one-sided t test at `alpha` needs to find a true mean difference of `gain`
    with probability `power`, at a seed-to-seed sd of the differences `sd`: the smallest n >= 2
    with gain·sqrt(n)/sd >= t(1 - alpha, n - 1) + t(power, n - 1) (the usual central-t
    approximation of the noncentral power; tested against scipy's noncentral t). None above `cap`."""
    if sd <= 0:
        return 2

    def enough(n: int) -> bool:  # grows with n (the left side rises, the quantiles fall): bisect
        return gain * math.sqrt(n) / sd >= t_quantile(1 - alpha, n - 1) + t_quantile(power, n - 1)

    if not enough(cap):
        return None
    lo, hi = 2, cap
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid + 1, hi)
    return lo
