"""SP-NAS's search (papers/sp-nas.md Algorithm 1, §3-4) as an ask/tell strategy.

1. The start network (the baseline detector, e.g. ResNet-18 `BB(11,d1,d1,d1)`) is trained briefly:
   its accuracy is acc_best and its weights θ_best.
2. Serial level, in rounds: `proposals` (paper: 3) random modifications of the current best - a
   swap, an expand, or a swap then an expand - each trained briefly from θ_best's morphed weights.
   The round's best, if it beats acc_best, becomes the best; otherwise the proposals count towards
   `n_stuck` (paper: 20). When that many fail in a row, *reignite* re-runs the pre-training on the
   best architecture (θ_best <- reignite(f_best); acc_best is kept, as in Algorithm 1); after
   `reignitions` (paper n_r = 2) the serial level ends.
3. Parallel level: random parallel levels on the serial best (a subnet is likelier to be added the
   fewer FLOPs it adds; weights copied from the stage), the best kept, until `n_stuck_parallel`
   fail in a row.
A trial budget (`--trials`) keeps `parallel_share` of itself for step 3. Every trained candidate is
a trial (run_search scores it with `methods.sp_nas.evaluate`); `ask` returns nothing when the
search is over. The whole state is plain data, saved with every trial, so a resumed search asks
exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import ConfigDict, Field

from ..config import Spec, validate
from ..errors import SpecError
from ..spaces import spnas


class MorphismOptions(Spec):
    """`morphism:` in an sp-nas proxy spec (the candidate's epochs, lr and batch are the spec's own)."""

    model_config = ConfigDict(extra="forbid")

    proposals: int = Field(3, ge=1, description="modifications trained per round (paper: 3)")
    n_stuck: int = Field(20, ge=1, description="serial proposals in a row without improvement before reigniting (paper: 20)")
    reignitions: int = Field(2, ge=0, description="n_r: reignitions before the serial level ends (paper: 2)")
    n_stuck_parallel: int = Field(20, ge=1, description="parallel proposals in a row without improvement that end the search")
    parallel_share: float = Field(0.25, ge=0, lt=1, description="share of the trial budget kept for the parallel level")
    max_subnets: int = Field(3, ge=1, le=spnas.MAX_SUBNETS, description="K: subnets per stage at most (paper: 3)")
    lr_min: float = Field(1e-4, ge=0, description="end of the cosine schedule (paper: 1e-4)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    reignite_epochs: int | None = Field(None, ge=1, description="pre-training epochs of a reignition (default: the baseline's)")


class MorphismStrategy:
    """Swap-expand-reignite, then the parallel level; see the module docstring."""

    graded_skips = False  # a skipped morph must never become a parent (strategies/base.py's contract)

    def __init__(self, space, seed: int = 0, trials: int = 10, start=None, **options):
        if not isinstance(space, spnas.Space):
            raise SpecError(f"the morphism strategy searches the sp-nas space, not {space.name!r}")
        self.options = validate(MorphismOptions, options, "proxy spec field 'morphism'")
        self.start = spnas.Genotype.from_json(start, "the start network")
        self.rng = np.random.default_rng(seed)
        self.trials = trials
        self.state = {"phase": "start", "asked": 0, "queue": [], "round": [], "best": None, "best_reward": None,
                      "serial_best": None, "stuck": 0, "reignited": 0, "seen": [], "trajectory": []}

    # ---------------------------------------------------------------- ask

    def ask(self, n: int = 1) -> list:
        out = []
        for _ in range(n):
            g = self._next()
            if g is None:
                break
            out.append(g)
        return out

    def _next(self):
        s = self.state
        if not s["queue"] and not s["round"]:
            self._plan_round()
        if not s["queue"]:
            return None
        g = s["queue"].pop(0)
        s["round"].append([g, None, False])
        return spnas.Genotype.from_json(g)

    def _tag(self) -> str:
        self.state["asked"] += 1
        return f"t{self.state['asked']}"

    def _plan_round(self) -> None:
        s, o = self.state, self.options
        serial_budget = self.trials - math.ceil(o.parallel_share * self.trials)
        if s["phase"] == "start":
            g = spnas.Genotype(**{**self.start.__dict__, "tag": self._tag(), "parent": "", "morphs": ()})
            s["queue"] = [g.to_json()]
            return
        if s["phase"] == "serial" and s["stuck"] >= o.n_stuck:
            if s["reignited"] < o.reignitions and s["asked"] < serial_budget:
                best = self._best()
                g = spnas.Genotype(**{**best.__dict__, "tag": self._tag(), "parent": best.tag, "morphs": (("reignite",),)})
                s["queue"] = [g.to_json()]
                return
            s["phase"] = "parallel"
        if s["phase"] == "serial" and s["asked"] >= serial_budget:
            s["phase"] = "parallel"
        if s["phase"] == "parallel" and not s["serial_best"]:
            s["serial_best"], s["stuck"] = s["best"], 0
        if s["phase"] == "parallel" and (s["stuck"] >= o.n_stuck_parallel or s["asked"] >= self.trials):
            s["phase"] = "done"
        if s["phase"] == "done":
            return
        room = self.trials - s["asked"] if s["phase"] == "parallel" else serial_budget - s["asked"]
        s["queue"] = [g.to_json() for g in self._proposals(max(1, min(o.proposals, room)))]

    def _best(self) -> spnas.Genotype:
        return spnas.Genotype.from_json(self.state["best"])

    def _proposals(self, count: int) -> list:
        """`count` distinct modifications of the best (never one already trained in this phase)."""
        s, found = self.state, []
        parallel = s["phase"] == "parallel"
        base = spnas.Genotype.from_json(s["serial_best"] if parallel else s["best"])
        serial = spnas.Serial.parse(base.serial)
        net = spnas.build_backbone(base) if parallel else None
        for _ in range(50 * count):
            if len(found) == count:
                break
            if parallel:
                counts = spnas.sample_parallel(net, self.rng, self.options.max_subnets, size=64)
                steps, child = (("parallel", counts),), {"serial": base.serial, "parallel": counts}
            else:
                steps = spnas.propose(serial, self.rng)
                child = {"serial": str(spnas.morphed_serial(serial, steps)), "parallel": ()}
            key = f"{child['serial']} {tuple(child['parallel'])}"
            if key in s["seen"]:
                continue
            s["seen"].append(key)
            found.append(spnas.Genotype(**{**base.__dict__, **child, "tag": self._tag(), "parent": base.tag,
                                           "morphs": steps}))
        return found

    # ---------------------------------------------------------------- tell

    def tell(self, genotype, reward: float | None) -> None:
        s = self.state
        for entry in s["round"]:
            if spnas.Genotype.from_json(entry[0]).tag == genotype.tag:
                entry[1], entry[2] = reward, True
        if s["queue"] or not all(told for *_, told in s["round"]):
            return
        done, s["round"] = s["round"], []
        self._resolve([(spnas.Genotype.from_json(g), r) for g, r, _ in done])

    def _resolve(self, results: list) -> None:
        s = self.state
        scored = [(g, r) for g, r in results if r is not None]
        if s["phase"] == "start":
            g, r = results[0]
            s["best"], s["best_reward"], s["phase"] = g.to_json(), r if r is not None else -math.inf, "serial"
            s["trajectory"].append({"tag": g.tag, "step": "start", "arch": g.describe(), "reward": r})
            return
        if results[0][0].morphs and results[0][0].morphs[-1][0] == "reignite":
            g, r = results[0]
            if r is not None:  # θ_best <- reignite(f_best); acc_best is kept (Algorithm 1)
                s["best"] = g.to_json()
                s["trajectory"].append({"tag": g.tag, "step": "reignite", "arch": g.describe(), "reward": r})
            s["reignited"] += 1
            s["stuck"] = 0
            return
        top = max(scored, key=lambda gr: gr[1], default=None)
        if top is not None and top[1] > s["best_reward"]:
            s["best"], s["best_reward"], s["stuck"] = top[0].to_json(), top[1], 0
            step = "+".join(m[0] for m in top[0].morphs)
            s["trajectory"].append({"tag": top[0].tag, "step": step, "arch": top[0].describe(), "reward": top[1]})
        else:
            s["stuck"] += len(results)

    def discarded(self) -> list[str]:
        """Tags of candidates that can never be a parent: asked, their round decided, not accepted.
        Their weight files are dead weight (~45 MB for a ResNet-18 detector each)."""
        s = self.state
        undecided = {spnas.Genotype.from_json(g).tag for g in s["queue"] + [e[0] for e in s["round"]]}
        kept = {step["tag"] for step in s["trajectory"]} | undecided
        return [tag for tag in (f"t{i}" for i in range(1, s["asked"] + 1)) if tag not in kept]

    # ---------------------------------------------------------------- resume

    @property
    def trajectory(self) -> list[dict]:
        """Every accepted step: the start, improvements, reignitions (the paper's Figure 3)."""
        return self.state["trajectory"]

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "state": self.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.state = state["state"]
