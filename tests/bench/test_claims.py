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
    written = re.search(rf"(?<![\d.]){re.escape(f'{claim.shown:g}')}(0*)(?![\d])", claim.words)
    assert written, claim
    assert (ROOT / "benchmarks" / claim.json).is_file()
    # as many places as the README writes ("0.90": 2); it rounds half up: 228.5 an hour reads 229
    places = decimals(claim.shown) + len(written.group(1)) if "." in written.group(0) else decimals(claim.shown)
    assert abs(claim.held() - claim.shown) <= 10 ** -places / 2 + 1e-9, \
        f"{claim.json} holds {claim.held()}, README.md says {claim.shown}"


def test_every_cited_json_has_a_target_that_writes_it():
    makefile = (ROOT / "Makefile").read_text()
    for claim in CLAIMS:
        target = claim.target.split()[1]
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), (claim.target, claim.json)
