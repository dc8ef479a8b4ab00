"""
From CNN candidates to a likelihood fit
=======================================

The CNN answers "where are the sources?" in milliseconds. The usual gammapy
tools then measure them. This example goes the whole way on a simulated
5 min observation with two sources:

1. `~gammapy_cnn.CNNSourceFinder.run_catalog` gives a
   `~gammapy_cnn.CandidateCatalog` (gammapy's `~gammapy.catalog.SourceCatalog`
   interface) and DS9 regions;
2. aperture photometry at each candidate over the CNN background
   (`~gammapy.datasets.MapDataset.to_spectrum_dataset` in a 0.1 deg circle);
3. a 3D likelihood fit with gammapy's `~gammapy.modeling.Fit`, seeded by
   `~gammapy_cnn.CandidateCatalog.to_models`, with the CNN background as the
   background template (its norm is fitted too).

The fit needs the instrument response (exposure, PSF, energy dispersion) for
the source models; the background still comes from the counts.
"""

# %%
# Setup
# -----
import tempfile
import time
from pathlib import Path

import astropy.units as u
import matplotlib.pyplot as plt
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table
from gammapy.maps import Map
from gammapy.modeling import Fit
from gammapy.modeling.models import FoVBackgroundModel, Models
from regions import CircleSkyRegion

from gammapy_cnn import CNNBackgroundMaker, CNNSourceFinder
from gammapy_cnn.finders import write_ds9
from gammapy_cnn.simulation import (
    CRAB_AMPLITUDE,
    MapParameters,
    SimulationTemplate,
    SourceParameters,
)

# %%
# A simulated observation with its IRFs
# -------------------------------------
template = SimulationTemplate("default-z20")
pointing = SkyCoord(266.4, -28.9, unit="deg")
params = MapParameters(
    irf_index=0, pointing_ra=pointing.ra.deg, pointing_dec=pointing.dec.deg, livetime=300.0,
    background_norm=1.05, background_tilt=0.0, background_gradient=0.0, gradient_angle=0.0,
    sources=[
        SourceParameters(offset_x=0.7, offset_y=0.4, flux=0.5, index=2.5, extension=0.0),
        SourceParameters(offset_x=-0.6, offset_y=-0.8, flux=0.3, index=2.2, extension=0.0),
    ],
)
sim = template.simulate(params, np.random.default_rng(11))
dataset = template.reference_dataset(pointing, params.livetime * u.s)
dataset.counts = Map.from_geom(dataset.counts.geom, data=sim.counts.astype(float))
truth = Table(rows=[(s["ra"], s["dec"], s["flux"], s["index"], s["npred"]) for s in sim.sources],
              names=["RA", "DEC", "flux_crab", "index", "npred"])
truth

# %%
# Candidates as a catalogue
# -------------------------
finder = CNNSourceFinder()
catalog = finder.run_catalog(dataset)
candidates = catalog.table
for name in ("RA", "DEC", "score", "significance", "excess", "pos_err_68"):
    candidates[name].info.format = ".4g"
candidates["Source_Name", "RA", "DEC", "score", "significance", "excess", "pos_err_68"]

# %%
# A `~gammapy_cnn.CandidateCatalog` is indexed by row or by name, like
# gammapy's catalogues, and converts to regions and models.
best = catalog[0]
print(best.name, best.position.to_string("decimal", precision=4))
for region in catalog.to_regions():
    print(type(region).__name__, region.meta["text"], f"radius {region.radius:.4f}")

# %%
# DS9 region file (circles of radius ``pos_err_68``):
tmp = tempfile.TemporaryDirectory()  # removed when the example ends
output = Path(tmp.name)
write_ds9(candidates, output / "candidates.reg")
print((output / "candidates.reg").read_text())

# %%
# Aperture photometry over the CNN background
# -------------------------------------------
# `~gammapy.datasets.MapDataset.to_spectrum_dataset` sums counts and
# background in a circle; ``info_dict`` gives excess and Li & Ma
# significance (background known, Cash statistic). The circle must lie
# inside the map: candidates at the edge are left out.
dataset_cnn = CNNBackgroundMaker().run(dataset)
rows = []
for source in catalog:
    if source.position.separation(pointing) > 2.35 * u.deg:
        continue
    region = CircleSkyRegion(source.position, 0.1 * u.deg)
    info = dataset_cnn.to_spectrum_dataset(region).info_dict()
    rows.append(dict(Source_Name=source.name, counts=info["counts"],
                     background=info["background"], excess=info["excess"],
                     sqrt_ts=info["sqrt_ts"]))
