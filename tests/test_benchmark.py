"""The benchmark: real simulations, real gammapy methods, the tiny networks.

These tests check the structure of the results and that every method ran;
the numbers of the shipped networks are in docs/results/benchmark.md.
"""

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from click.testing import CliRunner

from gammapy_cnn.benchmark import (
    BENCHMARK_SEED,
    aperture_onoff,
    containment_radius,
    find_smoothed_counts,
    fit_position,
    match_candidates,
    run_benchmark,
    scaled_reference,
    simulate_benchmark_map,
    table_to_markdown,
)
from gammapy_cnn.cli import cli
from gammapy_cnn.simulation import Scenario
from gammapy_cnn.simulation.batch import get_template

DETECTION_COLUMNS = ["method", "n_maps", "n_sources", "completeness", "r68", "r95", "false_per_field",
                     "false_per_empty_field", "time", "time_ratio"]


@pytest.mark.slow
def test_quick_run_every_method(tiny_networks, tmp_path):
    n, n_slow = 3, 1
    result = run_benchmark(n=n, n_slow=n_slow, quick=True, cleaners=[tiny_networks["cleaner"]],
                           finders=[tiny_networks["finder"]], output=tmp_path, progress=False)
    tables = result.tables
    finder, cleaner = "cnn:finder_tiny", "cnn:cleaner_tiny"
    fast = [finder, "ring+excess", "smoothed-counts"]
    slow = ["tsmap", "fit<-ring+excess", f"fit<-{finder}"]
    assert list(tables["detection"]["method"]) == fast + slow
    assert tables["detection"].colnames == DETECTION_COLUMNS
    assert tables["detection"]["r68"].unit == u.deg

    fields = tables["fields"]
    for method in fast:
        rows = fields[fields["method"] == method]
        assert sorted(rows["map_index"]) == list(range(n)), method
        assert np.all(np.isfinite(rows["time"]) & (rows["time"] > 0)), method
    rows = fields[fields["method"] == "tsmap"]
    assert list(rows["map_index"]) == [0] and rows["time"][0] > 0
    # map 0 of the benchmark seed holds a 0.3 Crab source in 100 s that ring+excess finds,
    # so at least one likelihood fit ran
    fits = fields[fields["method"] == "fit<-ring+excess"]
    assert fits["n_candidates"][0] >= 1 and fits["time"][0] > 0

    background = tables["background"]
    assert list(background["method"]) == ["true-background", "irf-template", "ring", "fov", cleaner,
                                           "aperture-onoff"]
    maps = tables["background_maps"]
    for method in ["ring", "fov", cleaner]:
        rows = maps[maps["method"] == method]
        assert len(rows) == n and np.all(np.isfinite(rows["ratio"])) and np.all(rows["time"] > 0)
    n_true = int(np.sum(tables["maps"]["n_sources"]))
    assert len(tables["apertures"]) == n_true * len(background)
    loc = tables["localisation"]
    with_sources = tables["maps"][tables["maps"]["n_sources"] > 0]
    livetimes = {f"flux@{t:g} s" for t in np.unique(with_sources["livetime"])}
    assert set(loc["bin"]) == {"flux", "livetime"} | livetimes
    # the per-livetime bins split the per-flux ones: their source counts add up
    for method in set(loc["method"]):
        rows = loc[loc["method"] == method]
        assert rows["n_sources"][rows["bin"] == "flux"].sum() == sum(
            rows["n_sources"][rows["bin"] == b].sum() for b in livetimes)
    assert len(tables["detection_subset"]) == len(tables["detection"])
    assert set(tables["timing"]["stage"]) == {"reduction", "background", "detection"}

    for name in result.SUMMARIES + ("sources", "fields"):
        assert len(Table.read(tmp_path / f"{name}.ecsv")) == len(tables[name])
    for name in ("localisation_cdf", "completeness_flux", "time_per_map", "example_map"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000, name
    text = (tmp_path / "benchmark.md").read_text()
    for method in fast + slow + ["aperture-onoff", "fov"]:
        assert f"| {method} |" in text
    assert "cores" in text and str(BENCHMARK_SEED) in text
    assert "completeness per flux:" in text and "r68 per livetime:" in text


def test_cli(tiny_networks, tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(cli, [
        "benchmark", "--n", "1", "--n-slow", "0", "--cleaner", str(tiny_networks["cleaner"]),
        "--finder", str(tiny_networks["finder"]), "--output", str(out), "--no-progress",
        "--format", "ecsv",
    ])
    assert result.exit_code == 0, result.output
    assert "# table: detection" in result.output and "# %ECSV" in result.output
    detection = Table.read(out / "detection.ecsv")
    assert "tsmap" not in detection["method"] and "ring+excess" in detection["method"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(seed=1001), "training or calibration set"),
    (dict(n=0), "positive number"),
    (dict(n_slow=-1), "n_slow"),
    (dict(fit_seeds=["nope"]), "fit seed"),
])
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_benchmark(**{"cleaners": [], "finders": [], "progress": False, **kwargs})


