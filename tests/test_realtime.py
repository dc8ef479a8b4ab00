"""Tests of gammapy_cnn.realtime and of the ``gammapy-cnn find`` command.

Synthetic tests build observations in memory (no data needed); the
H.E.S.S. DL3 DR1 tests skip cleanly when ``$GAMMAPY_DATA/hess-dl3-dr1`` is
absent. All use the tiny networks of conftest (or a simple brightest-pixel
finder where the content of a window must be known exactly): they test the
windowing, timing and outputs, never the quality of the shipped networks.
"""

import re

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time
from click.testing import CliRunner
from gammapy.data import GTI, EventList, FixedPointingInfo, Observation
from gammapy.datasets import Datasets
from gammapy.utils.time import time_ref_to_dict

from gammapy_cnn import CNNSourceFinder
from gammapy_cnn.cli import cli
from gammapy_cnn.finders import COLUMNS, empty_candidates_table
from gammapy_cnn.preprocessing import counts_image
from gammapy_cnn.realtime import (
    WINDOW_COLUMNS,
    WindowSearch,
    find_in_windows,
    parse_quantity,
    run_windows,
    safe_energy_min,
    stacked_image_dataset,
)

from .conftest import HESS_DR1, require

T_REF = Time("2025-01-01T00:00:00", scale="tt")
POINTING = SkyCoord(83.6, 22.0, unit="deg", frame="icrs")
SOURCE = SkyCoord(83.6, 22.5, unit="deg", frame="icrs")
FLARE = (200.0, 300.0)  # s: the synthetic source shines only then


def synthetic_observation(obs_id=1, gti=(0.0, 600.0), seed=0, t_offset=0.0, pointing=POINTING):
    """Uniform background over 2x2 deg around POINTING plus a bright point source during FLARE
    (``pointing``: where the run says it pointed)."""
    rng = np.random.default_rng(seed)
    n_bkg, n_src = 6000, 400
    t = np.concatenate([rng.uniform(*gti, n_bkg), rng.uniform(*FLARE, n_src)]) + t_offset
    ra = np.concatenate([POINTING.ra.deg + rng.uniform(-1, 1, n_bkg) / np.cos(np.radians(22)),
                         SOURCE.ra.deg + rng.normal(0, 0.03, n_src) / np.cos(np.radians(22.5))])
    dec = np.concatenate([POINTING.dec.deg + rng.uniform(-1, 1, n_bkg),
                          SOURCE.dec.deg + rng.normal(0, 0.03, n_src)])
    energy = 10 ** rng.uniform(-1, 1.5, n_bkg + n_src)
    table = Table({"RA": ra * u.deg, "DEC": dec * u.deg, "ENERGY": energy * u.TeV})
    table["TIME"] = T_REF + t * u.s
    table.meta.update(time_ref_to_dict(T_REF))
    table.meta["OBS_ID"] = obs_id
    return Observation(
        obs_id=obs_id, events=EventList(table),
        gti=GTI.create([gti[0] + t_offset] * u.s, [gti[1] + t_offset] * u.s, reference_time=T_REF),
        pointing=FixedPointingInfo(fixed_icrs=pointing),
    )


