"""HOW a space is searched: ask/tell strategies over a space's decision sequence.

STRATEGIES maps a method name to its strategy class; a plain dict, filled once, here. A method
named after a space (nas-fcos, nas-fpn, auto-fpn) searches that space only; random searches any.
Auto-FPN's strategy trains a supernet on the cache itself, one epoch per ask; SP-NAS's grows one
network by morphisms, each candidate trained from its parent's weights; DetNAS's evolution scores
paths of a one-shot supernet trained before the search.
"""

from .controller import ControllerStrategy
from .darts import DartsStrategy
from .evolution import EvolutionStrategy
from .morphism import MorphismStrategy
from .random import RandomStrategy

STRATEGIES = {"random": RandomStrategy, "nas-fcos": ControllerStrategy, "nas-fpn": ControllerStrategy,
              "auto-fpn": DartsStrategy, "sp-nas": MorphismStrategy, "detnas": EvolutionStrategy}
