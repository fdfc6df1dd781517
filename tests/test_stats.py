"""The small-sample statistics behind the verdicts, against scipy."""

import pytest
import scipy.stats

from nascli.stats import holm, paired_difference, paired_p_value, t_cdf, t_quantile


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


def test_paired_p_value_equals_scipys_one_sided_paired_t_test():
    a, b = [0.215, 0.230, 0.230, 0.241], [0.200, 0.220, 0.210, 0.230]
    d = paired_difference(dict(enumerate(a)), dict(enumerate(b)))
    expected = scipy.stats.ttest_rel(a, b, alternative="greater").pvalue
    assert paired_p_value(d["difference"], d["se"], d["n"]) == pytest.approx(expected, rel=1e-6)
    # the verdict's threshold and the p-value make the same decision at 0.025
    assert (d["difference"] > d["threshold"]) == (paired_p_value(d["difference"], d["se"], d["n"]) < 0.025)
    assert paired_p_value(None, None, 1) is None and paired_p_value(1.0, 0.0, 3) == 0.0


def test_holm_steps_down_and_stops_at_the_first_failure():
    # by hand, alpha 0.05 over 3: a 0.01 <= 0.05/3 passes; c 0.03 > 0.05/2 fails and stops; b fails
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}, alpha=0.05) == {"a": True, "b": False, "c": False}
    # all pass: 0.001 <= 0.0167, 0.02 <= 0.025, 0.04 <= 0.05 (Bonferroni would reject only the first)
    assert holm({"a": 0.001, "b": 0.02, "c": 0.04}, alpha=0.05) == {"a": True, "b": True, "c": True}
    assert holm({"only": 0.02}, alpha=0.025) == {"only": True} and holm({}) == {}


@pytest.mark.parametrize("sd, gain, alpha", [(1.0, 1.0, 0.025), (2.5, 1.0, 0.0125), (0.3, 1.0, 0.025),
                                             (40.0, 1.0, 0.025)])
def test_seeds_for_power_reach_80_percent_by_the_noncentral_t(sd, gain, alpha):
    from nascli.stats import seeds_for_power

    def exact(n):  # P(reject) of the one-sided paired t test when the true mean difference is `gain`
        return 1 - scipy.stats.nct.cdf(scipy.stats.t.ppf(1 - alpha, n - 1), n - 1, gain * n ** 0.5 / sd)

    n = seeds_for_power(sd, gain, alpha)
    if n is None:
        assert exact(100) < 0.8
        return
    assert exact(n) >= 0.75 and (n == 2 or exact(n - 1) < 0.8)