def brightest_pixel_finder(min_counts=20):
    """A plain finder for exact checks: the brightest 0.1 deg cell, if it holds enough counts."""

    def finder(dataset):
        if isinstance(dataset, Datasets):  # a stack: one dataset per run
            dataset = stacked_image_dataset(dataset)
        counts, mask = counts_image(dataset)
        ny, nx = counts.shape
        cells = (counts * mask)[: ny // 4 * 4, : nx // 4 * 4].reshape(ny // 4, 4, nx // 4, 4).sum((1, 3))
        table = empty_candidates_table()
        iy, ix = np.unravel_index(np.argmax(cells), cells.shape)
        if cells[iy, ix] >= min_counts:
            coord = dataset.counts.geom.to_image().pix_to_coord((4 * ix + 1.5, 4 * iy + 1.5))
            c = SkyCoord(coord[0], coord[1], unit="deg", frame="icrs")
            row = {name: np.nan for name in COLUMNS}
            row.update(Source_Name="PEAK", RA=c.ra.deg, DEC=c.dec.deg, GLON=c.galactic.l.deg,
                       GLAT=c.galactic.b.deg, ra=c.ra.deg, dec=c.dec.deg, x=4 * ix + 1.5,
                       y=4 * iy + 1.5, score=1.0, significance=cells[iy, ix], pos_err_68=0.05)
            table.add_row(row)
        return table

    return finder


@pytest.fixture(scope="module")
def tiny_finder(tiny_networks):
    return CNNSourceFinder(network=tiny_networks["finder"], background_network=tiny_networks["cleaner"],
                           threshold=0.0, max_candidates=2)


# --------------------------------------------------------------------------
# parsing and errors
# --------------------------------------------------------------------------
def test_parse_quantity():
    assert parse_quantity("100s", "s", "--duration") == 100 * u.s
    assert parse_quantity("1.5 min", u.s, "--duration").to_value("s") == pytest.approx(90)
    assert parse_quantity("300 GeV", "TeV", "--energy-min").to_value("TeV") == pytest.approx(0.3)
    for bad, match in (("100", "no unit"), ("abc", "cannot read"), ("100 m", "convertible"),
                       ("-5s", "> 0"), ("0s", "> 0"), ("inf s", "finite")):
        with pytest.raises(ValueError, match=match):
            parse_quantity(bad, "s", "--duration")


def test_bad_inputs_raise_before_any_window():
    obs = synthetic_observation()
    finder = brightest_pixel_finder()
    with pytest.raises(ValueError, match="duration"):
        find_in_windows(obs, finder, 100)  # bare number
    with pytest.raises(ValueError, match="duration"):
        find_in_windows(obs, finder, -100 * u.s)
    with pytest.raises(ValueError, match="step"):
        find_in_windows(obs, finder, None, 50 * u.s)
    with pytest.raises(ValueError, match="stack"):
        find_in_windows(obs, finder, 100 * u.s, stack=True)
    with pytest.raises(ValueError, match="finder"):
        find_in_windows(obs, "default", 100 * u.s)
    with pytest.raises(ValueError, match="LO_THRES|effective area"):
        find_in_windows(obs, finder, 100 * u.s, energy_min="safe")
    with pytest.raises(ValueError, match="'safe'"):
        find_in_windows(obs, finder, 100 * u.s, energy_min="low")
    with pytest.raises(ValueError, match="energy_max"):
        find_in_windows(obs, finder, 100 * u.s, energy_min=10 * u.TeV, energy_max=1 * u.TeV)


# --------------------------------------------------------------------------
# synthetic observations
# --------------------------------------------------------------------------
def test_synthetic_windows_count_bounds_and_events():
    obs = synthetic_observation()
    windows = list(find_in_windows(obs, brightest_pixel_finder(), 100 * u.s, 50 * u.s,
                                   energy_min=1 * u.TeV))
    # windows fully inside the 600 s GTI, starting every 50 s: 0, 50, ..., 500
    assert len(windows) == 11
    assert [w.index for w in windows] == list(range(11))
    starts = np.array([w.tstart_rel.to_value("s") for w in windows])
    np.testing.assert_allclose(starts, np.arange(0, 501, 50))
    time = (obs.events.time - T_REF).to_value("s")
    energy = obs.events.energy.to_value("TeV")
    for w in windows:
        t0, t1 = w.tstart_rel.to_value("s"), w.tstop_rel.to_value("s")
        expected = np.sum((time >= t0) & (time < t1) & (energy >= 1))
        assert w.n_events == expected
        assert w.livetime.to_value("s") == pytest.approx(100)
        assert (w.time_stop - w.time_start).to_value("s") == pytest.approx(100)
        assert w.energy_min == 1 * u.TeV
        assert w.latency > 0 * u.s and w.latency == w.time_bin + w.time_find


def test_synthetic_flare_found_only_in_its_windows():
    obs = synthetic_observation()
    for w in find_in_windows(obs, brightest_pixel_finder(), 100 * u.s, 50 * u.s):
        overlap = min(w.tstop_rel.value, FLARE[1]) - max(w.tstart_rel.value, FLARE[0])
        found = [SkyCoord(r["RA"], r["DEC"], unit="deg").separation(SOURCE).deg < 0.1
                 for r in w.candidates]
        assert any(found) == (overlap >= 50), (w.tstart_rel, overlap, list(w.candidates))


def test_synthetic_whole_run_and_stack():
    obs1 = synthetic_observation(obs_id=1, seed=1)
    obs2 = synthetic_observation(obs_id=2, seed=2, t_offset=3600.0)
    finder = brightest_pixel_finder()
    runs = list(find_in_windows([obs2, obs1], finder))
    assert [w.obs_id for w in runs] == [1, 2]  # time order
    assert all(w.tstop_rel.to_value("s") == pytest.approx(600) for w in runs)
    (stacked,) = find_in_windows([obs1, obs2], finder, stack=True, keep_datasets=True)
    assert stacked.obs_id == -1 and stacked.obs_ids == [1, 2]
    assert stacked.n_events == runs[0].n_events + runs[1].n_events
    assert stacked.livetime.to_value("s") == pytest.approx(1200)
    assert stacked.dataset.counts.data.sum() == stacked.n_events
    assert stacked.candidates["RA"][0] == pytest.approx(SOURCE.ra.deg, abs=0.1)


def test_stack_map_holds_every_run_field():
    """Runs pointed 4 deg apart: the stack's map (5 deg by default) widens to hold both fields
    (2.5 deg around each pointing); runs pointed together keep the 5 deg map."""
    far = SkyCoord(83.6, 26.0, unit="deg")
    together = [synthetic_observation(obs_id=1, seed=1), synthetic_observation(obs_id=2, seed=2)]
    apart = [together[0], synthetic_observation(obs_id=3, seed=3, pointing=far)]
    finder = brightest_pixel_finder()
    (stacked,) = find_in_windows(together, finder, stack=True, keep_datasets=True)
    assert np.ravel(stacked.dataset.counts.geom.width.to_value("deg")) == pytest.approx([5, 5], abs=0.03)
    (stacked,) = find_in_windows(apart, finder, stack=True, keep_datasets=True)
    image = stacked.dataset.counts.geom.to_image()
    for pointing in (POINTING, far):
        for offset in (0, 90, 180, 270):  # 2.5 deg from the pointing, in four directions
            edge = pointing.directional_offset_by(offset * u.deg, 2.45 * u.deg)
            assert image.contains(edge)[0], (pointing, offset)


def test_background_template_needs_a_background_irf():
    search = WindowSearch(brightest_pixel_finder(), background_template=True)
    with pytest.raises(ValueError, match="observation 1 has no background IRF"):
        search.whole_run(synthetic_observation(obs_id=1))
    with pytest.raises(ValueError, match="background_template is for whole runs"):
        WindowSearch(brightest_pixel_finder(), 100 * u.s, background_template=True)


def test_window_search_api_matches_find_in_windows():
    obs1 = synthetic_observation(obs_id=1, seed=1)
    obs2 = synthetic_observation(obs_id=2, seed=2, t_offset=3600.0)
    finder = brightest_pixel_finder()
    search = WindowSearch(finder, 100 * u.s, energy_min=1 * u.TeV)
    assert search.step == 50 * u.s and search.energy_cut(obs1) == 1 * u.TeV
    windows = list(search.windows(obs2))
    assert len(windows) == 11 and {w.obs_id for w in windows} == {2}
    every = list(search.iter_windows([obs2, obs1]))
    expected = list(find_in_windows([obs2, obs1], finder, 100 * u.s, energy_min=1 * u.TeV))
    assert [(w.obs_id, w.index, w.n_events) for w in every] == [
        (w.obs_id, w.index, w.n_events) for w in expected]
    whole = WindowSearch(finder)
    assert whole.whole_run(obs1).obs_id == 1
    stacked = whole.whole_run([obs2, obs1])
    assert stacked.obs_id == -1 and stacked.obs_ids == [1, 2]
    with pytest.raises(ValueError, match="duration"):
        whole.windows(obs1)
    with pytest.raises(ValueError, match="stack"):
        search.iter_windows([obs1], stack=True)
    table, seconds = whole.find(whole._dataset(obs1, whole._geom(POINTING, None), None))
    assert len(table) == 1 and seconds > 0 * u.s


def test_candidates_schema_has_one_home():
    from gammapy_cnn.finders import _make_table
    from gammapy_cnn.realtime import empty_candidates_table as reexported

    empty, made = empty_candidates_table(), _make_table()
    assert reexported is empty_candidates_table
    assert empty.colnames == list(COLUMNS) and len(empty) == 0
    for name in COLUMNS:
        assert empty[name].dtype == made[name].dtype and empty[name].unit == made[name].unit
        assert empty[name].description == COLUMNS[name][1]


def test_small_map_message_prints_plain_sizes():
    from gammapy_cnn.preprocessing import NativeGrid

    obs = synthetic_observation()
    (window,) = find_in_windows(obs, brightest_pixel_finder(), width=0.25 * u.deg,
                                keep_datasets=True)
    with pytest.raises(ValueError, match=r"map of \(10, 10\) pixels"):
        NativeGrid(window.dataset.counts.geom)


def test_stacked_image_dataset_checks_geometry():
    from gammapy_cnn.data import counts_dataset, counts_geom

    obs = synthetic_observation()
    a = counts_dataset(obs, counts_geom(POINTING), energy_min=1 * u.TeV)
    b = counts_dataset(obs, counts_geom(SOURCE))
    with pytest.raises(ValueError, match="spatial geometry"):
        stacked_image_dataset([a, b])
    with pytest.raises(ValueError, match="empty"):
        stacked_image_dataset([])
    both = stacked_image_dataset([a, a])
    assert both.counts.data.sum() == 2 * counts_image(a)[0].sum()


def test_synthetic_tiny_cnn_outputs(tiny_finder, tmp_path):
    obs = synthetic_observation()
    result = run_windows(obs, tiny_finder, 200 * u.s, 200 * u.s)
    assert len(result) == 3
    n_candidates = sum(len(w.candidates) for w in result.windows)
    assert n_candidates >= 1
    table = result.candidates
    assert table.colnames == list(WINDOW_COLUMNS) + list(COLUMNS)
    assert len(table) == n_candidates
    assert table["LATENCY"].unit == u.s and table["RA"].unit == u.deg
    assert result.median_latency > 0 * u.s

    paths = result.write(tmp_path / "out")
    read = Table.read(paths["candidates"])
    assert read.colnames == table.colnames and len(read) == n_candidates
    assert isinstance(read["TIME_START"], Time)
    np.testing.assert_allclose(read["RA"], table["RA"])
    windows = Table.read(paths["windows"])
    assert len(windows) == 3 and list(windows["N_CANDIDATES"]) == [len(w.candidates) for w in result.windows]
    assert read.meta["median_latency_s"] == pytest.approx(result.median_latency.to_value("s"))
    regions = paths["regions"].read_text()
    assert regions.count("circle(") + regions.count("point(") == n_candidates
    assert "obs 1 0-200s" in regions
    # atomic writes leave no temporary file behind; no silent overwrite
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in paths.values())
    with pytest.raises(ValueError, match="exist"):
        result.write(tmp_path / "out")
    result.write(tmp_path / "out", overwrite=True)


