"""Tests of gammapy_cnn.data: counts-only datasets from DL3 events.

Tests marked ``requires_hess`` use the H.E.S.S. DL3 DR1 subset in
``$GAMMAPY_DATA/hess-dl3-dr1`` and skip when it is absent. The other tests
build observations in memory.
"""

import time

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time
from gammapy.data import GTI, EventList, FixedPointingInfo, Observation, Observations
from gammapy.datasets import Datasets, MapDataset
from gammapy.maps import Map, MapAxis, WcsGeom
from gammapy.utils.time import time_ref_to_dict

from gammapy_cnn.data import (
    counts_dataset,
    counts_geom,
    dataset_livetime,
    iter_window_datasets,
    read_observations,
    sliding_windows,
)
from gammapy_cnn.example_data import find_hess_dr1, gammapy_data_dir

from .conftest import HESS_DR1

HESS_DIR = HESS_DR1
requires_hess = pytest.mark.skipif(
    not (HESS_DIR / "hdu-index.fits.gz").exists(),
    reason=(
        f"H.E.S.S. DL3 DR1 reference data not found in {HESS_DIR} "
        "(set GAMMAPY_DATA to the folder holding hess-dl3-dr1/)"
    ),
)

CRAB = SkyCoord(83.633, 22.0145, unit="deg", frame="icrs")
CRAB_RUN = 23523  # pointing 0.5 deg south of the Crab, 1687 s GTI
CRAB_RUN_2 = 23526  # pointing 0.5 deg north of the Crab
OFF_RUN = 20275  # 3C 273 field, no detected source


# --------------------------------------------------------------------------
# synthetic observations, in memory
# --------------------------------------------------------------------------
T_REF = Time("2025-01-01T00:00:00", scale="tt")
POINTING = SkyCoord(83.6, 22.0, unit="deg", frame="icrs")


def make_observation(
    times_s, ra, dec, energy_tev, gti_s=(0.0, 600.0), obs_id=1, pointing=POINTING
):
    """In-memory observation with the given events (times in s after T_REF)."""
    table = Table()
    table["RA"] = np.asarray(ra, dtype=float) * u.deg
    table["DEC"] = np.asarray(dec, dtype=float) * u.deg
    table["ENERGY"] = np.asarray(energy_tev, dtype=float) * u.TeV
    table["TIME"] = T_REF + np.asarray(times_s, dtype=float) * u.s
    table.meta.update(time_ref_to_dict(T_REF))  # needed by Observation.write
    table.meta["OBS_ID"] = obs_id
    gti = GTI.create([gti_s[0]] * u.s, [gti_s[1]] * u.s, reference_time=T_REF)
    return Observation(
        obs_id=obs_id,
        events=EventList(table),
        gti=gti,
        pointing=FixedPointingInfo(fixed_icrs=pointing),
    )


def random_observation(n=2000, seed=0, obs_id=1, gti_s=(0.0, 600.0)):
    rng = np.random.default_rng(seed)
    return make_observation(
        times_s=np.sort(rng.uniform(gti_s[0], gti_s[1], n)),
        ra=POINTING.ra.deg + rng.normal(0, 1.0, n),
        dec=POINTING.dec.deg + rng.normal(0, 1.0, n),
        energy_tev=10 ** rng.uniform(-1.3, 1.8, n),
        gti_s=gti_s,
        obs_id=obs_id,
    )


def pixel_separation(geom, position):
    return geom.to_image().get_coord().skycoord.separation(position)


def test_counts_geom_defaults():
    geom = counts_geom(POINTING)
    assert isinstance(geom, WcsGeom)
    assert geom.data_shape == (7, 200, 200)
    assert geom.projection == "TAN"
    assert geom.frame == "icrs"
    assert u.isclose(geom.pixel_scales[0], 0.025 * u.deg)
    assert geom.center_skydir.separation(POINTING) < 1e-6 * u.deg
    axis = geom.axes["energy"]
    assert axis.nbin == 7
    assert u.isclose(axis.edges[0], 0.03 * u.TeV)
    assert u.isclose(axis.edges[-1], 100 * u.TeV)


