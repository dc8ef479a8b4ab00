"""
Spectra: the CNN background beside reflected regions
=====================================================

Reflected regions are gammapy's standard background for a point-source
spectrum: OFF regions at the same offset from the pointing as the ON region.
The CNN background is another answer, from the counts alone: each run's whole
field of view is estimated by the network, and the estimate is summed over the
ON region (`~gammapy_cnn.CNNBackgroundMaker.run` on a
`~gammapy.datasets.SpectrumDataset`). The result is a plain
`~gammapy.datasets.SpectrumDataset` with a ``background``, fitted with Cash
statistics; flux points and light curves work as with ``reflected``.

This example runs gammapy's high-level 1D analysis on the four H.E.S.S. DR1
Crab Nebula runs twice, changing only ``background: method``, and compares
the power-law fits and the flux points. ``docs/results/hess_spectra.md``
adds PKS 2155-304.

The data are read from ``$GAMMAPY_DATA/hess-dl3-dr1``; without them the
example prints a message and does nothing.
"""

# %%
# The configuration
# -----------------
# ``examples/configs/crab_hess_cnn_1d.yaml`` is a gammapy 1D configuration
# (a 0.11 deg ON region, safe masks from the effective area, no stacking)
# with ``background: method: cnn``. The CNN needs neither an exclusion mask
# nor OFF regions.
from pathlib import Path

import astropy.units as u
import matplotlib.pyplot as plt

from gammapy_cnn.analysis import CNNAnalysis, CNNAnalysisConfig
from gammapy_cnn.example_data import find_hess_dr1

# run from examples/ (as the gallery does) or from the repository root
CONFIGS = next(p for p in (Path("configs"), Path("examples/configs")) if p.is_dir())

path = find_hess_dr1()
if path is None:
    print("H.E.S.S. DL3 DR1 data not found: set GAMMAPY_DATA to the folder holding "
          "hess-dl3-dr1/. Skipping this example.")

# %%
# Two analyses, one switch
# ------------------------
analyses = {}
if path is not None:
    for method in ("cnn", "reflected"):
        config = CNNAnalysisConfig.read(CONFIGS / "crab_hess_cnn_1d.yaml")
        config.observations.datastore = str(path)
        config.general.log = {"level": "warning"}
        config.datasets.background.method = method
        analysis = CNNAnalysis(config)
        analysis.run(["observations", "datasets"])
        analysis.read_models(CONFIGS / "crab_power_law.yaml")
        analysis.run(["fit", "flux-points"])
        analyses[method] = analysis
        print(method)
        print(analysis.datasets.info_table(cumulative=False)["name", "counts", "background", "sqrt_ts"])

# %%
# The fits
# --------
# Same ON counts, two backgrounds: the power-law parameters agree well within
# their statistical errors.
for method, analysis in analyses.items():
    parameters = analysis.models["crab"].spectral_model.parameters
    print(f"{method:>9}: index {parameters['index'].value:.3f} +- {parameters['index'].error:.3f}, "
          f"amplitude {parameters['amplitude'].value:.3e} +- {parameters['amplitude'].error:.1e} "
          f"{parameters['amplitude'].unit}")

# %%
# Flux points
# -----------
if analyses:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for (method, analysis), color in zip(analyses.items(), ("C0", "C1")):
        analysis.flux_points.data.plot(ax=ax, sed_type="e2dnde", color=color, label=f"{method} background")
        analysis.models["crab"].spectral_model.plot(
            ax=ax, energy_bounds=[1, 40] * u.TeV, sed_type="e2dnde",
            color=color, ls="--")
    ax.legend()
    ax.set_title("H.E.S.S. DR1 Crab Nebula, 4 runs")
    plt.show()
