"""Uniform random search over any discrete space: the baseline every method is measured against."""

from __future__ import annotations

from .base import Strategy


class RandomStrategy(Strategy):
    """Each decision uniform over its options; invalid architectures are redrawn."""

    def ask(self, n: int = 1) -> list:
        return [self.space.decode(self.sample_valid(
            lambda: [int(self.rng.integers(d.options)) for d in self.decisions])) for _ in range(n)]

    def tell(self, genotype, reward) -> None:
        pass  # random search learns nothing