def test_match_candidates():
    sources = np.array([[10.0, 10.0], [12.0, 10.0], [50.0, 50.0]])
    candidates = np.array([[11.0, 10.0, 9.0], [80.0, 80.0, 5.0], [50.0, 53.0, 7.0]])
    errors, matched, n_false = match_candidates(candidates, sources, radius_pix=4)
    # the candidate between two sources serves one of them only
    assert np.sum(matched[:2] == 0) == 1 and -1 in matched[:2]
    assert matched[2] == 2 and errors[2] == pytest.approx(3)
    assert n_false == 1
    errors, matched, n_false = match_candidates(np.zeros((0, 3)), sources, radius_pix=4)
    assert np.all(np.isnan(errors)) and n_false == 0


def test_containment_radius():
    errors = np.r_[np.arange(1, 101, dtype=float), np.nan]
    assert containment_radius(errors, 0.68) == pytest.approx(np.quantile(np.arange(1, 101), 0.68))
    assert np.isnan(containment_radius([np.nan], 0.68))


def test_aperture_onoff_flat_field():
    counts = np.full((100, 100), 3.0)
    acceptance = np.ones((100, 100))
    exclusion = np.ones((100, 100), bool)
    exclusion[:, :50] = False  # half the annulus is excluded: alpha must follow
    n_on, n_off, alpha = aperture_onoff(counts, acceptance, exclusion, 50, 50, 4, 20, 32)
    assert alpha * n_off == pytest.approx(n_on)
    assert n_on == pytest.approx(3 * np.sum(np.hypot(*np.mgrid[-50:50, -50:50]) <= 4))


def test_smoothed_counts_finds_bright_source():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:200, :200]
    expected = 0.2 + 300 * np.exp(-0.5 * ((xx - 120.3) ** 2 + (yy - 70.6) ** 2) / 2.5**2) / (2 * np.pi * 2.5**2)
    candidates = find_smoothed_counts(rng.poisson(expected), binsz=0.025)
    assert np.hypot(candidates[0, 0] - 120.3, candidates[0, 1] - 70.6) < 2


@pytest.mark.slow
def test_fit_position_recovers_source():
    scenario = Scenario.from_dict(dict(
        irf="default-z20", livetime="600 s", n_sources=1, source_offset="1 deg", source_flux=1,
        source_index=2.5, source_extension="0 deg", background_norm=1, background_tilt=0,
        background_gradient=0,
    ))
    # the template run_benchmark caches, so this file builds it once
    template = get_template("default-z20", scenario.geometry)
    bmap = simulate_benchmark_map(template, scenario, seed=5, index=0)
    assert np.array_equal(bmap.reference.counts.data, bmap.dataset.counts.data)
    assert bmap.reference.background.data.sum() == pytest.approx(bmap.background.sum(), rel=1e-6)
    # the reused 1 s dataset, scaled, is the dataset reduced for the map's livetime
    pointing = SkyCoord(bmap.params.pointing_ra, bmap.params.pointing_dec, unit="deg")
    scaled = scaled_reference(template.reference_dataset(pointing, 1 * u.s), 600 * u.s)
    assert np.allclose(scaled.exposure.data, bmap.reference.exposure.data, rtol=1e-6)
    assert np.allclose(scaled.background.data, bmap.reference.background.data, rtol=1e-6)
    assert scaled.exposure.unit == bmap.reference.exposure.unit
    src = bmap.sources[0]
    fit = fit_position(bmap.reference, src["x"] + 3, src["y"] - 3)  # seeded 0.1 deg away
    assert fit["sqrt_ts"] > 10
    assert np.hypot(fit["x"] - src["x"], fit["y"] - src["y"]) * 0.025 < 0.02


def test_table_to_markdown():
    table = Table({"method": ["a", "b"], "r68": [0.0123456, np.nan]})
    table["r68"].unit = "deg"
    text = table_to_markdown(table)
    assert text.splitlines()[0] == "| method | r68 [deg] |"
    assert "| a | 0.0123 |" in text and "| b | — |" in text