photometry = Table(rows=rows)
for name in ("counts", "background", "excess", "sqrt_ts"):
    photometry[name].info.format = ".4g"
photometry

# %%
# Likelihood fit seeded by the candidates
# ---------------------------------------
# ``to_models`` gives one point source with a power-law spectrum per
# candidate; their positions start at the candidates and their errors at
# ``pos_err``. We fit the two best candidates and a
# `~gammapy.modeling.models.FoVBackgroundModel` norm on the CNN background,
# starting each amplitude from the candidate's excess and letting each
# position move by 0.3 deg at most.
models = catalog.to_models()[:2]
dataset_fit = dataset_cnn.copy(name="fit")
dataset_fit.models = Models([*models, FoVBackgroundModel(dataset_name="fit")])
for model, row in zip(models, candidates):
    lon, lat = model.spatial_model.lon_0, model.spatial_model.lat_0
    lat.min, lat.max = lat.value - 0.3, lat.value + 0.3
    dlon = 0.3 / np.cos(np.deg2rad(lat.value))
    lon.min, lon.max = lon.value - dlon, lon.value + dlon
    npred = dataset_fit.npred_signal(model_names=[model.name]).data.sum()
    if np.isfinite(row["excess"]) and row["excess"] > 0 and npred > 0:
        model.spectral_model.amplitude.value *= row["excess"] / npred

start = time.perf_counter()
result = Fit().run([dataset_fit])
print(f"fit in {time.perf_counter() - start:.1f} s, success: {result.success}")

# %%
# Fitted positions and fluxes next to the truth:
true_positions = SkyCoord(truth["RA"], truth["DEC"], unit="deg")
rows = []
for model, row in zip(models, candidates):
    spatial, spectral = model.spatial_model, model.spectral_model
    fitted = spatial.position
    seed = SkyCoord(row["RA"], row["DEC"], unit="deg")
    nearest = np.argmin(fitted.separation(true_positions))
    flux = (spectral.amplitude.quantity / CRAB_AMPLITUDE).to_value("")
    flux_err = spectral.amplitude.error / CRAB_AMPLITUDE.value
    rows.append(dict(
        model=model.name, seed_to_truth=seed.separation(true_positions[nearest]).deg,
        fit_to_truth=fitted.separation(true_positions[nearest]).deg,
        pos_err=spatial.lat_0.error, flux_crab=flux, flux_err=flux_err,
        true_flux=truth["flux_crab"][nearest], index=spectral.index.value,
        true_index=truth["index"][nearest],
    ))
fitted = Table(rows=rows)
for name in fitted.colnames[1:]:
    fitted[name].info.format = ".3g"
print(f"background norm: {dataset_fit.background_model.spectral_model.norm.value:.3f}")
fitted

# %%
# Around each fitted source: the counts (0.025 deg pixels), the truth (+), the
# CNN candidate (o) and the fitted position (x).
counts = dataset.counts.sum_over_axes(keepdims=False)
fig = plt.figure(figsize=(12, 5))
for i, (model, row) in enumerate(zip(models, candidates)):
    cutout = counts.cutout(model.spatial_model.position, 0.4 * u.deg)
    ax = fig.add_subplot(1, 2, i + 1, projection=cutout.geom.wcs)
    cutout.plot(ax=ax, add_cbar=True, cmap="viridis")
    icrs = ax.get_transform("icrs")
    ax.scatter(truth["RA"], truth["DEC"], transform=icrs, marker="+", s=800, linewidths=2,
               color="cyan", label="truth")
    ax.scatter(row["RA"], row["DEC"], transform=icrs, marker="o", s=300, facecolor="none",
               edgecolor="white", label="CNN candidate")
    ax.scatter(model.spatial_model.lon_0.value, model.spatial_model.lat_0.value, transform=icrs,
               marker="x", s=150, color="red", label="fit")
    ax.set_xlim(-0.5, cutout.data.shape[1] - 0.5)
    ax.set_ylim(-0.5, cutout.data.shape[0] - 0.5)
    ax.set_title(f"{model.name}: counts")
    ax.legend(loc="upper left", fontsize=8)
plt.tight_layout()
plt.show()
