"""Side-by-side timings against reference implementations, reported as ratios (`make bench`)."""
