"""The method registry: one entry per published method, the only place a method's name decides
anything. Search, CLI, training and retraining look a method up here instead of branching.

A method is a module here (its entry `METHOD`, and its own trial when it has one) over a space
(nascli/spaces/<space>.py) and a strategy (nascli/strategies/); the pieces every trial shares
are nascli/trial.py. Random search is any registered space's entry with a uniform strategy.

Adding a method: write its space (spaces/base.py's contract) and strategy if new, its module
here ending in `METHOD = Method(...)`, and add that entry to METHODS.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import SpecError, unknown_name
from ..strategies.random import RandomStrategy
from . import auto_fpn, detnas, nas_fcos, nas_fpn, sp_nas
from .base import FEATURES, IMAGES, Method, TrialSetup, no_options

METHODS: dict[str, Method] = {m.name: m for m in (nas_fcos.METHOD, nas_fpn.METHOD, auto_fpn.METHOD,
                                                   detnas.METHOD, sp_nas.METHOD)}
RANDOM = "random"
#: every name `--method` takes
METHOD_NAMES = (*METHODS, RANDOM)
#: the space random search uses when no spec is given
DEFAULT_SPACE = nas_fcos.METHOD.space.SPACE

__all__ = ["FEATURES", "IMAGES", "METHODS", "METHOD_NAMES", "Method", "TrialSetup", "default_proxy", "for_space",
           "lookup", "reward_kind"]


def for_space(space: str) -> Method:
    """The entry of the method that searches `space` (a genotype's or a spec's `space` tag)."""
    for m in METHODS.values():
        if m.space.SPACE == space:
            return m
    raise unknown_name("space", space, [m.space.SPACE for m in METHODS.values()])


def lookup(name: str, space: str | None = None) -> Method:
    """The entry `--method name` runs. Random search over `space` (default nas-fcos) is that
    space's entry with a uniform strategy and none of the method's own options."""
    if name == RANDOM:
        entry = for_space(space or DEFAULT_SPACE)
        if not entry.random_search:
            raise SpecError(f"the {entry.space.SPACE} space is searched by --method {entry.name} only "
                            f"(it grows one network)")
        return replace(entry, name=RANDOM, strategy=RandomStrategy, options=no_options, resource_weight=False,
                       budget_fixed=False)
    if name not in METHODS:
        raise unknown_name("method", name, METHOD_NAMES)
    entry = METHODS[name]
    if space is not None and space != entry.space.SPACE:
        raise SpecError(f"field 'space' is {space!r}, but --method {name} searches the {entry.space.SPACE} space "
                        f"(pass --proxy {entry.proxy} or a spec of that space)")
    return entry


def default_proxy(name: str) -> str:
    """The proxy spec `--method name` uses when none is given (random: the default space's)."""
    return lookup(name).proxy


def reward_kind(spec) -> str:
    """"ap" or "loss": the spec's `reward`, else the method of its space's."""
    return spec.reward or for_space(spec.space).reward
