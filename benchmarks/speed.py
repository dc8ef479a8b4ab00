"""Speed of the shipped networks: end-to-end ``run`` per dataset and batched network throughput.

Usage::

    python benchmarks/speed.py --output docs/results/speed.md

End to end: ``CNNBackgroundMaker.run`` and ``CNNSourceFinder.run`` on one
simulated 200 x 200 x 7-energy-bin counts-only dataset (100 s, 1 Crab), median
of ``--repeat`` calls after a warm-up. Batched: the network alone on
``--batch`` maps per call inside a ``tf.function`` (what a real-time system
that stacks windows or a training loop sees). Quoted as medians because the
machine is shared.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np

from gammapy_cnn import CNNBackgroundMaker, CNNSourceFinder
from gammapy_cnn.demo import simulate_observation
from gammapy_cnn.networks import ORIGINAL, load_network
from gammapy_cnn.preprocessing import normalise, original_stretch, pad
from gammapy_cnn.utils import cpu_model, write_text_atomic


def median_ms(func, repeat):
    func()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def batched_maps_per_s(kind, name, batch, repeat):
    network = load_network(kind, name)
    counts = np.random.default_rng(0).poisson(0.3, (batch, 200, 200)).astype(float)
    if network.architecture == ORIGINAL:
        x = original_stretch(counts)[0][..., None]
    else:
        x = pad(normalise(counts, np.ones_like(counts, bool))[0])[0]
    ms = median_ms(lambda: network.predict(x, batch_size=batch), repeat)
    return batch / (ms / 1e3)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    dataset, _ = simulate_observation(flux=1.0, seed=1)
    rows = []
    for name in ("default", ORIGINAL):
        maker = CNNBackgroundMaker(network=name)
        finder = CNNSourceFinder(network=name, background_network=name)
        rows.append((name, median_ms(lambda: maker.run(dataset), args.repeat),
                     median_ms(lambda: finder.run(dataset), args.repeat),
                     batched_maps_per_s("cleaner", name, args.batch, 5),
                     batched_maps_per_s("finder", name, args.batch, 5)))
    lines = [
        "# Speed of the shipped networks",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, CPU only (shared; medians). "
        f"Date: {time.strftime('%Y-%m-%d')}. "
        f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset (oneDNN on)')}, "
        f"TF_NUM_INTRAOP_THREADS={os.environ.get('TF_NUM_INTRAOP_THREADS', 'unset (one per core)')}, "
        f"TF_NUM_INTEROP_THREADS={os.environ.get('TF_NUM_INTEROP_THREADS', 'unset')}; "
        f"load average {os.getloadavg()[0]:.1f} at the end (other jobs running).",
        f"Command: `python benchmarks/speed.py --repeat {args.repeat} --batch {args.batch} --output {args.output}`",
        "",
        "| network | maker `run` p50 [ms] | finder `run` p50 [ms] "
        "| cleaner net, batched [maps/s] | finder net, batched [maps/s] |",
        "|---|---|---|---|---|",
        *[f"| {n} | {a:.1f} | {b:.1f} | {c:.0f} | {d:.0f} |" for n, a, b, c, d in rows],
        "",
        "`run` is end to end on a 200 x 200 x 7 counts-only dataset: validation, energy",
        "integration, network, 3D background / local fits, output objects. The default finder's",
        "`run` includes the background network (for the local fits). The original finder is the",
        "original cleaner + regressor (one candidate, no fit).",
        "",
    ]
    text = "\n".join(lines)
    write_text_atomic(args.output, text)
    print(text)


if __name__ == "__main__":
    main()
