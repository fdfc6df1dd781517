"""`python -m benchmarks`: every benchmark in one run, one table of reference/ours ratios."""

import os

import torch
from rich.console import Console
from rich.table import Table

from . import bench_ap, bench_cache, bench_kernels


def main():
    torch.set_num_threads(os.cpu_count() or 1)
    rows = bench_kernels.nms_rows() + bench_kernels.target_rows()
    table = Table(title=f"nascli kernels vs references ({os.cpu_count()} CPU cores, torch {torch.__version__})")
    for col in ("case", "reference", "reference ms", "nascli ms", "speed-up"):
        table.add_column(col, justify="left" if col in ("case", "reference") else "right")
    for case, ref_name, ref, ours in rows:
        table.add_row(case, ref_name, f"{ref * 1e3:.2f}", f"{ours * 1e3:.2f}", f"{ref / ours:.1f}x")
    console = Console(width=120)
    console.print(table)

    table = Table(title=f"one decoder epoch ({bench_cache.IMAGES} crops of {bench_cache.CROP} px, "
                        f"batch {bench_cache.BATCH}): from images vs from the feature cache")
    for col in ("backbone", "from images s", "from cache s", "speed-up", "loader share of step"):
        table.add_column(col, justify="left" if col == "backbone" else "right")
    for name, uncached, cached, share in bench_cache.rows():
        table.add_row(name, f"{uncached:.1f}", f"{cached:.1f}", f"{uncached / cached:.1f}x", f"{100 * share:.1f}%")
    console.print(table)

    bench_ap.main()


if __name__ == "__main__":
    main()