def test_counts_geom_options_and_errors():
    axis = MapAxis.from_energy_bounds("1 TeV", "10 TeV", nbin=2, name="energy")
    geom = counts_geom(POINTING, width=2 * u.deg, binsz=0.1 * u.deg, energy_axis=axis,
                       frame="galactic")
    assert geom.data_shape == (2, 20, 20)
    assert geom.frame == "galactic"
    assert geom.center_skydir.separation(POINTING) < 1e-6 * u.deg
    # width not a multiple of binsz: npix = round(width / binsz)
    assert counts_geom(POINTING, width=1.04 * u.deg, binsz=0.1 * u.deg).data_shape[1:] == (10, 10)

    with pytest.raises(ValueError, match="center"):
        counts_geom((83.6, 22.0))
    with pytest.raises(ValueError, match="binsz"):
        counts_geom(POINTING, binsz=0.1)
    with pytest.raises(ValueError, match="width"):
        counts_geom(POINTING, width=-1 * u.deg)
    with pytest.raises(ValueError, match="width"):
        counts_geom(POINTING, width=1 * u.TeV)
    with pytest.raises(ValueError, match="frame"):
        counts_geom(POINTING, frame="altaz")
    with pytest.raises(ValueError, match="energy"):
        counts_geom(POINTING, energy_axis=MapAxis.from_bounds(0, 1, 2, name="x"))


def test_synthetic_counts_only_dataset_matches_fill_events():
    obs = random_observation()
    dataset = counts_dataset(obs, name="synthetic")
    assert isinstance(dataset, MapDataset)
    assert dataset.name == "synthetic"
    assert dataset.exposure is None
    assert dataset.background is None
    assert dataset.psf is None
    assert dataset.edisp is None
    assert dataset.mask_safe.data.dtype == bool

    # same binning as gammapy's own Map.fill_events
    reference = Map.from_geom(dataset.counts.geom)
    reference.fill_events(obs.events)
    np.testing.assert_array_equal(dataset.counts.data, reference.data)
    assert dataset.counts.data.sum() > 1500  # most of the 2000 events are in the map

    # default geometry is centred on the pointing
    assert dataset.counts.geom.center_skydir.separation(POINTING) < 1e-6 * u.deg
    assert u.isclose(dataset.gti.time_sum, 600 * u.s)
    assert u.isclose(dataset_livetime(dataset), 600 * u.s)  # no dead time given


def test_synthetic_exact_time_energy_and_geom_selection():
    # 10 events at the pointing at t = 5, 15, ..., 95 s with E = 0.1, 0.2, ... 1.0 TeV,
    # plus one event outside the map and one after the GTI stop (t = 100.5 s)
    times = np.r_[np.arange(5, 100, 10), 50, 100.5]
    ra = np.r_[np.full(10, POINTING.ra.deg), POINTING.ra.deg + 10, POINTING.ra.deg]
    dec = np.full(12, POINTING.dec.deg)
    energy = np.r_[np.arange(1, 11) / 10, 1.0, 1.0]
    obs = make_observation(times, ra, dec, energy, gti_s=(0, 100), obs_id=42)

    assert counts_dataset(obs).counts.data.sum() == 10  # outside map and after GTI dropped
    sliced = counts_dataset(obs, start=20 * u.s, duration=30 * u.s)  # t in [20, 50)
    assert sliced.counts.data.sum() == 3
    assert u.isclose(sliced.gti.time_sum, 30 * u.s)
    assert counts_dataset(obs, start=50 * u.s).counts.data.sum() == 5  # to the end
    assert counts_dataset(obs, duration=25 * u.s).counts.data.sum() == 2  # [0, 25): 5, 15 s
    # half-open energy cut: 0.3 <= E < 0.6 TeV
    cut = counts_dataset(obs, energy_min=0.3 * u.TeV, energy_max=600 * u.GeV)
    assert cut.counts.data.sum() == 3
    # a slice partly outside the GTI is cropped to it
    cropped = counts_dataset(obs, start=80 * u.s, duration=100 * u.s)
    assert cropped.counts.data.sum() == 2
    assert u.isclose(cropped.gti.time_sum, 20 * u.s)


