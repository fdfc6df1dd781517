"""Shared by the benchmarks: the median of repeated calls after a warm-up, and figures to files."""

import statistics
import time


def median_seconds(fn, repeats: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def subplots(*args, **kwargs):
    """matplotlib's `plt.subplots` on the file-only Agg backend (benchmarks never open a window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path):
    """Lays out, writes at 100 dpi and closes `fig`; returns `path`."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
