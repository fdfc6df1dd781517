"""The method registry: one entry per published method, the only place a method's name decides
anything. Search, CLI, training and retraining look a method up here instead of branching.

A method is a module here (its entry `METHOD`, and its own trial when it has one) over a space
(nascli/spaces/<space>.py) and a strategy (nascli/strategies/); the pieces every trial shares
are nascli/trial.py. Random search is any registered space's entry with a uniform strategy.

Adding a method: write its space (spaces/base.py's contract) and strategy if new, and a module
ending in `METHOD = Method(...)`; then add that entry to METHODS here, or call `register(METHOD)`
(a method kept outside this package: tests/toy_method.py is one, run end to end by
tests/test_toy_method.py).
"""

from __future__ import annotations

from dataclasses import replace

from ..config import validate
from ..errors import SpecError, unknown_name
from ..strategies.random import RandomStrategy
from . import auto_fpn, detnas, nas_fcos, nas_fpn, sp_nas
from .base import FEATURES, IMAGES, Method, TrialSetup, no_options

#: random search: any registered space under a uniform strategy
RANDOM = "random"


def registry(*methods: Method) -> dict[str, Method]:
    """Name -> entry; two entries of one name are an error, not the later one silently winning."""
    out: dict[str, Method] = {}
    for m in methods:
        if m.name in out or m.name == RANDOM:
            taken = "random search's name" if m.name == RANDOM else "registered twice"
            raise ValueError(f"method registry: {m.name!r} is {taken}")
        out[m.name] = m
    return out


METHODS = registry(nas_fcos.METHOD, nas_fpn.METHOD, auto_fpn.METHOD, detnas.METHOD, sp_nas.METHOD)


def method_names() -> tuple[str, ...]:
    """Every name `--method` takes, methods `register`ed since import included."""
    return (*METHODS, RANDOM)


def register(entry: Method) -> None:
    """Adds a method from outside this package: its entry to METHODS and its space to the spaces
    genotypes load from (nascli.spaces.SPACES). A name or space tag already taken is an error."""
    from ..spaces import SPACES

    registry(*METHODS.values(), entry)  # refuses a taken name
    tag = entry.space.SPACE
    if SPACES.get(tag, entry.space) is not entry.space:
        raise ValueError(f"method registry: space {tag!r} is taken by another module")
    METHODS[entry.name] = entry
    SPACES[tag] = entry.space


#: the space random search uses when no spec is given
DEFAULT_SPACE = nas_fcos.METHOD.space.SPACE

__all__ = ["FEATURES", "IMAGES", "METHODS", "Method", "TrialSetup", "default_proxy", "for_space",
           "check_sections", "lookup", "method_names", "register", "registry", "reward_kind"]


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
        return replace(entry, name=RANDOM, strategy=RandomStrategy, options=no_options, resource_weight=None,
                       budget_fixed=False, latency_term=None)
    if name not in METHODS:
        raise unknown_name("method", name, method_names())
    entry = METHODS[name]
    if space is not None and space != entry.space.SPACE:
        raise SpecError(f"field 'space' is {space!r}, but --method {name} searches the {entry.space.SPACE} space "
                        f"(pass --proxy {entry.proxy} or a spec of that space)")
    return entry


def default_proxy(name: str) -> str:
    """The proxy spec `--method name` uses when none is given (random: the default space's)."""
    return lookup(name).proxy


def check_sections(spec, source) -> None:
    """Every options section of a proxy spec (controller, darts, ...) through the model of the
    method that reads it: one line naming the file, the section and the key for a typo."""
    models = {name: model for m in METHODS.values() for name, model in m.sections.items()}
    for name, model in models.items():  # (nas-fcos and nas-fpn share `controller`: checked once)
        validate(model, getattr(spec, name), f"{source}: section '{name}'")


def reward_kind(spec) -> str:
    """"ap" or "loss": the spec's `reward`, else the method of its space's."""
    return spec.reward or for_space(spec.space).reward