def test_synthetic_empty_selection_gives_zero_counts():
    obs = random_observation(n=200)
    dataset = counts_dataset(obs, energy_min=500 * u.TeV)
    assert dataset.counts.data.sum() == 0
    assert not dataset.mask_safe.data.any()  # no energy bin above 500 TeV

    empty = make_observation([], [], [], [], obs_id=3)
    dataset = counts_dataset(empty, start=100 * u.s, duration=100 * u.s)
    assert dataset.counts.data.shape == (7, 200, 200)
    assert dataset.counts.data.sum() == 0
    assert u.isclose(dataset_livetime(dataset), 100 * u.s)


def test_synthetic_slice_outside_gti_names_observation():
    obs = random_observation(n=100, obs_id=777)
    with pytest.raises(ValueError, match=r"observation 777 does not overlap"):
        counts_dataset(obs, start=700 * u.s, duration=100 * u.s)
    with pytest.raises(ValueError, match="777"):
        counts_dataset(obs, start=-200 * u.s, duration=100 * u.s)


def test_synthetic_offset_mask_fraction():
    obs = random_observation(n=100)
    geom = counts_geom(POINTING, width=5 * u.deg, binsz=0.05 * u.deg)
    dataset = counts_dataset(obs, geom=geom, offset_max=1 * u.deg)
    image = dataset.mask_safe.data[0]
    assert np.isclose(image.mean(), np.pi * 1.0**2 / 25, rtol=0.03)
    inside = pixel_separation(geom, POINTING) <= 1 * u.deg
    np.testing.assert_array_equal(image, inside)
    # all energy bins share the spatial mask when there is no energy cut
    assert (dataset.mask_safe.data == image).all()
    # offset_max=None: everything safe
    assert counts_dataset(obs, geom=geom, offset_max=None).mask_safe.data.all()
    # offset cut masks but does not remove events
    unmasked = counts_dataset(obs, geom=geom, offset_max=None)
    assert dataset.counts.data.sum() == unmasked.counts.data.sum()


def test_synthetic_energy_mask_bins():
    obs = random_observation(n=500)
    axis = MapAxis.from_energy_edges([0.1, 1, 10, 100] * u.TeV, name="energy")
    geom = counts_geom(POINTING, width=2 * u.deg, binsz=0.1 * u.deg, energy_axis=axis)
    dataset = counts_dataset(obs, geom=geom, energy_min=0.5 * u.TeV, energy_max=10 * u.TeV,
                             offset_max=None)
    # bin [0.1, 1) only partly inside the cut: masked; [1, 10) inside; [10, 100) outside
    np.testing.assert_array_equal(dataset.mask_safe.data.all(axis=(1, 2)), [False, True, False])
    np.testing.assert_array_equal(dataset.mask_safe.data.any(axis=(1, 2)), [False, True, False])
    assert dataset.counts.data[2].sum() == 0
    assert dataset.counts.data[0].sum() > 0  # events in [0.5, 1) TeV are kept


