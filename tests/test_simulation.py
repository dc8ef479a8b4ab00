import subprocess
import sys

import numpy as np
import pytest

from gammapy_cnn.simulation import MapParameters, Scenario, SimulationTemplate, SourceParameters, simulate_with_gammapy
from gammapy_cnn.simulation.batch import simulate_file
from gammapy_cnn.simulation.io import SimulationReader, partial_path

from .conftest import PROD5, require


def _params(sources, livetime=300.0, norm=1.0, tilt=0.0):
    return MapParameters(irf_index=0, pointing_ra=83.6, pointing_dec=22.0, livetime=livetime,
                         background_norm=norm, background_tilt=tilt, background_gradient=0.0,
                         gradient_angle=0.0, sources=sources)


def test_scenario_sampling_respects_ranges():
    scenario = Scenario.preset("default")
    rng = np.random.default_rng(0)
    draws = [scenario.sample(rng) for _ in range(300)]
    livetimes = np.array([d.livetime for d in draws])
    assert livetimes.min() >= 10 and livetimes.max() <= 1800
    n_sources = np.array([len(d.sources) for d in draws])
    assert set(n_sources) == {0, 1, 2, 3}
    fluxes = np.array([s.flux for d in draws for s in d.sources])
    assert fluxes.min() >= 0.02 and fluxes.max() <= 3
    # log-uniform: as many maps below the geometric mean as above
    assert 0.4 < np.mean(fluxes < np.sqrt(0.02 * 3)) < 0.6
    offsets = np.array([np.hypot(s.offset_x, s.offset_y) for d in draws for s in d.sources])
    assert offsets.max() <= 2.3 + 1e-9
    for d in draws:
        for i, a in enumerate(d.sources):
            for b in d.sources[i + 1:]:
                assert np.hypot(a.offset_x - b.offset_x, a.offset_y - b.offset_y) >= 0.2


@pytest.mark.parametrize("data, field", [
    ({"unknown_key": 1}, "unknown_key"),
    ({"source_flux": -0.5}, "source_flux"),
    ({"source_flux": {"dist": "uniform", "min": -1, "max": 1}}, "source_flux"),
    ({"source_offset": "3 deg"}, "source_offset"),
    ({"livetime": "100 deg"}, "livetime"),
    ({"livetime": {"dist": "uniform", "min": "10 s"}}, "livetime"),
])
def test_bad_scenario_names_field(data, field):
    with pytest.raises(ValueError, match=field):
        Scenario.from_dict(data)


def test_scenario_yaml_round_trip():
    scenario = Scenario.preset("original")
    again = Scenario.from_yaml(scenario.to_yaml())
    assert again == scenario


def test_fast_sampler_matches_gammapy_expectations(template):
    """The fast path's expectation maps equal gammapy's npred for the same scenario."""
    params = _params([SourceParameters(0.8, -0.5, 1.0, 2.5, 0.0),
                      SourceParameters(-1.2, 0.4, 0.5, 2.2, 0.1)], norm=1.1, tilt=0.1)
    dataset = simulate_with_gammapy(template, params, seed=1)
    sim = template.simulate(params, np.random.default_rng(1))
    bkg_fast = template.background(params.livetime, 1.1, 0.1)
    np.testing.assert_allclose(bkg_fast, dataset.npred_background().data, rtol=1e-6)
    sig_g = dataset.npred_signal().data
    np.testing.assert_allclose(sim.signal.sum(axis=(1, 2)), sig_g.sum(axis=(1, 2)), rtol=0.02, atol=0.05)
    yy, xx = np.mgrid[:200, :200]
    for src in sim.sources:
        r = np.hypot(xx - src["x"], yy - src["y"]) * 0.025
        for radius in (0.05, 0.1, 0.2, 0.4):
            fast = sim.signal.sum(axis=0)[r < radius].sum()
            slow = sig_g.sum(axis=0)[r < radius].sum()
            assert fast == pytest.approx(slow, rel=0.05), radius


@pytest.mark.slow
def test_fast_sampler_statistically_agrees_with_fake(template):
    """Poisson maps of both paths: total counts, aperture counts, radial profile."""
    params = _params([SourceParameters(0.5, 0.5, 1.0, 2.5, 0.0)], livetime=200.0)
    n = 8
    fake = np.array([simulate_with_gammapy(template, params, seed=s).counts.data.sum(axis=0)
                     for s in range(n)])
    fast = np.array([template.simulate(params, np.random.default_rng(100 + s)).counts.sum(axis=0)
                     for s in range(n)])
    src = template.simulate(params, np.random.default_rng(0)).sources[0]
    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(xx - src["x"], yy - src["y"]) * 0.025
    for name, select in [("total", np.ones_like(r, bool)), ("aperture", r < 0.2)]:
        a, b = fake[:, select].sum(axis=1), fast[:, select].sum(axis=1)
        # difference of means within 4 sigma of Poisson noise
        sigma = np.sqrt((a.mean() + b.mean()) / n)
        assert abs(a.mean() - b.mean()) < 4 * sigma, name
    edges = np.array([0, 0.05, 0.1, 0.2, 0.3, 0.5])
    prof_a = np.array([fake[:, (r >= lo) & (r < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])])
    prof_b = np.array([fast[:, (r >= lo) & (r < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])])
    chi2 = np.sum((prof_a - prof_b) ** 2 / (prof_a + prof_b))
    assert chi2 < 20.5  # 99.9% quantile of chi2 with 5 degrees of freedom


