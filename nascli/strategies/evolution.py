"""Evolutionary search (DetNAS §3.4 and its released search: population 50, the top 10 as parents,
20 mutations with per-gene probability 0.1, 20 crossovers, the rest random, 20 generations, every
child under a FLOPs limit and never one already seen) over any discrete space's decisions.

Generation 0 is `population` random valid architectures. Each later generation: the `parents`
fittest of everything evaluated so far; `mutations` children that resample each decision of a
random parent with probability `mutation_prob`; `crossovers` children that take each decision from
one of two random parents; random architectures for the rest. A child that breaks the constraint
or repeats one already asked is drawn again (a bounded number of times). A failed candidate
(reward None) is never a parent. `ask` returns nothing once `generations` are done.
"""

from __future__ import annotations

import numpy as np
from pydantic import ConfigDict, Field

from ..config import Spec, validate
from .base import Strategy


class EvolutionOptions(Spec):
    model_config = ConfigDict(extra="forbid")

    population: int = Field(50, ge=2)
    parents: int = Field(10, ge=1)
    mutations: int = Field(20, ge=0)
    crossovers: int = Field(20, ge=0)
    mutation_prob: float = Field(0.1, gt=0, le=1)
    generations: int = Field(20, ge=1)
    flops_limit: float | None = Field(None, gt=0, description="most multiply-adds of a child (paper: 300e6 at 224²)")
    flops_size: int = Field(224, ge=32, description="image side the FLOPs limit is measured at")


class EvolutionStrategy(Strategy):
    """See the module docstring. `cost(choices) -> FLOPs` is the space's unless given."""

    def __init__(self, space, seed: int = 0, cost=None, **options):
        super().__init__(space, seed)
        self.options = validate(EvolutionOptions, options, "proxy spec field 'evolution'")
        self._cost, self._costs = cost, {}
        self.state = {"generation": 0, "queue": [], "asked": [], "evaluated": [], "pending": 0}

    def cost(self, choices) -> float:
        key = tuple(choices)
        if key not in self._costs:
            if self._cost is not None:
                self._costs[key] = self._cost(list(choices))
            else:
                self._costs[key] = self.space.module.flops(self.space.decode(choices), self.options.flops_size)
        return self._costs[key]

    def allowed(self, choices) -> bool:
        limit = self.options.flops_limit
        return self.space.is_valid(choices) and (limit is None or self.cost(choices) <= limit)

    # ---------------------------------------------------------------- ask / tell

    def ask(self, n: int = 1) -> list:
        out = []
        for _ in range(n):
            s = self.state
            if not s["queue"] and s["pending"] == 0 and s["generation"] < self.options.generations:
                s["queue"] = self._generation()
                s["generation"] += 1
            if not s["queue"]:
                break
            choices = s["queue"].pop(0)
            s["pending"] += 1
            out.append(self.space.decode(choices))
        return out

    def tell(self, genotype, reward) -> None:
        s = self.state
        s["evaluated"].append([list(self.space.encode(genotype)), reward])
        s["pending"] = max(0, s["pending"] - 1)

    def _generation(self) -> list:
        o, s = self.options, self.state
        ranked = sorted((e for e in s["evaluated"] if e[1] is not None), key=lambda e: -e[1])
        parents = [e[0] for e in ranked[: o.parents]]
        children = []
        if parents and s["generation"] > 0:
            children += self._children(o.mutations, lambda: self._mutate(parents))
            children += self._children(o.crossovers, lambda: self._crossover(parents), taken=children)
        children += self._children(o.population - len(children), self._random, taken=children)
        return children

    def _children(self, count: int, draw, taken=(), tries: int = 100) -> list:
        """`count` distinct allowed children never asked before (fewer if the space runs out)."""
        seen = {tuple(c) for c in self.state["asked"]} | {tuple(c) for c in taken}
        out = []
        for _ in range(count):
            for _ in range(tries):
                child = draw()
                if tuple(child) not in seen and self.allowed(child):
                    seen.add(tuple(child))
                    out.append(child)
                    self.state["asked"].append(child)
                    break
        return out

    def _random(self) -> list:
        return [int(self.rng.integers(d.options)) for d in self.decisions]

    def _mutate(self, parents) -> list:
        parent = parents[int(self.rng.integers(len(parents)))]
        return [int(self.rng.integers(d.options)) if self.rng.random() < self.options.mutation_prob else c
                for c, d in zip(parent, self.decisions)]

    def _crossover(self, parents) -> list:
        a = parents[int(self.rng.integers(len(parents)))]
        b = parents[int(self.rng.integers(len(parents)))]
        return [x if self.rng.random() < 0.5 else y for x, y in zip(a, b)]

    # ---------------------------------------------------------------- resume

    def best(self) -> tuple:
        """(choices, reward) of the fittest evaluated candidate."""
        ok = [e for e in self.state["evaluated"] if e[1] is not None]
        return tuple(max(ok, key=lambda e: e[1])) if ok else (None, None)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "state": self.state}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.state = state["state"]
