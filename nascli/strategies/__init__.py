"""HOW a space is searched: ask/tell strategies over a space's decision sequence.

STRATEGIES maps a method name to its strategy class; a plain dict, filled once, here.
"""

from .controller import ControllerStrategy
from .random import RandomStrategy

STRATEGIES = {"random": RandomStrategy, "nas-fcos": ControllerStrategy}