def test_synthetic_stacking_sums_counts_and_ors_masks():
    east = SkyCoord(POINTING.ra + 1.5 * u.deg, POINTING.dec)
    obs_a = random_observation(n=800, seed=1, obs_id=1)
    obs_b = make_observation(
        times_s=np.linspace(1000, 1500, 300), ra=np.full(300, east.ra.deg),
        dec=np.full(300, east.dec.deg), energy_tev=np.full(300, 1.0),
        gti_s=(1000, 1600), obs_id=2, pointing=east,
    )
    geom = counts_geom(POINTING, width=6 * u.deg, binsz=0.1 * u.deg)
    da = counts_dataset(obs_a, geom=geom, offset_max=1 * u.deg)
    db = counts_dataset(obs_b, geom=geom, offset_max=1 * u.deg)
    both = counts_dataset(Observations([obs_a, obs_b]), geom=geom, offset_max=1 * u.deg)
    np.testing.assert_array_equal(both.counts.data, da.counts.data + db.counts.data)
    np.testing.assert_array_equal(both.mask_safe.data, da.mask_safe.data | db.mask_safe.data)
    assert both.mask_safe.data.sum() > da.mask_safe.data.sum()
    assert u.isclose(both.gti.time_sum, 1200 * u.s)
    assert u.isclose(dataset_livetime(both), 1200 * u.s)
    assert list(both.meta_table["OBS_ID"][0]) == [1, 2]
    # a list mixing Observation and Observations is accepted
    mixed = counts_dataset([obs_a, Observations([obs_b])], geom=geom, offset_max=1 * u.deg)
    np.testing.assert_array_equal(mixed.counts.data, both.counts.data)


def test_synthetic_sliding_windows_count():
    obs = random_observation(n=10, gti_s=(0, 1687))
    windows = list(sliding_windows(obs, 100 * u.s, 50 * u.s))
    assert len(windows) == 32  # starts 0, 50, ..., 1550; [1600, 1700) is dropped
    assert u.isclose((windows[0][0] - obs.tstart).to(u.s), 0 * u.s, atol=1e-6 * u.s)
    assert u.isclose((windows[-1][1] - obs.tstart).to(u.s), 1650 * u.s, atol=1e-6 * u.s)
    for t_start, t_stop in windows:
        assert u.isclose((t_stop - t_start).to(u.s), 100 * u.s, atol=1e-6 * u.s)
    # a window ending exactly at the GTI stop is kept
    exact = random_observation(n=10, gti_s=(0, 1700))
    assert len(list(sliding_windows(exact, 100 * u.s, 50 * u.s))) == 33
    # non-overlapping windows, and a window longer than the run
    assert len(list(sliding_windows(obs, 100 * u.s, 100 * u.s))) == 16
    assert list(sliding_windows(obs, 2000 * u.s, 50 * u.s)) == []
    with pytest.raises(ValueError, match="step"):
        sliding_windows(obs, 100 * u.s, 0 * u.s)
    with pytest.raises(ValueError, match="duration"):
        sliding_windows(obs, 100, 50 * u.s)


def test_synthetic_iter_window_datasets_match_counts_dataset():
    obs = random_observation(n=3000, gti_s=(0, 400))
    results = list(iter_window_datasets(obs, 100 * u.s, 50 * u.s, energy_min=0.5 * u.TeV))
    assert len(results) == 7
    total = 0
    for k, (t_start, t_stop, dataset) in enumerate(results):
        assert u.isclose((t_start - obs.tstart).to(u.s), 50 * k * u.s, atol=1e-6 * u.s)
        reference = counts_dataset(
            obs, start=50 * k * u.s, duration=100 * u.s, energy_min=0.5 * u.TeV,
            geom=dataset.counts.geom,
        )
        np.testing.assert_array_equal(dataset.counts.data, reference.counts.data)
        np.testing.assert_array_equal(dataset.mask_safe.data, reference.mask_safe.data)
        assert u.isclose(dataset.gti.time_sum, 100 * u.s)
        total += dataset.counts.data.sum()
    assert total > 0
    assert len({dataset.name for _, _, dataset in results}) == 7  # unique names
    with pytest.raises(ValueError, match="unknown keyword"):
        iter_window_datasets(obs, energy_minimum=1 * u.TeV)


