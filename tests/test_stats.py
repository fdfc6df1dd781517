"""The small-sample statistics behind the verdicts, against scipy."""

import pytest
import scipy.stats

from nascli.stats import paired_difference, t_cdf, t_quantile


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 7, 19, 60])
def test_t_quantile_and_cdf_equal_scipy(dof):
    for p in (0.5, 0.9, 0.975, 0.995):
        assert t_quantile(p, dof) == pytest.approx(scipy.stats.t.ppf(p, dof), abs=1e-6)
    for x in (-3.0, 0.0, 1.3, 12.7):
        assert t_cdf(x, dof) == pytest.approx(scipy.stats.t.cdf(x, dof), abs=1e-8)


def test_paired_difference_equals_a_paired_t_test():
    """mean(d) > t·se is the one-sided half of a two-sided paired t-test at 5 %: the same call as
    scipy's p-value < 0.05 with a positive mean difference."""
    a = {0: 21.0, 1: 19.5, 2: 22.0, 3: 20.4}
    for shift, noise in ((2.0, [0.3, -0.2, 0.1, -0.4]), (0.5, [0.9, -1.1, 0.4, -0.8]), (-1.0, [0.1, 0.2, -0.1, 0.0])):
        b = {s: v - shift + e for (s, v), e in zip(a.items(), noise)}
        r = paired_difference(a, b)
        test = scipy.stats.ttest_rel(list(a.values()), [b[s] for s in a])
        assert r["n"] == 4 and r["difference"] == pytest.approx(sum(a[s] - b[s] for s in a) / 4)
        assert r["beats"] == (test.pvalue < 0.05 and r["difference"] > 0)


def test_paired_difference_pairs_by_seed_and_needs_two():
    a, b = {0: 10.0, 1: 11.0, 5: 50.0}, {0: 9.0, 1: 9.5, 7: 0.0}  # seeds 5 and 7 have no partner
    r = paired_difference(a, b)
    assert r["n"] == 2 and r["difference"] == pytest.approx(1.25)
    assert r["threshold"] == pytest.approx(scipy.stats.t.ppf(0.975, 1) * 0.25, rel=1e-6)  # sd 0.354, se 0.25
    assert r["beats"] is False  # 1.25 < 12.7 · 0.25
    assert paired_difference({0: 1.0}, {0: 0.0})["beats"] is None