def test_prod5_file(tmp_path):
    template = SimulationTemplate(require(PROD5))
    sim = template.simulate(_params([SourceParameters(0.0, 0.0, 1.0, 2.48, 0.0)], livetime=100.0),
                            np.random.default_rng(0))
    assert sim.counts.shape == (7, 200, 200)
    # BACKGROUND.md: a 100 s, 1 Crab prod5 map holds ~3000-6500 background and ~270-400 source counts
    bkg = template.background(100).sum()
    assert 2000 < bkg < 8000
    assert 100 < sim.sources[0]["npred"] < 600


def test_file_round_trip_and_determinism(tmp_path, test_scenario):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    simulate_file(a, 20, scenario=test_scenario, seed=5, chunk_size=7, progress=False)
    simulate_file(b, 20, scenario=test_scenario, seed=5, chunk_size=20, n_jobs=2, progress=False)
    with SimulationReader(a) as ra, SimulationReader(b) as rb:
        assert len(ra) == 20
        np.testing.assert_array_equal(ra.counts(slice(None)), rb.counts(slice(None)))
        np.testing.assert_array_equal(ra.signal(slice(None)), rb.signal(slice(None)))
        np.testing.assert_array_equal(ra.maps, rb.maps)
        for i in range(20):
            src = ra.sources(i)
            assert len(src) == ra.maps["n_sources"][i]
            np.testing.assert_allclose(ra.signal(i).sum(), src["npred"].sum(), rtol=1e-4, atol=1e-3)
            np.testing.assert_allclose(ra.background(i).sum(), ra.maps["npred_background"][i], rtol=1e-5)
        # the observed counts scatter around the truth
        total = ra.counts(slice(None)).sum()
        truth = ra.maps["npred_background"].sum() + ra.maps["npred_signal"].sum()
        assert abs(total - truth) < 5 * np.sqrt(truth)
        assert ra.attrs["seed"] == 5 and "livetime" in ra.attrs["scenario"]
    assert not partial_path(a).exists()


