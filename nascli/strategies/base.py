"""The strategy contract (NNI-style): ask for genotypes, tell their results, save and restore.

A strategy never trains a candidate and never touches the run database: `run_search` evaluates
what it asks for, commits each result, then tells it. `state_dict()` must hold everything needed
to continue exactly (random state included), so a resumed search asks what the uninterrupted one
would have asked.
"""

from __future__ import annotations

import numpy as np


class Strategy:
    """Base of the discrete strategies: samples valid decision sequences of `space`.
    `graded_skips`: a candidate skipped over the latency target is told a reward graded by how far
    over it is (a learner gets a direction), not None (never a parent; random ignores both)."""

    graded_skips = False

    def __init__(self, space, seed: int = 0, **options):
        self.space = space
        self.decisions = space.decisions()
        self.rng = np.random.default_rng(seed)
        self.options = options

    def ask(self, n: int = 1) -> list:
        raise NotImplementedError

    def tell(self, genotype, reward: float | None) -> None:
        """`reward` is None for a failed trial (diverged, out of memory)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def discarded(self) -> list[str]:
        """Tags of candidates whose saved weights no later candidate will inherit (SP-NAS's
        morphism): the search deletes their files. Strategies that inherit nothing keep none."""
        return []

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]

    def sample_valid(self, draw, max_tries: int = 1000) -> list[int]:
        """Redraws (rejection sampling) until the space accepts the choices."""
        for _ in range(max_tries):
            choices = draw()
            if self.space.is_valid(choices):
                return choices
        raise StrategyExhausted(f"the strategy drew no valid architecture in {max_tries} draws (its sampling "
                                f"collapsed onto invalid choices, or the space spec is too tight)")


class StrategyExhausted(RuntimeError):
    """The strategy can propose nothing more: the search stops asking and says why (a run, not a crash)."""
