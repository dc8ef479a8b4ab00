"""
High-level analysis from a YAML file
====================================

gammapy's high-level interface (`~gammapy.analysis.Analysis`) runs a whole
analysis from one YAML configuration. gammapy-cnn extends it by subclassing:
`~gammapy_cnn.analysis.CNNAnalysisConfig` accepts every gammapy analysis
YAML plus

- ``datasets: background: method: cnn``: the background of each observation
  is estimated by `~gammapy_cnn.CNNBackgroundMaker` in gammapy's reduction
  chain (no exclusion mask needed);
- a ``cnn:`` section: which networks, the score threshold, and whether to run
  the new ``find-sources`` step (`~gammapy_cnn.CNNSourceFinder` on the
  stacked dataset).

The same file runs from the shell::

    gammapy-cnn analysis examples/configs/crab_hess_cnn.yaml --output crab-cnn

and writes its products into ``crab-cnn/`` in the current folder (``--output``
is relative to where the command runs; without it, the config's
``general.outdir``, here also ``crab-cnn``, is used the same way).

This example runs ``examples/configs/crab_hess_cnn.yaml``: two H.E.S.S. DL3
DR1 runs on the Crab Nebula. It needs the H.E.S.S. data (see below) and
prints a message instead when they are absent.

.. note::

   The shipped networks were trained on simulations of CTAO-North, not
   H.E.S.S.: the Crab Nebula is bright enough to be found anyway, but scores
   and background estimates on H.E.S.S. data are outside the training
   domain (see :doc:`/design`).
"""

# %%
# Setup
# -----
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from gammapy_cnn.analysis import CNNAnalysis, CNNAnalysisConfig
from gammapy_cnn.example_data import find_hess_dr1

# %%
# Where are the data?
# -------------------
# `~gammapy_cnn.example_data.find_hess_dr1` finds the H.E.S.S. DL3 DR1 data
# store in gammapy's data folder, ``$GAMMAPY_DATA/hess-dl3-dr1``.
datastore = find_hess_dr1()
config_file = next((p for p in (Path("configs/crab_hess_cnn.yaml"),
                                Path("examples/configs/crab_hess_cnn.yaml")) if p.is_file()), None)
if datastore is None or config_file is None:
    print("H.E.S.S. DL3 DR1 data (or the example config) not found: set GAMMAPY_DATA "
          "to the folder holding hess-dl3-dr1/. Skipping this example.")
else:
    print(f"data store: {datastore}\nconfig: {config_file}")

# %%
# The configuration
# -----------------
# Plain gammapy keys, plus ``background: method: cnn`` and the ``cnn:``
# section. We point it at the data store we found.
if datastore is not None and config_file is not None:
    config = CNNAnalysisConfig.read(config_file)
    config.observations.datastore = datastore
    print(config.datasets.background)
    print(config.cnn)

# %%
# Run it
# ------
# The default steps are ``observations``, ``datasets`` (gammapy's reduction,
# with the CNN as the background maker) and ``find-sources``.
if datastore is not None and config_file is not None:
    analysis = CNNAnalysis(config)
    analysis.run()
    print(analysis.datasets)

# %%
# The candidates
# --------------
# ``analysis.candidates`` is the `~gammapy_cnn.CNNSourceFinder` table and
# ``analysis.candidate_models`` the point-source seeds for a fit. The Crab
# Nebula is at RA 83.633 deg, Dec 22.0145 deg.
if datastore is not None and config_file is not None:
    table = analysis.candidates
    for name in ("RA", "DEC", "score", "significance", "excess", "pos_err_68"):
        table[name].info.format = ".4g"
    print(table["Source_Name", "RA", "DEC", "score", "significance", "excess", "pos_err_68"])
    print(analysis.candidate_models)

# %%
# Summary figure and products
# ---------------------------
# `~gammapy_cnn.analysis.CNNAnalysis.plot_summary` shows counts, the CNN
# background and a significance map with the candidates;
# `~gammapy_cnn.analysis.CNNAnalysis.write` writes the datasets, the
# candidates (ECSV, DS9 regions, models) and that figure, atomically, into
# the folder it is given (a relative one is relative to the current folder).
# Here that is a temporary folder removed when the example ends, so running
# the example leaves nothing behind.
if datastore is not None and config_file is not None:
    tmp = tempfile.TemporaryDirectory()  # removed when the example ends
    outdir = Path(tmp.name) / "crab-cnn"
    paths = analysis.write(outdir)
    for key, path in paths.items():
        print(f"{key:20s} {path.name}")

    # the summary figure as written (plot_summary() returns it without pyplot)
    image = plt.imread(paths["summary"])
    fig, ax = plt.subplots(figsize=(image.shape[1] / 110, image.shape[0] / 110))
    ax.imshow(image)
    ax.set_axis_off()
    plt.show()