def test_empty_result_writes_valid_files(tmp_path):
    obs = synthetic_observation()
    result = run_windows(obs, brightest_pixel_finder(min_counts=10**9), 300 * u.s, 300 * u.s)
    assert len(result) == 2
    paths = result.write(tmp_path)
    read = Table.read(paths["candidates"])
    assert len(read) == 0 and read.colnames == list(WINDOW_COLUMNS) + list(COLUMNS)
    assert len(Table.read(paths["windows"])) == 2
    assert "circle" not in paths["regions"].read_text()


def test_cli_on_synthetic_event_file(tiny_networks, tmp_path):
    path = tmp_path / "events.fits"
    synthetic_observation(obs_id=7).write(path, include_irfs=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "find", str(path), "--duration", "300s", "--step", "150s", "--output", str(out),
        "--finder", str(tiny_networks["finder"]), "--cleaner", str(tiny_networks["cleaner"]),
        "--threshold", "0", "--max-candidates", "2", "--energy-min", "0.3TeV", "--no-rescue",
    ])
    assert result.exit_code == 0, result.output
    assert len(re.findall(r"^obs 7 window \d", result.output, re.M)) == 3
    assert "median latency" in result.output
    candidates = Table.read(out / "candidates.ecsv")
    n_lines = len(re.findall(r"^  obs 7 \[", result.output, re.M))
    assert len(candidates) == n_lines >= 1
    assert set(candidates["OBS_ID"]) == {7}
    assert (out / "candidates.reg").exists()