def test_bad_inputs_raise_clear_errors():
    obs = random_observation(n=50)
    with pytest.raises(ValueError, match="duration"):
        counts_dataset(obs, duration=100)
    with pytest.raises(ValueError, match="duration"):
        counts_dataset(obs, duration=-5 * u.s)
    with pytest.raises(ValueError, match="start"):
        counts_dataset(obs, start=1 * u.deg)
    with pytest.raises(ValueError, match="energy_max"):
        counts_dataset(obs, energy_min=10 * u.TeV, energy_max=1 * u.TeV)
    with pytest.raises(ValueError, match="offset_max"):
        counts_dataset(obs, offset_max=0 * u.deg)
    with pytest.raises(ValueError, match="observations"):
        counts_dataset([])
    with pytest.raises(ValueError, match="observations"):
        counts_dataset(42)
    with pytest.raises(ValueError, match="read_observations"):
        counts_dataset("some/file.fits")
    image_geom = WcsGeom.create(skydir=POINTING, npix=10, binsz=0.1)
    with pytest.raises(ValueError, match="energy"):
        counts_dataset(obs, geom=image_geom)


def test_dataset_write_read_keeps_livetime(tmp_path):
    obs = random_observation(n=300)
    dataset = counts_dataset(obs, start=100 * u.s, duration=100 * u.s, name="w")
    path = tmp_path / "dataset.fits"
    dataset.write(path)
    read = MapDataset.read(path)
    np.testing.assert_array_equal(read.counts.data, dataset.counts.data)
    np.testing.assert_array_equal(read.mask_safe.data, dataset.mask_safe.data)
    assert u.isclose(dataset_livetime(read), 100 * u.s)
    assert u.isclose(read.gti.time_sum, 100 * u.s)


def test_read_observations_synthetic_file_roundtrip(tmp_path):
    obs = random_observation(n=400, obs_id=12345)
    path = tmp_path / "events.fits.gz"
    obs.write(path, include_irfs=False)
    observations = read_observations(path)
    assert isinstance(observations, Observations)
    assert len(observations) == 1
    assert observations[0].obs_id == 12345
    np.testing.assert_array_equal(
        counts_dataset(observations).counts.data, counts_dataset(obs).counts.data
    )
    with pytest.raises(ValueError, match="12345"):
        read_observations(path, obs_ids=[1])


def test_read_observations_events_only_file_without_gti_hdu(tmp_path):
    from astropy.io import fits

    obs = random_observation(n=50, obs_id=321, gti_s=(0, 300))
    full = tmp_path / "full.fits"
    obs.write(full, include_irfs=False)
    with fits.open(full) as hdulist:
        events_hdu = hdulist["EVENTS"].copy()
    events_hdu.header["TSTART"] = 0.0  # s after MJDREF = T_REF
    events_hdu.header["TSTOP"] = 300.0
    no_gti = tmp_path / "no_gti.fits"
    fits.HDUList([fits.PrimaryHDU(), events_hdu]).writeto(no_gti)
    observations = read_observations(no_gti)
    assert observations[0].obs_id == 321
    assert u.isclose(observations[0].gti.time_sum, 300 * u.s)
    assert counts_dataset(observations).counts.data.sum() == counts_dataset(obs).counts.data.sum()

    del events_hdu.header["TSTART"]
    bare = tmp_path / "bare.fits"
    fits.HDUList([fits.PrimaryHDU(), events_hdu]).writeto(bare)
    with pytest.raises(ValueError, match="TSTART"):
        read_observations(bare)

    # an EVENTS table without rows is a valid (empty) observation
    empty = make_observation([], [], [], [], obs_id=5)
    empty_path = tmp_path / "empty.fits"
    empty.write(empty_path, include_irfs=False)
    dataset = counts_dataset(read_observations(empty_path))
    assert dataset.counts.data.sum() == 0


