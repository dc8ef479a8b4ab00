"""Throughput of the simulation engine (issue goal: >= 50 maps/s on the 2-core machine).

Usage::

    python benchmarks/simulation_speed.py --n 2000 --output docs/results/simulation_speed.md

Runs ``simulate_file`` (the code behind ``gammapy-cnn simulate``) with 1 and 2
worker processes on the default training scenario and writes a Markdown table.
Wall time includes building the IRF templates and writing the HDF5 file.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from gammapy_cnn.simulation.batch import simulate_file
from gammapy_cnn.utils import cpu_model, write_text_atomic


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_jobs in (1, 2):
            path = Path(tmp) / f"speed_{n_jobs}.h5"
            start = time.perf_counter()
            rate = simulate_file(path, args.n, seed=1, n_jobs=n_jobs, chunk_size=64, progress=False)
            wall = time.perf_counter() - start
            size = path.stat().st_size / args.n / 1024
            rows.append(f"| {n_jobs} | {args.n} | {wall:.1f} | {args.n / wall:.1f} | {rate:.1f} | {size:.0f} |")
    text = "\n".join([
        "# Simulation throughput",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores (shared, noisy). Date: {time.strftime('%Y-%m-%d')}.",
        f"Command: `python benchmarks/simulation_speed.py --n {args.n} --output {args.output}`",
        "(default training scenario, seed 1, chunks of 64 maps).",
        "",
        "| processes | maps | wall time [s] | maps/s (all included) | maps/s (after templates) | kB per map |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ])
    write_text_atomic(args.output, text)
    print(text)


if __name__ == "__main__":
    main()
