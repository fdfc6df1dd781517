"""HOW a space is searched: ask/tell strategies over a space's decision sequence.

STRATEGIES maps a method name to its strategy class; a plain dict, filled once, here. A method
named after a space (nas-fcos, nas-fpn) searches that space only; random searches any.
"""

from .controller import ControllerStrategy
from .random import RandomStrategy

STRATEGIES = {"random": RandomStrategy, "nas-fcos": ControllerStrategy, "nas-fpn": ControllerStrategy}
