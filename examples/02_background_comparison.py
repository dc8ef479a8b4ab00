"""
CNN background vs ring and field-of-view backgrounds
====================================================

gammapy's standard background methods start from the instrument's background
template (an IRF) and correct it with the data:

- `~gammapy.makers.FoVBackgroundMaker` scales the template to the counts
  outside an exclusion mask;
- `~gammapy.makers.RingBackgroundMaker` measures the background in a ring
  around each pixel, with the template giving the acceptance ratio.

Both need the template and an exclusion mask of the sources. The CNN needs
neither: `~gammapy_cnn.CNNBackgroundMaker` reads only the counts.

Here the three run on the same simulated 10 min observation, where we know
the true expected background. The true background is 10% brighter than the
IRF template and has a spectral tilt and a spatial gradient that the
template lacks, as a real sky would. The sources are excluded using the
candidates of `~gammapy_cnn.CNNSourceFinder`, so the classical methods get no
help from the truth either.
"""

# %%
# Setup
# -----
import time

import astropy.units as u
import matplotlib.pyplot as plt
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table
from gammapy.estimators import ExcessMapEstimator
from gammapy.makers import FoVBackgroundMaker, RingBackgroundMaker
from gammapy.maps import Map
from regions import CircleSkyRegion

from gammapy_cnn import CNNBackgroundMaker, CNNSourceFinder
from gammapy_cnn.simulation import MapParameters, SimulationTemplate, SourceParameters

# %%
# One simulated observation, with its full gammapy dataset
# --------------------------------------------------------
# `~gammapy_cnn.simulation.SimulationTemplate.reference_dataset` is the
# gammapy `~gammapy.datasets.MapDataset` of the observation (exposure, PSF,
# energy dispersion and the IRF background template); we put the simulated
# counts into it.
template = SimulationTemplate("default-z20")
pointing = SkyCoord(83.63, 22.01, unit="deg")
livetime = 600 * u.s
params = MapParameters(
    irf_index=0, pointing_ra=pointing.ra.deg, pointing_dec=pointing.dec.deg,
    livetime=livetime.to_value("s"),
    background_norm=1.1, background_tilt=0.05, background_gradient=0.06, gradient_angle=0.5,
    sources=[
        SourceParameters(offset_x=0.6, offset_y=0.3, flux=0.3, index=2.5, extension=0.0),
        SourceParameters(offset_x=-0.9, offset_y=-0.5, flux=0.15, index=2.3, extension=0.1),
        SourceParameters(offset_x=0.2, offset_y=-1.3, flux=0.1, index=2.7, extension=0.0),
    ],
)
sim = template.simulate(params, np.random.default_rng(2))

dataset = template.reference_dataset(pointing, livetime)
dataset.counts = Map.from_geom(dataset.counts.geom, data=sim.counts.astype(float))
true_background = template.background(
    params.livetime, params.background_norm, params.background_tilt,
    params.background_gradient, params.gradient_angle,
)
geom = dataset.counts.geom
print(f"{dataset.counts.data.sum():.0f} counts; true background {true_background.sum():.0f}, "
      f"IRF template {dataset.background.data.sum():.0f}, sources {sim.signal.sum():.0f}")

# %%
# Exclusion mask from the CNN candidates
# --------------------------------------
# Circles of 0.3 deg around every candidate; True means "usable for the
# background", gammapy's convention.
candidates = CNNSourceFinder()(dataset)
positions = SkyCoord(candidates["RA"], candidates["DEC"], unit="deg")
image_geom = geom.to_image()
if len(positions):
    exclusion = ~image_geom.region_mask([CircleSkyRegion(p, 0.3 * u.deg) for p in positions])
else:
    exclusion = Map.from_geom(image_geom, data=np.ones(image_geom.data_shape, bool))
print(f"{len(candidates)} candidate(s) excluded")

# %%
# The three estimates
# -------------------
# Ring works on an energy-integrated image; the others keep the energy axis
# and are integrated afterwards for the comparison. Each method runs twice and
# the second run is timed (the first loads the network).
cnn_maker = CNNBackgroundMaker()
fov_maker = FoVBackgroundMaker(method="scale", exclusion_mask=exclusion)
ring_maker = RingBackgroundMaker(r_in=0.5 * u.deg, width=0.3 * u.deg, exclusion_mask=exclusion)
runs = {
    "cnn": lambda: cnn_maker.run(dataset),
    # FoVBackgroundMaker attaches its background model to the dataset it is given
    "fov": lambda: fov_maker.run(dataset.copy(name="fov")),
    "ring": lambda: ring_maker.run(dataset.to_image()),
}
results, timings = {}, {}
for name, run in runs.items():
    run()
    start = time.perf_counter()
    results[name] = run()
    timings[name] = time.perf_counter() - start
cnn, fov, ring = results["cnn"], results["fov"], results["ring"]


def image(m):
    """Energy-integrated image of a background cube (numpy)."""
    return np.asarray(m.data, float).reshape((-1,) + geom.data_shape[-2:]).sum(axis=0)


