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
    x = network_input(network, np.random.default_rng(0).poisson(0.3, (batch, 200, 200)).astype(float))
    ms = median_ms(lambda: network.predict(x, batch_size=batch), repeat)
    return batch / (ms / 1e3)


def single_map_ms(kind, name, repeat):
    """One 200 x 200 map through the network alone: (LiteRT, TensorFlow) medians in ms."""
    network = load_network(kind, name)
    x = network_input(network, np.random.default_rng(0).poisson(0.3, (1, 200, 200)).astype(float))
    times = []
    try:
        for use_litert in (True, False):
            network.use_litert = use_litert
            times.append(median_ms(lambda: network.predict(x), repeat))
    finally:
        del network.use_litert  # the shared network follows `Network.use_litert` again
    return times


def network_input(network, counts):
    if network.architecture == ORIGINAL:
        return original_stretch(counts)[0][..., None]
    return pad(normalise(counts, np.ones_like(counts, bool))[0])[0]


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
                     batched_maps_per_s("finder", name, args.batch, 5),
                     *single_map_ms("cleaner", name, args.repeat), *single_map_ms("finder", name, args.repeat)))
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
        "| cleaner net, batched [maps/s] | finder net, batched [maps/s] "
        "| cleaner net, one map: LiteRT / TensorFlow [ms] | finder net, one map: LiteRT / TensorFlow [ms] |",
        "|---|---|---|---|---|---|---|",
        *[f"| {n} | {a:.1f} | {b:.1f} | {c:.0f} | {d:.0f} | {e:.2f} / {f:.2f} | {g:.2f} / {h:.2f} |"
          for n, a, b, c, d, e, f, g, h in rows],
        "",
        "`run` is end to end on a 200 x 200 x 7 counts-only dataset: validation, energy",
        "integration, network, 3D background / local fits, output objects. The default finder's",
        "`run` includes the background network (for the local fits). The original finder is the",
        "original cleaner + regressor (one candidate, no fit). A single map of at most 512 x 512",
        "pixels runs through LiteRT (`gammapy_cnn.networks.litert`), a batch through TensorFlow;",
        "the last two columns time one map through the network alone both ways.",
        "",
    ]
    text = "\n".join(lines)
    write_text_atomic(args.output, text)
    print(text)


if __name__ == "__main__":
    main()