def test_read_observations_bad_paths(tmp_path):
    missing = tmp_path / "no_such_run.fits.gz"
    with pytest.raises(ValueError, match="no_such_run"):
        read_observations(missing)
    with pytest.raises(ValueError, match="does not exist"):
        read_observations(missing)
    with pytest.raises(ValueError, match="hdu-index"):
        read_observations(tmp_path)  # a folder without index files
    not_fits = tmp_path / "notes.txt"
    not_fits.write_text("not a FITS file")
    with pytest.raises(ValueError, match="FITS"):
        read_observations(not_fits)
    from astropy.io import fits

    no_events = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((2, 2)))]).writeto(no_events)
    with pytest.raises(ValueError, match="no events"):
        read_observations(no_events)


# --------------------------------------------------------------------------
# H.E.S.S. DL3 DR1
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hess_obs():
    if not (HESS_DIR / "hdu-index.fits.gz").exists():
        pytest.skip(f"H.E.S.S. DL3 DR1 reference data not found in {HESS_DIR}")
    observations = read_observations(HESS_DIR, obs_ids=[CRAB_RUN, CRAB_RUN_2, OFF_RUN])
    return {obs.obs_id: obs for obs in observations}


def counts_in_circle(dataset, position, radius=0.2 * u.deg):
    inside = pixel_separation(dataset.counts.geom, position) < radius
    return dataset.counts.data.sum(axis=0)[inside].sum()


@requires_hess
def test_hess_crab_excess_over_source_free_regions(hess_obs):
    crab_run = hess_obs[CRAB_RUN]
    crab = counts_dataset(crab_run)
    pointing = crab_run.get_pointing_icrs(crab_run.tmid)
    assert abs(pointing.separation(CRAB).deg - 0.5) < 0.01
    on = counts_in_circle(crab, CRAB)
    # the same offset on the other side of the pointing, in the same run
    mirror = SkyCoord(pointing.ra, pointing.dec - 0.5 * u.deg)
    off_same_run = counts_in_circle(crab, mirror)
    # a source-free field (3C 273), 0.5 deg from its pointing
    off_run = hess_obs[OFF_RUN]
    off_pointing = off_run.get_pointing_icrs(off_run.tmid)
    off_field = counts_in_circle(
        counts_dataset(off_run), SkyCoord(off_pointing.ra, off_pointing.dec - 0.5 * u.deg)
    )
    assert on > 150
    assert on > 3 * off_same_run
    assert on > 2.5 * off_field


@requires_hess
def test_hess_time_slice_fraction_and_livetime(hess_obs):
    obs = hess_obs[CRAB_RUN]
    full = counts_dataset(obs)
    ontime = full.gti.time_sum
    assert u.isclose(ontime, 1687 * u.s)
    assert u.isclose(dataset_livetime(full), obs.observation_live_time_duration, rtol=1e-6)

    window = counts_dataset(obs, start=300 * u.s, duration=100 * u.s)
    expected = full.counts.data.sum() * float(100 * u.s / ontime)
    assert window.counts.data.sum() == pytest.approx(expected, rel=0.2)
    assert u.isclose(window.gti.time_sum, 100 * u.s)
    dead = obs.observation_dead_time_fraction
    assert u.isclose(dataset_livetime(window), 100 * u.s * (1 - dead))
    # same events as gammapy's Observation.select_time for a slice inside the GTI
    reference = Map.from_geom(window.counts.geom)
    reference.fill_events(obs.select_time(obs.tstart + [300, 400] * u.s).events)
    np.testing.assert_array_equal(window.counts.data, reference.data)


@requires_hess
def test_hess_slices_outside_gti_raise(hess_obs):
    obs = hess_obs[CRAB_RUN]
    with pytest.raises(ValueError, match=f"observation {CRAB_RUN}"):
        counts_dataset(obs, start=2000 * u.s, duration=100 * u.s)
    with pytest.raises(ValueError, match=f"observation {CRAB_RUN}"):
        counts_dataset(obs, start=-150 * u.s, duration=100 * u.s)
    # in a stack, the message names the run that has no data in the slice
    short = random_observation(n=10, obs_id=999, gti_s=(0, 500))
    with pytest.raises(ValueError, match="observation 999"):
        counts_dataset([obs, short], start=1000 * u.s, duration=100 * u.s)