def test_cli_errors(tmp_path):
    path = tmp_path / "events.fits"
    synthetic_observation(obs_id=7).write(path, include_irfs=False)
    runner = CliRunner()
    for args, message in (
        (["--duration", "100"], "no unit"),
        (["--duration", "ten seconds"], "cannot read"),
        (["--duration", "100 deg"], "convertible"),
        (["--step", "50s"], "--step needs --duration"),
        (["--duration", "100s", "--stack"], "--stack"),
        (["--energy-min", "0.3"], "no unit"),
        (["--threshold", "2"], "between 0 and 1"),
        (["--obs-id", "8"], "obs_ids [8]"),
    ):
        result = runner.invoke(cli, ["find", str(path), "--output", str(tmp_path / "o"), *args])
        assert result.exit_code != 0, args
        assert message in result.output, (args, result.output)
    assert not (tmp_path / "o").exists()
    # existing outputs are refused before any window is processed (no network is even loaded)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "candidates.reg").write_text("old")
    result = runner.invoke(cli, ["find", str(path), "--output", str(tmp_path / "o"),
                                 "--finder", str(tmp_path / "missing.keras")])
    assert result.exit_code != 0 and "output files exist" in result.output
    assert "--overwrite" in result.output
    assert (tmp_path / "o" / "candidates.reg").read_text() == "old"


