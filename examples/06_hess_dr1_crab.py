"""
Real data: H.E.S.S. DL3 DR1 Crab Nebula runs
============================================

The networks need nothing but counts, so they run on any DL3 event list.
This example reads the four Crab Nebula runs of the H.E.S.S. first public
test data release (DL3 DR1, H.E.S.S. Collaboration 2018, arXiv:1810.04516)
with `gammapy_cnn.data.read_observations`, bins them into counts-only
datasets with `gammapy_cnn.data.counts_dataset`, and looks for sources

1. in each whole run (~28 min),
2. in the four runs together, run by run (`~gammapy.datasets.Datasets`),
   from the counts alone and with the instrument's background template,
3. in sliding 100 s windows of one run, as a real-time analysis would
   (`gammapy_cnn.data.iter_window_datasets`).

.. note::

   The shipped networks were trained on simulations of CTAO-North, not
   H.E.S.S.: H.E.S.S. has a smaller effective area, a larger PSF and its own
   background. The bright Crab Nebula is found anyway, but scores, false-alarm
   rates and backgrounds on these data are outside the training domain; a
   H.E.S.S. analysis would fine-tune the networks on H.E.S.S. simulations
   first (see :doc:`/user_guide/training`).

The data are read from gammapy's data folder, ``$GAMMAPY_DATA/hess-dl3-dr1``
(`gammapy_cnn.example_data.find_hess_dr1`); without them the example prints
a message and does nothing.
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
from gammapy.datasets import Datasets

from gammapy_cnn import CNNBackgroundMaker, CNNSourceFinder
from gammapy_cnn.data import (
    counts_dataset,
    counts_geom,
    dataset_livetime,
    iter_window_datasets,
    read_observations,
)
from gammapy_cnn.example_data import find_hess_dr1
from gammapy_cnn.templates import AutoExclusionFoVBackgroundMaker, background_template

CRAB = SkyCoord(83.633, 22.0145, unit="deg")
CRAB_RUNS = [23523, 23526, 23559, 23592]


path = find_hess_dr1()
if path is None:
    print("H.E.S.S. DL3 DR1 data not found: set GAMMAPY_DATA to the folder holding "
          "hess-dl3-dr1/. Skipping this example.")
else:
    print(f"H.E.S.S. DL3 DR1 data store: {path}")

# %%
# Read the runs
# -------------
# No IRF is needed: `~gammapy_cnn.data.read_observations` reads events,
# GTIs and pointing from a data store folder or a single event file.
if path is not None:
    observations = read_observations(path, obs_ids=CRAB_RUNS)
    for obs in observations:
        print(f"run {obs.obs_id}: {len(obs.events.table)} events, "
              f"{obs.observation_live_time_duration.to('s'):.0f} livetime, "
              f"pointing {obs.get_pointing_icrs(obs.tmid).to_string('decimal', precision=2)}")

# %%
# Whole runs
# ----------
# Each run's map is centred on its pointing (the Crab is 0.5 deg off axis),
# 5 x 5 deg of 0.025 deg pixels, the networks' native grid. Above 0.5 TeV
# H.E.S.S. is well above its threshold; pixels beyond 2.5 deg from the
# pointing are masked.
if path is not None:
    finder = CNNSourceFinder()
    datasets = [counts_dataset(obs, energy_min=0.5 * u.TeV, name=f"run{obs.obs_id}")
                for obs in observations]
    finder(datasets[0])  # load the networks before timing
    rows = []
    for obs, dataset in zip(observations, datasets):
        start = time.perf_counter()
        table = finder(dataset)
        elapsed = time.perf_counter() - start
        best = table[0] if len(table) else None
        sep = (SkyCoord(best["RA"], best["DEC"], unit="deg").separation(CRAB).deg
               if best is not None else np.nan)
        rows.append(dict(
            run=obs.obs_id, livetime=dataset_livetime(dataset).to_value("s"),
            counts=dataset.counts.data.sum(), n_candidates=len(table),
            best_score=best["score"] if best is not None else np.nan,
            best_significance=best["significance"] if best is not None else np.nan,
            sep_crab=sep, time_ms=1e3 * elapsed,
        ))
    runs = Table(rows=rows)
    for name in runs.colnames[1:]:
        runs[name].info.format = ".4g"
    runs.pprint_all()

# %%
# Four runs stacked
# -----------------
# A stack is searched run by run, as gammapy's ``Analysis`` reduces it: one
# counts dataset per run, all on one geometry (here 8 x 8 deg around the
# Crab, which holds each run's 2.5 deg field), each recording its pointing
# in ``meta_table``. Given them as `~gammapy.datasets.Datasets`, the finder
# estimates every run's background on a map centred on that run's pointing,
# where the networks learnt the acceptance, and fits the candidates on the
# stack (one dataset of the summed counts would mix four shifted acceptances,
# and the finder would warn about it).
if path is not None:
    geom = counts_geom(CRAB, width=8 * u.deg)
    runs = Datasets([counts_dataset(obs, geom=geom, energy_min=0.5 * u.TeV, name=f"run{obs.obs_id}")
                     for obs in observations])
    candidates = finder(runs)
    positions = SkyCoord(candidates["RA"], candidates["DEC"])
    candidates["sep_crab"] = positions.separation(CRAB).to("deg")
    for name in ("RA", "DEC", "score", "false_alarm_rate", "significance", "excess", "pos_err_68",
                 "sep_crab"):
        candidates[name].info.format = ".4g"
    print(f"{sum(dataset_livetime(run) for run in runs):.0f} of livetime, "
          f"{sum(run.counts.data.sum() for run in runs):.0f} counts")
    candidates["Source_Name", "RA", "DEC", "score", "significance", "excess", "pos_err_68",
               "sep_crab"].pprint_all()

# %%
# The stacked counts, the sum of the runs' CNN backgrounds (``stack_reduce``) and the excess
# (counts minus background, smoothed by 0.05 deg), candidates circled
# (radius ``pos_err_68``, enlarged x5 to be visible):
if path is not None:
    stacked = CNNBackgroundMaker().run(runs).stack_reduce(name="crab-stacked")
    counts = stacked.counts.sum_over_axes(keepdims=False)
    background = stacked.npred_background().sum_over_axes(keepdims=False)
    excess = (counts - background).smooth("0.05 deg")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), subplot_kw={"projection": geom.wcs})
    images = [(counts.smooth("0.05 deg"), "counts"), (background, "CNN background, run by run"),
              (excess, "excess")]
    for ax, (image, title) in zip(axes, images):
        image.plot(ax=ax, add_cbar=True, cmap="viridis")
        ax.set_title(title)
        for row in candidates:
            ax.scatter(row["RA"], row["DEC"], transform=ax.get_transform("icrs"),
                       s=max(5 * row["pos_err_68"] / 0.025, 3) ** 2, facecolor="none",
                       edgecolor="white")
    plt.tight_layout()
    plt.show()

# %%
# With the instrument's background template
# -----------------------------------------
# The counts-only background lets the acceptance's shape follow the counts,
# which a faint source of a degree (a supernova-remnant shell) pays for.
# Where the instrument's background model is trusted, give each run its IRF
# background (`~gammapy_cnn.templates.background_template`), normalise it outside
# an exclusion mask found in the counts of the stack
# (`~gammapy_cnn.templates.AutoExclusionFoVBackgroundMaker`, gammapy's
# ``FoVBackgroundMaker`` underneath) and let the finder search on those
# backgrounds. On the point-like Crab both give the same answer.
if path is not None:
    for run, obs in zip(runs, observations):
        run.background = background_template(obs, run.counts.geom)
    normalised = AutoExclusionFoVBackgroundMaker().run(runs)
    for run in normalised:
        print(f"{run.name}: template norm {run.models[f'{run.name}-bkg'].spectral_model.norm.value:.3f}")
    with_template = CNNSourceFinder(background_network=None)(normalised)
    for name in ("RA", "DEC", "score", "significance", "excess", "pos_err_68"):
        with_template[name].info.format = ".4g"
    with_template["Source_Name", "RA", "DEC", "score", "significance", "excess", "pos_err_68"].pprint_all()

# %%
# Sliding 100 s windows of one run
# --------------------------------
# A real-time analysis sees the run grow: `~gammapy_cnn.data.iter_window_datasets`
# reads the events once and bins 100 s windows every 100 s. Is the Crab
# found in each window, and how fast?
if path is not None:
    windows = []
    for t_start, t_stop, window in iter_window_datasets(
        observations[0], duration=100 * u.s, step=100 * u.s, energy_min=0.5 * u.TeV
    ):
        start = time.perf_counter()
        table = finder(window)
        elapsed = time.perf_counter() - start
        if len(table):
            sep = SkyCoord(table["RA"], table["DEC"]).separation(CRAB)
            crab = int(np.argmin(sep))
            found = sep[crab] < 0.1 * u.deg
        else:
            found = False
        windows.append(dict(
            t_start=round((t_start - observations[0].tstart).to_value("s"), 1),
            counts=window.counts.data.sum(), n_candidates=len(table),
            crab_found=bool(found),
            crab_score=table["score"][crab] if found else np.nan,
            crab_significance=table["significance"][crab] if found else np.nan,
            time_ms=1e3 * elapsed,
        ))
    windows = Table(rows=windows)
    for name in ("crab_score", "crab_significance", "time_ms"):
        windows[name].info.format = ".3g"
    windows.pprint_all()
    print(f"Crab found in {windows['crab_found'].sum()} of {len(windows)} windows of 100 s; "
          f"median finder time {np.median(windows['time_ms']):.0f} ms per window")

# %%
# ``gammapy-cnn find`` does the same from the shell and writes the
# candidates of every window (ECSV and DS9 regions)::
#
#     gammapy-cnn find $GAMMAPY_DATA/hess-dl3-dr1 --obs-id 23523 --duration 100s \
#         --step 100s --energy-min 0.5TeV --output crab-windows