def test_interrupted_simulation_resumes(tmp_path):
    out = tmp_path / "big.h5"
    code = ("from gammapy_cnn.simulation.batch import simulate_file;"
            f"simulate_file({str(out)!r}, 100000, seed=3, chunk_size=4, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    partial = partial_path(out)
    import time

    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(1)
        if partial.exists():
            import h5py

            try:
                with h5py.File(partial, "r", locking=False) as f:
                    if f["maps"].shape[0] >= 8:
                        break
            except OSError:
                continue
    proc.kill()
    proc.wait()
    assert not out.exists() and partial.exists()
    with pytest.raises(FileNotFoundError, match="--resume"):
        SimulationReader(out)
    import h5py

    with h5py.File(partial, "r") as f:
        done = int(f.attrs["n_complete"])
    n = done + 8  # the kill lands at an unknown point: finish 8 maps past it
    simulate_file(out, n, seed=3, chunk_size=4, resume=True, progress=False)
    reference = tmp_path / "ref.h5"
    simulate_file(reference, n, seed=3, chunk_size=4, progress=False)
    with SimulationReader(out) as r1, SimulationReader(reference) as r2:
        np.testing.assert_array_equal(r1.counts(slice(None)), r2.counts(slice(None)))


@pytest.mark.slow
def test_ray_backend_local(tmp_path, test_scenario):
    """gammapy's Ray backend (local mode, 2 workers) gives the same file as multiprocessing."""
    ray = pytest.importorskip("ray", reason='Ray not installed (pip install ".[test]")')
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        a, b = tmp_path / "ray.h5", tmp_path / "mp.h5"
        simulate_file(a, 8, scenario=test_scenario, seed=9, chunk_size=4, n_jobs=2, backend="ray",
                      progress=False)
        simulate_file(b, 8, scenario=test_scenario, seed=9, chunk_size=4, progress=False)
        with SimulationReader(a) as ra, SimulationReader(b) as rb:
            np.testing.assert_array_equal(ra.counts(slice(None)), rb.counts(slice(None)))
    finally:
        ray.shutdown()


@pytest.mark.parametrize("morphology, extension, width", [
    ("gaussian", 0.5, 0.0), ("disk", 0.3, 0.0), ("shell", 0.6, 0.15),
])
def test_extended_sources_match_gammapy(template, morphology, extension, width):
    """Extended sources of the fast path equal gammapy's npred for the same spatial model,
    in apertures and annuli that tell a disk from a shell (acceptance included)."""
    source = SourceParameters(0.7, -0.4, 1.0, 2.5, extension, morphology, width)
    params = _params([source], livetime=1800.0)
    dataset = simulate_with_gammapy(template, params, seed=1)
    sim = template.simulate(params, np.random.default_rng(1))
    fast, slow = sim.signal.sum(axis=0), dataset.npred_signal().data.sum(axis=0)
    src = sim.sources[0]
    r = np.hypot(*np.mgrid[:200, :200][::-1] - np.array([src["x"], src["y"]])[:, None, None]) * 0.025
    edges = np.array([0, 0.5, 1.0, 1.5]) * (extension + width)
    for lo, hi in zip(edges[:-1], edges[1:]):
        ring = (r >= lo) & (r < hi)
        assert fast[ring].sum() == pytest.approx(slow[ring].sum(), rel=0.05), (lo, hi)


def test_shell_is_limb_brightened_and_band_crosses_the_map(template):
    from gammapy_cnn.simulation.sampler import morphology_kernel
    from gammapy_cnn.simulation.scenario import DiffuseParameters

    kernel = morphology_kernel("shell", 0.5, 0.1, 0.025)
    centre = kernel.shape[0] // 2
    profile = kernel[centre, centre:]
    assert np.argmax(profile) * 0.025 == pytest.approx(0.5, abs=0.05)  # peak at the inner radius
    assert 0 < profile[0] < 0.5 * profile.max()
    assert profile[-1] == 0  # nothing beyond the outer radius (0.6 deg; the last pixel is at 0.625)

    band = DiffuseParameters(flux=0.3, width=0.2, offset=0.5, angle=0.0, index=2.5)
    image = template.diffuse_cube(band, 1800).sum(axis=0)
    across = image.sum(axis=1)  # angle 0: the band runs along x, offset along y
    y = (np.arange(200) - 99.5) * 0.025
    mean = np.sum(y * across) / across.sum()
    assert mean == pytest.approx(0.5, abs=0.05)
    sigma = np.sqrt(np.sum((y - mean) ** 2 * across) / across.sum())
    assert 0.2 < sigma < 0.26  # the band's width widened by the PSF


def test_training_scenario_has_the_skys_morphologies():
    scenario = Scenario.preset("default")
    rng = np.random.default_rng(3)
    draws = [scenario.sample(rng) for _ in range(400)]
    sources = [s for d in draws for s in d.sources]
    kinds = {s.morphology for s in sources}
    assert kinds == {"point", "gaussian", "disk", "shell"}
    assert max(s.extension for s in sources if s.morphology == "gaussian") > 0.8
    assert min(np.hypot(s.offset_x, s.offset_y) for s in sources if s.morphology != "point") < 0.2
    assert 0.1 < np.mean([d.diffuse is not None for d in draws]) < 0.3
    # the presets of the first release draw exactly what they drew: points and Gaussians only
    legacy = Scenario.preset("benchmark")
    for d in (legacy.sample(rng) for _ in range(50)):
        assert all(s.morphology == ("gaussian" if s.extension > 0 else "point") for s in d.sources)
        assert d.diffuse is None


def test_acceptance_change_reshapes_the_background_radially(template, tmp_path):
    """The scenario's opt-in acceptance change: exp(a s^2 + b s^4), s = offset / 2.5 deg,
    also in the label a file rebuilds; scenarios without it draw as before."""
    plain = template.background(100.0).sum(axis=0)
    flatter = template.background(100.0, acceptance_quadratic=0.6, acceptance_quartic=-0.4).sum(axis=0)
    ratio = flatter / plain
    half = (template.npix - 1) / 2
    centre, step = int(half), 0.5 / template.binsz.value  # pixels per 0.5 deg
    for offset in (0.5, 1.0, 2.0):
        s = offset / 2.5
        np.testing.assert_allclose(ratio[centre, int(round(half + offset / template.binsz.value))],
                                   np.exp(0.6 * s**2 - 0.4 * s**4), rtol=0.02)
    assert ratio[centre, centre] == pytest.approx(1.0, abs=1e-3)
    assert ratio[centre, int(half + 2 * step)] > ratio[centre, centre]

    default = Scenario.preset("default")
    scenario = Scenario.from_dict({
        **default.model_dump(mode="json", exclude_none=True),
        "acceptance_quadratic": {"dist": "uniform", "min": -0.3, "max": 0.7},
        "acceptance_quartic": {"dist": "uniform", "min": -0.6, "max": 0.1}})
    draws = [scenario.sample(np.random.default_rng(i)) for i in range(50)]
    quadratic = np.array([d.acceptance_quadratic for d in draws])
    assert quadratic.min() < 0 < quadratic.max() and np.ptp(quadratic) > 0.5
    # it is drawn last: the shipped scenario, without it, draws every other parameter as before
    again = default.sample(np.random.default_rng(0))
    assert again.acceptance_quadratic == 0 and again.acceptance_quartic == 0
    assert again.sources == draws[0].sources and again.livetime == draws[0].livetime

    path = tmp_path / "acceptance.h5"
    simulate_file(path, 3, scenario=scenario, seed=2, progress=False)
    with SimulationReader(path) as reader:
        assert np.ptp(reader.maps["acceptance_quadratic"]) > 0
        np.testing.assert_allclose(reader.background(slice(None)).sum(axis=(1, 2, 3)),
                                   reader.maps["npred_background"], rtol=1e-5)
