"""Fine-tuning the shipped networks on a second instrument response (CTA 1DC South).

Usage::

    python benchmarks/fine_tune_1dc.py --irf $GAMMAPY_DATA/cta-1dc-irf/South_z20_50h_irf_file.fits.gz \
        --n-train 500 --output docs/results/fine_tuning.md

Simulates ``--n-train`` maps with the given IRF (default training scenario,
its ``irf`` replaced) and 200 held-out maps, measures each default network's
training loss on the held-out maps, fine-tunes it (`gammapy_cnn.training.fine_tune`)
and measures again. The losses are those the networks were trained with:
the cleaner's mean squared log ratio of background to truth on 0.2 deg
cells, the finder's focal heatmap loss plus offset loss.
"""

import argparse
import tempfile
import time
from pathlib import Path

from gammapy_cnn.networks import load_network
from gammapy_cnn.simulation import Scenario
from gammapy_cnn.simulation.batch import simulate_file
from gammapy_cnn.simulation.io import SimulationReader
from gammapy_cnn.training import MapBatches, TrainingConfig, fine_tune
from gammapy_cnn.training.core import _compile
from gammapy_cnn.utils import write_text_atomic


def held_out_loss(network, kind, data):
    config = TrainingConfig(kind=kind, batch_size=20)
    with SimulationReader(data) as reader:
        batches = MapBatches(reader, config, range(len(reader)), augment=False)
        model = network.clone_model()  # the loaded network is shared: compile a copy
        _compile(model, config)
        result = model.evaluate(batches, verbose=0, return_dict=True)
    return float(result["loss"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--irf", required=True)
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    scenario = Scenario.from_dict({**Scenario.preset("default").model_dump(mode="json"),
                                   "irf": [args.irf]})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        train, test = Path(tmp) / "train.h5", Path(tmp) / "test.h5"
        simulate_file(train, args.n_train, scenario=scenario, seed=31, progress=False)
        simulate_file(test, 200, scenario=scenario, seed=32, progress=False)
        for kind in ("cleaner", "finder"):
            before = held_out_loss(load_network(kind, "default"), kind, test)
            start = time.perf_counter()
            out = Path(tmp) / f"{kind}_tuned.keras"
            fine_tune(kind, train, out, base="default", epochs=args.epochs, verbose=0)
            minutes = (time.perf_counter() - start) / 60
            after = held_out_loss(load_network(kind, out), kind, test)
            rows.append(f"| {kind} | {before:.4f} | {after:.4f} | {after / before:.2f} | {minutes:.1f} |")
    text = "\n".join([
        "# Fine-tuning on a second IRF",
        "",
        f"IRF: `{Path(args.irf).name}`; {args.n_train} training maps (seed 31), 200 held-out maps "
        f"(seed 32), default training scenario with this IRF; {args.epochs} epochs, learning rate "
        "3e-4, batch 16, no frozen layers. 2-core CPU, shared.",
        f"Command: `python benchmarks/fine_tune_1dc.py --irf {args.irf} --n-train {args.n_train} "
        f"--epochs {args.epochs} --output {args.output}`. Date: {time.strftime('%Y-%m-%d')}.",
        "",
        "| network | held-out loss, shipped | after fine-tuning | ratio | fine-tuning time [min] |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Losses are the training losses (cleaner: mean squared log ratio of the background to the",
        "truth on 0.2 deg cells, before the maker's renormalisation; finder: focal heatmap loss +",
        "offset L1 loss).",
        "",
    ])
    write_text_atomic(args.output, text)
    print(text)


if __name__ == "__main__":
    main()