backgrounds = {
    "truth": true_background.sum(axis=0),
    "IRF template": image(dataset.background),
    "cnn": image(cnn.npred_background()),
    "fov": image(fov.npred_background()),
    "ring": image(ring.npred_background()),
}

# %%
# How close to the truth?
# -----------------------
# Total counts over the field of view, and the rms relative deviation from
# the true background in 0.25 deg blocks (10 x 10 pixels), inside 2 deg of
# the centre where all methods have data.
offset = image_geom.get_coord().skycoord.separation(pointing)
inside = (offset < 2 * u.deg)


def block_rms(estimate, truth, n=10):
    shape = (20, n, 20, n)
    e = (estimate * inside).reshape(shape).sum(axis=(1, 3))
    t = (truth * inside).reshape(shape).sum(axis=(1, 3))
    full = inside.reshape(shape).all(axis=(1, 3))
    return np.sqrt(np.mean(((e[full] - t[full]) / t[full]) ** 2))


truth = backgrounds["truth"]
rows = []
for name, estimate in backgrounds.items():
    rows.append(dict(
        method=name,
        total=estimate[inside].sum(),
        ratio_to_truth=estimate[inside].sum() / truth[inside].sum(),
        block_rms=block_rms(estimate, truth),
        time_ms=1e3 * timings.get(name, np.nan),
    ))
table = Table(rows=rows)
for col in ("total", "ratio_to_truth", "block_rms", "time_ms"):
    table[col].info.format = ".3g"
table

# %%
# A block holds ~70 background counts, whose Poisson noise alone is ~12%:
# every method averages over many more pixels than a block (the ring over its
# ring, FoV over the whole field with the template's shape, the CNN with the
# shape it learned), so the block rms measures how well each one follows the
# true shape and level, not noise. The IRF template alone is off by the
# 10% norm and the tilt and gradient it lacks.
#
# Significance maps over each background
# --------------------------------------
# Away from the sources, a good background gives a significance distribution
# of mean 0 and width 1.
estimator = ExcessMapEstimator(correlation_radius=0.1 * u.deg, energy_edges=[0.03, 100] * u.TeV)
significance = {
    "cnn": estimator.run(cnn)["sqrt_ts"],
    "fov": estimator.run(fov)["sqrt_ts"],
    "ring": estimator.run(ring)["sqrt_ts"],
}
off = exclusion.data & inside
for name, m in significance.items():
    values = m.data[0][off & np.isfinite(m.data[0])]
    print(f"{name:5s} significance off the sources: mean {values.mean():+.2f}, "
          f"std {values.std():.2f}")

# %%
# Radial profiles
# ---------------
# The background per pixel against the distance from the pointing: the IRF
# template is too faint, FoV rescales it, ring and CNN follow the counts.
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
edges = np.linspace(0, 2.4, 13)
centres = 0.5 * (edges[1:] + edges[:-1])
index = np.digitize(offset.deg, edges) - 1
for name, estimate in backgrounds.items():
    profile = [estimate[(index == i) & exclusion.data].mean() for i in range(len(centres))]
    style = dict(color="k", lw=3, alpha=0.4) if name == "truth" else {}
    axes[0].plot(centres, profile, label=name, **style)
axes[0].set_xlabel("offset from the pointing (deg)")
axes[0].set_ylabel("background (counts / pixel)")
axes[0].legend()

bins = np.linspace(-5, 5, 41)
for name, m in significance.items():
    values = m.data[0][off & np.isfinite(m.data[0])]
    axes[1].hist(values, bins=bins, histtype="step", density=True, label=name)
axes[1].plot(bins, np.exp(-0.5 * bins**2) / np.sqrt(2 * np.pi), "k--", label="N(0, 1)")
axes[1].set_yscale("log")
axes[1].set_ylim(1e-4, 1)
axes[1].set_xlabel("significance off the sources")
axes[1].legend()
plt.tight_layout()
plt.show()

# %%
# Maps of the relative residual
# -----------------------------
# (estimate - truth) / truth, smoothed over 0.1 deg to see structure rather
# than noise. FoV rescales the template as a whole, so the gradient the
# template lacks remains; the ring follows it with the noise of its rings;
# the CNN learnt to follow level, tilt and gradient from the counts.
from scipy.ndimage import gaussian_filter  # noqa: E402

fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), subplot_kw={"projection": image_geom.wcs})
for ax, name in zip(axes, ("cnn", "fov", "ring")):
    residual = gaussian_filter(backgrounds[name] - truth, 4) / gaussian_filter(truth, 4)
    shown = ax.imshow(np.where(inside, residual, np.nan), origin="lower", cmap="RdBu_r",
                      vmin=-0.3, vmax=0.3)
    ax.scatter(positions.ra.deg, positions.dec.deg, transform=ax.get_transform("icrs"), s=300,
               facecolor="none", edgecolor="k")
    ax.set_title(f"{name}: (estimate - truth) / truth")
    ax.coords[0].set_axislabel("Right Ascension")
    ax.coords[1].set_axislabel("Declination")
    fig.colorbar(shown, ax=ax, shrink=0.8)
plt.tight_layout()
plt.show()
