"""WHAT can be searched: one module per published search space, each exposing a genotype class,
`decisions(spec)`, `decode(choices)` / `encode(genotype)`, `build(genotype, in_channels, spec)`
and `cost(genotype, spec)`."""
