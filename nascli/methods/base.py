"""What a method is, as the search, the CLI, training and retraining need it: one `Method` per
published method, registered in nascli/methods/__init__.py. Every field replaces what used to be a
branch on the method's name somewhere else."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable

FEATURES, IMAGES = "features", "images"


@dataclass(frozen=True)
class TrialSetup:
    """What a search's trials run: `evaluate(genotype, spec, cache, seed, data_seed)` and the files
    its workers must be able to read (`readable`) and write (`writable`), checked by the executor;
    `meta`: what the run database records about it (e.g. the supernet it scores paths of)."""

    evaluate: Callable
    readable: dict = field(default_factory=dict)
    writable: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def no_options(spec, cache, trials: int, lam=None) -> dict:
    """A strategy built from the space and the seed alone (random search)."""
    return {}


def same_genotypes(store):
    """Promotion retrains a trial's genotype as the search stored it."""
    return lambda genotype: genotype


def no_extra_init(run_dir: Path, meta: dict):
    """Retraining starts the backbone from the baseline checkpoint."""
    return None


@dataclass(frozen=True)
class Method:
    """A registry entry. `space`: the space module (spaces/base.py's contract); `strategy`: the
    class that proposes genotypes, built by `options(spec, cache, trials, lam)`; `proxy`: the proxy
    spec used when none is given; `reward`: "loss" or "ap" when the spec does not say; `cache`:
    FEATURES or IMAGES, what its trials train on; `control(spec, cache)`: the hand design scored
    beside the candidates; `trial(spec, cache, run_dir, seed, device, driver_device, on_progress,
    supernet)`: the TrialSetup of a run.

    Retraining: `promoted(store)` maps a stored genotype to the one retrained (SP-NAS: reached
    from the baseline's weights); `retrain_init(run_dir, meta)`: the weights file a promoted
    backbone starts from instead of the baseline checkpoint (DetNAS: the supernet);
    `backbone_state(genotype, checkpoint)`: a searched backbone's start weights from that file.

    `resource_weight`: the method's --lambda as a number (a name or a number in; None: it takes no
    --lambda). Flags: `budget_fixed` (its asks train, a supernet epoch each: a
    resume keeps the first --trials, and an ask skipped over the latency target spends the budget),
    `random_search` (random may search this space), `scores_any_genotype` (a genotype from outside
    the run can get a proxy reward: not so where candidates inherit their parents' weights).
    `panels(run_dir, out_dir)`: the method's own results for `runs show` and the report:
    {"notes": [line], "tables": {title: (columns, rows)}, "figures": {title: PNG path, drawn into out_dir}}.
    `sections`: the options sections of a proxy spec it reads, each with the model that types it
    (a misspelt key is an error naming the file and the key, not a silent default).
    `latency_term(gate, space, seed)`: options that make a resource-weighted strategy search under
    a latency target (the LatencyBudget `gate`); a method with a resource weight and none refuses
    --latency-target."""

    name: str
    space: ModuleType
    strategy: type
    proxy: str
    reward: str
    cache: str
    control: Callable
    trial: Callable
    options: Callable = no_options
    promoted: Callable = same_genotypes
    retrain_init: Callable = no_extra_init
    backbone_state: Callable | None = None
    resource_weight: Callable | None = None
    budget_fixed: bool = False
    random_search: bool = True
    scores_any_genotype: bool = True
    panels: Callable | None = None
    latency_term: Callable | None = None
    sections: dict = field(default_factory=dict)
