"""Strategies on a toy space with a known optimum (NNI's way of testing them)."""

import io
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from nascli.methods import lookup
from nascli.strategies.base import Strategy
from nascli.strategies.controller import ControllerStrategy
from nascli.strategies.random import RandomStrategy


@dataclass(frozen=True)
class ToyGenotype:
    choices: tuple

    def to_json(self):
        return str(list(self.choices))


@dataclass(frozen=True)
class Decision:
    name: str
    options: int


class ToySpace:
    """8 decisions of 4 options; the best architecture picks option 2 everywhere. Sequences
    starting with 3 are invalid (stands in for NAS-FCOS's dangling-output rule)."""

    def decisions(self):
        return [Decision(f"d{k}", 4) for k in range(8)]

    def decode(self, choices):
        return ToyGenotype(tuple(choices))

    def encode(self, g):
        return list(g.choices)

    def is_valid(self, choices):
        return choices[0] != 3


def toy_reward(g):
    return float(np.mean([c == 2 for c in g.choices]))


def mean_reward(strategy, n=200):
    return np.mean([toy_reward(g) for g in strategy.ask(n)])


def test_random_is_uniform_over_valid_sequences():
    s = RandomStrategy(ToySpace(), seed=0)
    gs = s.ask(2000)
    firsts = np.bincount([g.choices[0] for g in gs], minlength=4)
    assert firsts[3] == 0 and all(abs(f / 2000 - 1 / 3) < 0.04 for f in firsts[:3])
    assert abs(np.mean([g.choices[5] == 1 for g in gs]) - 0.25) < 0.04


def test_ppo_controller_improves_expected_reward():
    s = ControllerStrategy(ToySpace(), seed=0, lr=0.005, batch=8, entropy=1e-2)
    before = mean_reward(ControllerStrategy(ToySpace(), seed=1))
    for _ in range(40):
        for g in s.ask(8):
            s.tell(g, toy_reward(g))
    assert s.updates == 40
    after = mean_reward(s)
    assert before < 0.35 and after > before + 0.3
    assert all(p.argmax() == 2 for p in s.expected_choices())


def test_failed_trials_count_as_the_worst_reward():
    s = ControllerStrategy(ToySpace(), seed=0, batch=100)
    a, b = s.ask(2)
    s.tell(a, 0.5)
    s.tell(b, None)
    assert s.worst == 0.5 and len(s.buffer) == 2


@pytest.mark.parametrize("name", sorted(n for n in ("random", "nas-fcos", "nas-fpn", "auto-fpn", "detnas", "sp-nas")
                                         if issubclass(lookup(n).strategy, Strategy)))
def test_resume_from_state_dict_continues_identically(name):
    """Every method's strategy over a decision sequence (auto-fpn's supernet: tests/test_space_auto_fpn.py)."""
    cls = lookup(name).strategy
    a = cls(ToySpace(), seed=3, batch=4) if cls is ControllerStrategy else cls(ToySpace(), seed=3)
    for g in a.ask(6):
        a.tell(g, toy_reward(g))
    pending = a.ask(2)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = cls(ToySpace(), seed=99, batch=4) if cls is ControllerStrategy else cls(ToySpace(), seed=99)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for g in pending:  # in-flight trials finish after the restart
        a.tell(g, toy_reward(g))
        b.tell(g, toy_reward(g))
    assert [g.choices for g in a.ask(5)] == [g.choices for g in b.ask(5)]
