"""The statistics behind every comparison in a report: intervals, paired tests, verdicts.

The distributions and exact tests are scipy.stats'; what is ours is which formula each comparison uses:

- one accuracy k/n: the **Wilson score interval** (good coverage at small n and near 0 or 1, where
  the normal "Wald" interval fails; ``scipy.stats.binomtest(...).proportion_ci(method="wilson")``);
- two models on the same questions: the **exact McNemar test** (the discordant pairs b, c under H0 are
  Binomial(b + c, 1/2): ``scipy.stats.binomtest``), and the difference's **Newcombe hybrid score
  interval** for paired proportions (Newcombe 1998, method 10, with its continuity-corrected
  correlation, as in Fagerland, Lydersen & Laake 2017, ch. 8; no library has it, so it is written here
  on top of the Wilson intervals);
- several seeds: mean, sample std, the **Student t interval** (``scipy.stats.t``) and the one-sample t
  test (``scipy.stats.ttest_1samp``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

ALPHA = 0.05


def wilson_interval(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Return the (1 - alpha) Wilson score interval of the proportion k/n, as shares in [0, 1].

    Raises ValueError unless 0 <= k <= n and n > 0."""
    from scipy.stats import binomtest  # heavy: scipy loads only when a report is written

    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"wilson_interval: need 0 <= k <= n and n > 0, got k={k}, n={n}")
    ci = binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def mcnemar_exact(b: int, c: int) -> float:
    """Return the two-sided exact McNemar p-value for discordant counts b and c (1.0 when b = c = 0).

    Under H0 (both models equally accurate) b ~ Binomial(b + c, 1/2)."""
    from scipy.stats import binomtest  # heavy: scipy loads only when a report is written

    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact: counts must be >= 0, got b={b}, c={c}")
    return 1.0 if b + c == 0 else min(1.0, float(binomtest(b, b + c, 0.5).pvalue))


def newcombe_paired_interval(both: int, only_a: int, only_b: int, neither: int,
                             alpha: float = ALPHA) -> tuple[float, float]:
    """Return the (1 - alpha) interval of p_a - p_b for paired binary outcomes (Newcombe method 10).

    ``both``: pairs where A and B are right; ``only_a``: A right, B wrong; ``only_b``: the reverse;
    ``neither``: both wrong. Result as shares in [-1, 1]."""
    n = both + only_a + only_b + neither
    if n <= 0:
        raise ValueError("newcombe_paired_interval: no pairs")
    a_right, b_right = both + only_a, both + only_b
    pa, pb = a_right / n, b_right / n
    la, ua = wilson_interval(a_right, n, alpha)
    lb, ub = wilson_interval(b_right, n, alpha)
    margins = (a_right, n - a_right, b_right, n - b_right)
    psi = 0.0
    if all(margins):
        cross = both * neither - only_a * only_b
        # Newcombe's continuity correction: a small positive association counts as none.
        if cross > n / 2:
            psi = (cross - n / 2) / math.sqrt(math.prod(margins))
        elif cross < 0:
            psi = cross / math.sqrt(math.prod(margins))
    diff = pa - pb
    lower = diff - math.sqrt(max(0.0, (pa - la) ** 2 + (ub - pb) ** 2 - 2 * psi * (pa - la) * (ub - pb)))
    upper = diff + math.sqrt(max(0.0, (pb - lb) ** 2 + (ua - pa) ** 2 - 2 * psi * (pb - lb) * (ua - pa)))
    return max(-1.0, lower), min(1.0, upper)


@dataclass(frozen=True)
class SeedSummary:
    """Mean, sample std and (1 - alpha) t interval of one quantity over seeds (std/interval None for n = 1)."""
    n: int
    mean: float
    std: float | None
    lower: float | None
    upper: float | None
    p_value: float | None  # two-sided one-sample t test of mean = 0 (None: one value, or no spread)


def seed_summary(values: list[float], alpha: float = ALPHA) -> SeedSummary:
    """Return mean, std and the t interval of ``values`` (one per seed). Raises ValueError when empty."""
    if not values:
        raise ValueError("seed_summary: no values")
    n, mean = len(values), statistics.fmean(values)
    if n == 1:
        return SeedSummary(1, mean, None, None, None, None)
    from scipy import stats  # heavy: scipy loads only when a report is written

    std = statistics.stdev(values)
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * std / math.sqrt(n)
    # No spread over seeds: the t statistic is undefined (not infinitely significant).
    p = float(stats.ttest_1samp(values, 0.0).pvalue) if std > 0 else None
    return SeedSummary(n, mean, std, mean - half, mean + half, p)


def verdict(p_value: float | None, difference: float, alpha: float = ALPHA) -> str:
    """Return "better", "worse" or "within noise": the sign of ``difference`` when p < alpha."""
    if p_value is None or p_value >= alpha or difference == 0:
        return "within noise"
    return "better" if difference > 0 else "worse"


@dataclass(frozen=True)
class PairedComparison:
    """Model A vs model B on the rows both answered (A - B, in shares)."""
    paired: int
    a_correct: int
    b_correct: int
    only_a: int      # A right, B wrong
    only_b: int      # B right, A wrong
    only_in_a: int   # rows A has and B lacks (left out of the test)
    only_in_b: int
    difference: float
    lower: float
    upper: float
    p_value: float

    @property
    def verdict(self) -> str:
        """A vs B at alpha 0.05: better / worse / within noise."""
        return verdict(self.p_value, self.difference)


def compare_paired(a: dict, b: dict, alpha: float = ALPHA) -> PairedComparison | None:
    """Compare two models' per-row correctness, ``{key: bool}`` each (key: benchmark, question, sample).

    Only keys in both are paired; those in one only are counted (``only_in_a``/``only_in_b``), never
    silently dropped. Returns None when no key is shared."""
    keys = a.keys() & b.keys()
    if not keys:
        return None
    both = sum(1 for k in keys if a[k] and b[k])
    only_a = sum(1 for k in keys if a[k] and not b[k])
    only_b = sum(1 for k in keys if b[k] and not a[k])
    neither = len(keys) - both - only_a - only_b
    lower, upper = newcombe_paired_interval(both, only_a, only_b, neither, alpha)
    return PairedComparison(len(keys), both + only_a, both + only_b, only_a, only_b, len(a.keys() - keys),
                            len(b.keys() - keys), (only_a - only_b) / len(keys), lower, upper,
                            mcnemar_exact(only_a, only_b))