# --------------------------------------------------------------------------
# H.E.S.S. DL3 DR1
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hess_crab():
    from gammapy_cnn.data import read_observations

    return read_observations(require(HESS_DR1), [23523, 23526])


def test_hess_windows_and_safe_threshold(hess_crab, tiny_finder):
    assert safe_energy_min(hess_crab[0]).to_value("TeV") == pytest.approx(0.871, abs=1e-3)
    windows = list(find_in_windows(hess_crab, tiny_finder, 300 * u.s, 300 * u.s,
                                   energy_min="safe", keep_datasets=True))
    # both runs have one GTI of 1687 s: 5 windows each
    assert [w.obs_id for w in windows] == [23523] * 5 + [23526] * 5
    assert windows[0].energy_min.to_value("TeV") == pytest.approx(0.871, abs=1e-3)
    assert windows[5].energy_min.to_value("TeV") == pytest.approx(0.708, abs=1e-3)
    events = hess_crab[0].events
    energy = events.energy.to_value("TeV")
    time = (events.time - hess_crab[0].tstart).to_value("s")
    inside = windows[0].dataset.counts.geom.to_image().contains(events.radec)
    expected = np.sum((time >= 0) & (time < 300) & (energy >= 0.870963589956081) & inside)
    assert windows[0].n_events == expected == windows[0].dataset.counts.data.sum()
    for w in windows:
        assert w.livetime.to_value("s") == pytest.approx(300 * (1 - 0.0624), rel=0.05)
        assert len(w.candidates) <= 2


