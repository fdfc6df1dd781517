"""Every number of README.md's results that benchmarks/claims.py lists is what its json holds, at
the README's rounding, and README.md still says it in those words."""

import re
from pathlib import Path

import pytest

from benchmarks.claims import CLAIMS, ROOT, decimals

README = " ".join((ROOT / "README.md").read_text().split())


@pytest.mark.parametrize("claim", CLAIMS, ids=[f"{c.json}:{c.shown:g}" for c in CLAIMS])
def test_the_readme_says_what_its_json_holds(claim):
    assert " ".join(claim.words.split()) in README, f"README.md no longer says: {claim.words}"
    assert re.search(rf"(?<![\d.]){re.escape(f'{claim.shown:g}')}(?![\d])", claim.words), claim
    assert (ROOT / "benchmarks" / claim.json).is_file()
    places = decimals(claim.shown)  # the README rounds half up: 228.5 evaluations an hour reads 229
    assert abs(claim.held() - claim.shown) <= 10 ** -places / 2 + 1e-9, \
        f"{claim.json} holds {claim.held()}, README.md says {claim.shown}"


def test_every_cited_json_has_a_target_that_writes_it():
    makefile = (ROOT / "Makefile").read_text()
    for claim in CLAIMS:
        target = claim.target.split()[1]
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), (claim.target, claim.json)
