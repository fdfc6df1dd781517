"""HOW a space is searched: ask/tell strategies over a space's decision sequence (base.py), one
module per kind: random, the LSTM + PPO controller (NAS-FCOS, NAS-FPN), DARTS (Auto-FPN's
supernet, an epoch per `ask`), evolution (DetNAS, paths of a one-shot supernet) and morphisms
(SP-NAS, growing one network). Which method uses which is the registry's (nascli/methods).
"""
