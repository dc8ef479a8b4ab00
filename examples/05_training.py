"""
Simulate a training set, train and fine-tune a network
======================================================

The shipped networks were trained on 10 000 simulated maps for hours (see
:doc:`/user_guide/training`). This example shows the same API on a toy
scale, in well under a minute: a few dozen maps, one short epoch, a tiny
network. The point is the workflow, not the result.

1. write a scenario and simulate maps into an HDF5 file
   (`~gammapy_cnn.simulation.batch.simulate_file`);
2. read them back (`~gammapy_cnn.simulation.io.SimulationReader`);
3. train a network from a recipe (`~gammapy_cnn.training.train`), which
   writes the ``.keras`` file, its checkpoint and its model card;
4. resume the training for one more epoch;
5. fine-tune the shipped default network on the new maps
   (`~gammapy_cnn.training.fine_tune`), with its encoder frozen;
6. use the new networks in `~gammapy_cnn.CNNBackgroundMaker` and
   `~gammapy_cnn.CNNSourceFinder`.

From the shell, the same steps are ``gammapy-cnn simulate``,
``gammapy-cnn train`` and ``gammapy-cnn fine-tune``.
"""

# %%
# Setup
# -----
import json
import tempfile
from pathlib import Path

import astropy.units as u
import matplotlib.pyplot as plt
import numpy as np
from astropy.table import Table

from gammapy_cnn import CNNBackgroundMaker, CNNSourceFinder
from gammapy_cnn.demo import simulate_observation
from gammapy_cnn.simulation import Scenario
from gammapy_cnn.simulation.batch import simulate_file
from gammapy_cnn.simulation.io import SimulationReader
from gammapy_cnn.training import TrainingConfig, fine_tune, train

tmp = tempfile.TemporaryDirectory()  # removed when the example ends
workdir = Path(tmp.name)

# %%
# A scenario
# ----------
# Every parameter is fixed or drawn from a distribution; values may carry
# units. Here: one response (the embedded CTAO-North-like IRF at 40 deg
# zenith, say the one of your observatory tonight), 1 to 10 min exposures,
# 0 to 2 sources between 0.1 and 1 Crab. Unset fields keep the defaults of
# the broad training scenario.
scenario = Scenario.from_yaml("""
irf: default-z40
livetime: {dist: log-uniform, min: 60 s, max: 600 s}
n_sources: {dist: integer, min: 0, max: 2}
source_offset: {dist: uniform, min: 0 deg, max: 2 deg}
source_flux: {dist: log-uniform, min: 0.1, max: 1}
source_extension: 0 deg
""")
print(scenario.to_yaml())

# %%
# Simulate
# --------
# 48 maps; map ``i`` uses the random stream ``[seed, i]``, so the file is the
# same whatever the number of processes (``n_jobs``).
data = workdir / "maps.h5"
rate = simulate_file(data, 48, scenario=scenario, seed=5, progress=False)
print(f"{rate:.0f} maps/s -> {data.name}, {data.stat().st_size / 1e6:.1f} MB")

# %%
# The file holds counts, the true expected background and signal, the
# field-of-view mask, and tables of the drawn parameters and sources.
with SimulationReader(data) as reader:
    print(f"{len(reader)} maps of {reader.counts(0).shape} (energy, y, x), "
          f"pixels of {reader.binsz} deg, energy edges {np.round(reader.energy_edges, 3)} TeV")
    print(Table(reader.maps[:5])["livetime", "n_sources", "npred_background", "npred_signal"])
    index = int(np.argmax(reader.maps["npred_signal"]))
    counts = reader.counts(index).sum(axis=0)
    background = reader.background(index).sum(axis=0)
    signal = reader.signal(index).sum(axis=0)
    sources = reader.sources(index)

fig, axes = plt.subplots(1, 3, figsize=(13, 4))
for ax, image, title in zip(axes, (counts, background, signal),
                            ("counts", "true background", "true signal")):
    shown = ax.imshow(image, origin="lower")
    ax.set_title(f"map {index}: {title}")
    fig.colorbar(shown, ax=ax, shrink=0.8)
axes[2].scatter(sources["x"], sources["y"], s=200, facecolor="none", edgecolor="w")
plt.tight_layout()
plt.show()

# %%
# Train a tiny background network
# -------------------------------
# A `~gammapy_cnn.training.TrainingConfig` is a recipe (the shipped ones are
# YAML files in ``gammapy_cnn/networks/recipes``). ``widths`` shrinks the
# network; one epoch of 2 batches is enough to show the mechanics.
config = TrainingConfig(kind="cleaner", architecture="default", epochs=1, batch_size=8,
                        steps_per_epoch=2, validation_fraction=0.2, widths=[4, 4, 4, 4], seed=1)
cleaner = workdir / "cleaner_tiny.keras"
card = train(config, cleaner, data=data, verbose=0)
print(sorted(p.name for p in workdir.iterdir()))

# %%
# The model card (``cleaner_tiny.json``) travels with the network: what it
# is, how it was trained, on what (the full scenario YAML is in
# ``training_data.scenario``, the loss of every epoch in ``history``), and
# the SHA-256 that loading checks.
shown = {k: v for k, v in card.items() if k != "history"}
shown["training_data"] = {k: v for k, v in card["training_data"].items() if k != "scenario"}
print(json.dumps(shown, indent=1))

# %%
# Resume
# ------
# Every epoch writes a full checkpoint into ``cleaner_tiny.keras.ckpt/``.
# Asking for more epochs with ``resume=True`` continues from it (after an
# interruption too, e.g. ``gammapy-cnn train cleaner ... --resume``).
config_more = config.model_copy(update={"epochs": 2})
card = train(config_more, cleaner, data=data, resume=True, verbose=0)
print(f"epochs in the history: {len(card['history'])}; last: {card['history'][-1]}")

# %%
# Fine-tune the shipped network
# -----------------------------
# Transfer learning: start from the shipped default background network, keep
# its encoder (layers named ``bkg_enc*``) fixed and train the rest on the new
# maps, with a small learning rate. For a real use, simulate a few hundred
# maps with your own IRF file (``irf: path/to/irf.fits.gz``) and train for a
# few epochs.
tuned = workdir / "cleaner_tuned.keras"
card = fine_tune("cleaner", data, tuned, base="default", epochs=1, freeze=["bkg_enc"],
                 batch_size=8, verbose=0)
print(f"fine-tuned from {card['recipe']['base']!r}, frozen {card['recipe']['freeze']}, "
      f"{card['parameters']} parameters")

# %%
# A tiny finder, then both networks at work
# -----------------------------------------
# Any ``.keras`` file with its card can replace a shipped network.
finder_file = workdir / "finder_tiny.keras"
train(TrainingConfig(kind="finder", epochs=1, batch_size=8, steps_per_epoch=2,
                     validation_fraction=0.2, widths=[4, 4, 4], seed=2),
      finder_file, data=data, verbose=0)

dataset, truth = simulate_observation(livetime=300 * u.s, flux=1.0, seed=3, irf="default-z40")
for name, network in (("tiny", cleaner), ("fine-tuned", tuned), ("shipped", "default")):
    estimate = CNNBackgroundMaker(network=network).run(dataset).npred_background().data.sum()
    print(f"{name:10s} background: {estimate:7.0f} counts (true {truth['background'].sum():.0f})")

finder = CNNSourceFinder(network=finder_file, background_network=tuned, threshold=0.0, max_candidates=3)
finder(dataset)["Source_Name", "score", "significance"]

# %%
# After 2 batches the tiny networks have learned little: a real training
# follows the recipes, with 10 000 maps.