def test_hess_cli_stack_and_windows(tiny_networks, tmp_path):
    data = require(HESS_DR1)
    common = ["--finder", str(tiny_networks["finder"]), "--cleaner", str(tiny_networks["cleaner"]),
              "--threshold", "0", "--max-candidates", "1", "--energy-min", "safe"]
    runner = CliRunner()
    result = runner.invoke(cli, ["find", str(data), "--obs-id", "23523", "--obs-id", "23526",
                                 "--stack", "--output", str(tmp_path / "stack"), *common])
    assert result.exit_code == 0, result.output
    assert "stack of 2 runs window 0" in result.output
    windows = Table.read(tmp_path / "stack" / "candidates_windows.ecsv")
    assert list(windows["OBS_ID"]) == [-1] and windows.meta["obs_ids"] == [23523, 23526]

    result = runner.invoke(cli, ["find", str(data), "--obs-id", "23523", "--duration", "10min",
                                 "--output", str(tmp_path / "win"), *common])
    assert result.exit_code == 0, result.output
    windows = Table.read(tmp_path / "win" / "candidates_windows.ecsv")
    # 600 s windows every 300 s inside a 1687 s GTI: starts 0, 300, 600, 900
    assert list(windows["TSTART_REL"]) == [0, 300, 600, 900]
    assert np.all(windows["LATENCY"] > 0)

    result = runner.invoke(cli, ["find", str(data), "--obs-id", "12345", *common])
    assert result.exit_code != 0 and "obs_ids [12345] are not in the DL3 data store" in result.output


def test_hess_background_template_and_cli(hess_crab, tmp_path):
    from gammapy.maps import MapAxis

    from gammapy_cnn.data import counts_geom
    from gammapy_cnn.templates import background_template

    pointing = hess_crab[0].get_pointing_icrs(hess_crab[0].tmid)
    wide = counts_geom(pointing, energy_axis=MapAxis.from_energy_edges([0.03, 100] * u.TeV, name="energy"))
    binned = counts_geom(pointing, energy_axis=MapAxis.from_energy_bounds(0.03, 100, 7, "TeV", name="energy"))
    # gammapy's log-log integration over the one wide bin alone gives NaN (the IRF is zero below 0.3 TeV)
    one_bin, seven_bins = background_template(hess_crab[0], wide), background_template(hess_crab[0], binned)
    assert np.all(np.isfinite(one_bin.data)) and one_bin.data.sum() > 1000
    assert one_bin.data.sum() == pytest.approx(seven_bins.data.sum(), rel=0.01)

    runner = CliRunner()
    common = ["find", str(require(HESS_DR1)), "--obs-id", "23523", "--obs-id", "23526",
              "--background-network", "template", "--energy-min", "safe"]
    result = runner.invoke(cli, [*common, "--stack", "--output", str(tmp_path / "stack")])
    assert result.exit_code == 0, result.output
    table = Table.read(tmp_path / "stack" / "candidates.ecsv")
    crab = SkyCoord(83.633, 22.0145, unit="deg")
    assert SkyCoord(table["RA"], table["DEC"]).separation(crab).deg.min() < 0.05
    result = runner.invoke(cli, [*common, "--duration", "100s", "--output", str(tmp_path / "win")])
    assert result.exit_code != 0 and "'template' is for whole runs" in result.output
