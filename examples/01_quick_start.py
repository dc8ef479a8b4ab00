"""
Quick start: clean a 100 s map and find its source
===================================================

The job gammapy-cnn was made for: a CTAO telescope has observed an unknown
part of the sky for 100 s; is there a source, and where? We have the counts
and nothing else: no background model, no exclusion mask, no target.

This example simulates such an observation with
`gammapy_cnn.demo.simulate_observation` (the embedded CTAO-North-like
response at 20 deg zenith, one source of 0.5 Crab at a random place), then

1. estimates its background with `~gammapy_cnn.CNNBackgroundMaker`,
2. finds and localises the source with `~gammapy_cnn.CNNSourceFinder`,
3. uses the CNN background in a standard gammapy
   `~gammapy.estimators.ExcessMapEstimator` significance map.

It is what ``gammapy-cnn demo`` does.
"""

# %%
# Setup
# -----
import time

import astropy.units as u
import matplotlib.pyplot as plt
import numpy as np
from astropy.coordinates import SkyCoord
from gammapy.estimators import ExcessMapEstimator

from gammapy_cnn import CNNBackgroundMaker, CNNSourceFinder
from gammapy_cnn.demo import simulate_observation

# %%
# A simulated 100 s observation
# -----------------------------
# The dataset is counts-only, as a real-time analysis gets it: a 5 x 5 deg
# map of 0.025 deg pixels with 7 energy bins from 30 GeV to 100 TeV and a
# safe mask. ``truth`` holds what the simulation put in.
dataset, truth = simulate_observation(livetime=100 * u.s, flux=0.5, seed=1)
print(dataset.counts.geom)
print(f"{dataset.counts.data.sum():.0f} counts; exposure: {dataset.exposure}, "
      f"background: {dataset.background}")

source = truth["sources"][0]
true_position = SkyCoord(source["ra"], source["dec"], unit="deg")
print(f"true source: RA {source['ra']:.3f} deg, Dec {source['dec']:.3f} deg, "
      f"{source['npred']:.0f} expected counts over {truth['background'].sum():.0f} "
      "background counts")

# %%
# Background from the counts
# --------------------------
# `~gammapy_cnn.CNNBackgroundMaker.run` returns a copy of the dataset whose
# ``background`` is the CNN estimate, in counts per pixel and energy bin.
# `~gammapy_cnn.CNNBackgroundMaker.clean` gives the cleaned excess map
# (counts minus background, smoothed with a 0.05 deg Gaussian).
maker = CNNBackgroundMaker()
dataset_cnn = maker.run(dataset)
cleaned = maker.clean(dataset)

estimate = dataset_cnn.npred_background().data.sum()
print(f"CNN background: {estimate:.0f} counts; true expectation {truth['background'].sum():.0f}")

# %%
# Candidates
# ----------
# The finder returns an astropy `~astropy.table.Table`, best candidate first:
# positions, the network ``score`` and its calibrated ``false_alarm_rate``,
# and the results of a local Poisson fit over the CNN background
# (``significance``, ``excess``, ``pos_err_68``).
finder = CNNSourceFinder()
candidates = finder(dataset)
print(f"{len(candidates)} candidate(s) above the score threshold {finder.threshold:.2f}")

if len(candidates):
    positions = SkyCoord(candidates["RA"], candidates["DEC"])
    candidates["sep_true"] = positions.separation(true_position).to("deg")
columns = ["Source_Name", "RA", "DEC", "score", "false_alarm_rate", "significance", "excess",
           "pos_err_68"] + (["sep_true"] if len(candidates) else [])
for name in columns[1:]:
    candidates[name].info.format = ".3g"
candidates[columns]

# %%
# How long does it take? Once the networks are loaded, a map costs a few
# milliseconds of CNN plus the local fits.
start = time.perf_counter()
for _ in range(5):
    finder(dataset)
print(f"CNNSourceFinder: {1e3 * (time.perf_counter() - start) / 5:.0f} ms per map")

start = time.perf_counter()
for _ in range(5):
    maker.run(dataset)
print(f"CNNBackgroundMaker.run: {1e3 * (time.perf_counter() - start) / 5:.0f} ms per map")

# %%
# A gammapy significance map over the CNN background
# --------------------------------------------------
# The dataset with the CNN background is an ordinary gammapy
# `~gammapy.datasets.MapDataset`: every estimator works on it.
estimator = ExcessMapEstimator(correlation_radius=0.1 * u.deg, energy_edges=[0.03, 100] * u.TeV)
significance = estimator.run(dataset_cnn)["sqrt_ts"]
value = significance.get_by_coord({"skycoord": true_position, "energy": 1 * u.TeV})[0]
print(f"Li & Ma significance at the true position: {value:.1f}")

# %%
# Plots
# -----
# Counts, CNN background, cleaned excess and significance; candidates are
# white circles, the true source a cyan cross.
wcs = dataset.counts.geom.wcs
fig, axes = plt.subplots(2, 2, figsize=(10, 9), subplot_kw={"projection": wcs})
panels = [
    (dataset.counts.sum_over_axes(keepdims=False).smooth("0.05 deg"),
     "counts (0.05 deg smoothing)", "viridis"),
    (dataset_cnn.npred_background().sum_over_axes(keepdims=False),
     "CNN background (counts / pixel)", "viridis"),
    (cleaned, "cleaned excess (counts / pixel)", "magma"),
    (significance.sum_over_axes(keepdims=False), "significance over the CNN background", "RdBu_r"),
]
for ax, (image, title, cmap) in zip(axes.flat, panels):
    kwargs = dict(vmin=-6, vmax=6) if cmap == "RdBu_r" else {}
    image.plot(ax=ax, cmap=cmap, add_cbar=True, **kwargs)
    ax.set_title(title)
    icrs = ax.get_transform("icrs")
    ax.scatter(source["ra"], source["dec"], transform=icrs, marker="+", s=200, color="cyan")
    if len(candidates):
        ax.scatter(candidates["RA"], candidates["DEC"], transform=icrs, s=400,
                   facecolor="none", edgecolor="white")
plt.tight_layout()
plt.show()

# %%
# The residual significance should look like noise away from the source: a
# mean near 0 and a width near 1.
pixels = np.meshgrid(np.arange(200), np.arange(200))
far = SkyCoord.from_pixel(*pixels, wcs).separation(true_position)
values = significance.data[0][(far > 0.4 * u.deg) & np.isfinite(significance.data[0])]
print(f"significance away from the source: mean {values.mean():.2f}, std {values.std():.2f}")