@requires_hess
def test_hess_stacking_two_runs(hess_obs):
    run_a, run_b = hess_obs[CRAB_RUN], hess_obs[CRAB_RUN_2]
    geom = counts_geom(CRAB)
    da = counts_dataset(run_a, geom=geom, start=0 * u.s, duration=600 * u.s)
    db = counts_dataset(run_b, geom=geom, start=0 * u.s, duration=600 * u.s)
    both = counts_dataset([run_a, run_b], geom=geom, start=0 * u.s, duration=600 * u.s)
    np.testing.assert_array_equal(both.counts.data, da.counts.data + db.counts.data)
    ratio = both.counts.data.sum() / da.counts.data.sum()
    assert 1.6 < ratio < 2.4
    assert u.isclose(both.gti.time_sum, 1200 * u.s)
    assert u.isclose(dataset_livetime(both), dataset_livetime(da) + dataset_livetime(db))
    # the two wobble pointings (0.5 deg south / north of the Crab) widen the safe region
    assert both.mask_safe.data.sum() > da.mask_safe.data.sum()
    # consistent with gammapy's own stacking of the two counts-only datasets
    stacked = Datasets([da, db]).stack_reduce()
    masked_sum = (da.counts.data * da.mask_safe.data).sum() + (
        db.counts.data * db.mask_safe.data
    ).sum()
    assert stacked.counts.data.sum() == masked_sum


@requires_hess
def test_hess_energy_cut_reduces_counts(hess_obs):
    obs = hess_obs[CRAB_RUN]
    full = counts_dataset(obs)
    cut = counts_dataset(obs, energy_min=1 * u.TeV)
    assert 0 < cut.counts.data.sum() < 0.7 * full.counts.data.sum()
    edges = full.counts.geom.axes["energy"].edges
    below = edges[1:] <= 1 * u.TeV
    assert cut.counts.data[below].sum() == 0
    assert not cut.mask_safe.data[below].any()
    assert full.counts.data[below].sum() > 0
    # events in the bin straddling 1 TeV are partly kept, and that bin is masked
    straddle = (edges[:-1] < 1 * u.TeV) & (edges[1:] > 1 * u.TeV)
    assert not cut.mask_safe.data[straddle].any()
    assert 0 < cut.counts.data[straddle].sum() < full.counts.data[straddle].sum()


@requires_hess
def test_hess_offset_mask_fraction(hess_obs):
    obs = hess_obs[CRAB_RUN]
    for offset_max, expected in [(2.5 * u.deg, np.pi * 2.5**2 / 25), (1 * u.deg, np.pi / 25)]:
        dataset = counts_dataset(obs, offset_max=offset_max, start=0 * u.s, duration=100 * u.s)
        fraction = dataset.mask_safe.data[0].mean()
        assert fraction == pytest.approx(expected, rel=0.02)


@requires_hess
def test_hess_empty_selection(hess_obs):
    obs = hess_obs[CRAB_RUN]
    # the highest reconstructed energy in the run is ~101 TeV
    dataset = counts_dataset(obs, energy_min=150 * u.TeV, start=0 * u.s, duration=100 * u.s)
    assert dataset.counts.data.sum() == 0
    # a sky region with no event: a geometry far from the pointing
    far = counts_geom(SkyCoord(obs.pointing.fixed_icrs.ra + 40 * u.deg, 60 * u.deg),
                      width=1 * u.deg)
    assert counts_dataset(obs, geom=far, start=0 * u.s, duration=100 * u.s).counts.data.sum() == 0


@requires_hess
def test_hess_sliding_windows_and_iterator(hess_obs):
    obs = hess_obs[CRAB_RUN]
    windows = list(sliding_windows(obs, 100 * u.s, 50 * u.s))
    assert len(windows) == 32  # 1687 s GTI
    assert all(t_start >= obs.tstart and t_stop <= obs.tstop for t_start, t_stop in windows)

    geom = counts_geom(CRAB, width=3 * u.deg)
    timings, results = [], []
    iterator = iter_window_datasets(obs, 100 * u.s, 50 * u.s, geom=geom)
    t0 = time.perf_counter()
    for result in iterator:
        t1 = time.perf_counter()
        timings.append(t1 - t0)
        results.append(result)
        t0 = time.perf_counter()
    assert len(results) == 32
    for (t_start, t_stop), (w_start, w_stop, _) in zip(windows, results):
        assert abs((t_start - w_start).to_value("s")) < 1e-6
        assert abs((t_stop - w_stop).to_value("s")) < 1e-6
    # the window [200, 300) s equals counts_dataset on the same slice
    reference = counts_dataset(obs, geom=geom, start=200 * u.s, duration=100 * u.s)
    np.testing.assert_array_equal(results[4][2].counts.data, reference.counts.data)
    # real-time budget: a 100 s window must cost well under a second
    assert np.median(timings) < 0.25


@requires_hess
def test_hess_read_single_event_file():
    files = sorted((HESS_DIR / "data").glob(f"*{CRAB_RUN}.fits*"))
    assert files, f"no event file for run {CRAB_RUN} under {HESS_DIR / 'data'}"
    observations = read_observations(files[0])
    assert len(observations) == 1
    obs = observations[0]
    assert obs.obs_id == CRAB_RUN
    assert len(obs.events.table) == 7613
    assert u.isclose(obs.gti.time_sum, 1687 * u.s)
    dataset = counts_dataset(obs, start=0 * u.s, duration=100 * u.s)
    assert dataset.counts.data.sum() > 100


@requires_hess
def test_hess_read_folder():
    observations = read_observations(HESS_DIR, obs_ids=[23592, 23523])
    assert observations.ids == ["23592", "23523"]
    everything = read_observations(HESS_DIR)
    assert len(everything) == 29
    with pytest.raises(ValueError, match="12345"):
        read_observations(HESS_DIR, obs_ids=[12345])


def test_example_data_from_gammapy_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GAMMAPY_DATA", str(tmp_path / "gammapy-data"))
    with pytest.raises(FileNotFoundError, match="set GAMMAPY_DATA"):
        gammapy_data_dir()
    assert find_hess_dr1() is None
    store = tmp_path / "gammapy-data" / "hess-dl3-dr1"
    store.mkdir(parents=True)
    assert gammapy_data_dir() == store.parent.resolve()
    assert find_hess_dr1() is None  # no data store in it yet
    (store / "hdu-index.fits.gz").write_bytes(b"")
    assert find_hess_dr1() == store.resolve()


def test_example_data_fallbacks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GAMMAPY_DATA", raising=False)
    monkeypatch.delenv("GAMMAPY_CNN_SHARED_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="set GAMMAPY_DATA"):
        gammapy_data_dir()
    assert find_hess_dr1() is None
    shared = tmp_path / "shared"
    (shared / "hess-dl3-dr1").mkdir(parents=True)
    (shared / "hess-dl3-dr1" / "hdu-index.fits.gz").write_bytes(b"")
    monkeypatch.setenv("GAMMAPY_CNN_SHARED_DATA", str(shared))
    assert find_hess_dr1() == (shared / "hess-dl3-dr1").resolve()
    monkeypatch.delenv("GAMMAPY_CNN_SHARED_DATA")
    (tmp_path / "checkout").mkdir()
    shared.rename(tmp_path / "data")
    (tmp_path / "shared").mkdir()
    (tmp_path / "data").rename(tmp_path / "shared" / "data")
    monkeypatch.chdir(tmp_path / "checkout")  # ../shared/data beside a checkout
    assert gammapy_data_dir() == (tmp_path / "shared" / "data").resolve()
    assert find_hess_dr1() is not None
