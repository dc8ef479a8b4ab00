"""The high-level analysis: config, CNNAnalysis on H.E.S.S. DR1, CLI, cross-checks.

The networks are the tiny ones of conftest; nothing here depends on how good
they are, only on what the code around them does. Quality numbers of the
shipped networks come from the benchmarks, not from these tests.
"""

from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
import yaml
from astropy.coordinates import SkyCoord
from astropy.table import Table
from click.testing import CliRunner
from gammapy.analysis import AnalysisConfig
from gammapy.analysis.config import CONFIG_PATH
from gammapy.datasets import Datasets, MapDataset, MapDatasetOnOff
from gammapy.makers import FoVBackgroundMaker, ReflectedRegionsBackgroundMaker, RingBackgroundMaker
from gammapy.maps import Map
from gammapy.modeling.models import FoVBackgroundModel
from pydantic import ValidationError

from gammapy_cnn import CNNBackgroundMaker
from gammapy_cnn.analysis import (
    BackgroundComparison,
    CNNAnalysis,
    CNNAnalysisConfig,
    aperture_photometry,
    exclusion_mask_from_candidates,
    fit_candidates,
)
from gammapy_cnn.cli import cli
from gammapy_cnn.finders import COLUMNS
from gammapy_cnn.makers import WobbleStackWarning

from .conftest import HESS_DR1, require

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "configs"
CRAB = SkyCoord(83.633, 22.0145, unit="deg")


# --------------------------------------------------------------------------- config

@pytest.mark.parametrize("name", ["docs.yaml", "example-1d.yaml", "example-3d.yaml"])
def test_config_reads_every_gammapy_config(name):
    path = CONFIG_PATH / name
    ours = CNNAnalysisConfig.read(path)
    theirs = AnalysisConfig.read(path)
    dumped = ours.model_dump()
    assert dumped.pop("cnn") == CNNAnalysisConfig().cnn.model_dump()
    assert dumped == theirs.model_dump()


def test_config_cnn_section_and_defaults():
    config = CNNAnalysisConfig.from_yaml("""
        datasets:
          type: 3d
          background: {method: cnn, parameters: {batch_size: 4}}
        cnn: {finder_network: seed, threshold: 0.7, refine: false, rescue: false}
    """)
    assert config.datasets.background.method == "cnn"
    assert config.cnn.background_network == "default"
    assert config.cnn.finder_network == "seed"
    assert config.cnn.threshold == 0.7
    assert config.cnn.find_sources is True and config.cnn.refine is False
    assert config.cnn.rescue is False and CNNAnalysisConfig().cnn.rescue is True
    assert CNNAnalysisConfig().cnn.threshold is None


@pytest.mark.parametrize("method", ["reflected", "fov_background", "ring", None])
def test_gammapy_methods_still_work(method):
    config = CNNAnalysisConfig.from_yaml(yaml.safe_dump({"datasets": {
        "type": "3d", "background": {"method": method},
        "geom": {"axes": {"energy": {"nbins": 1}}}}}))
    if method == "ring":
        config.datasets.background.parameters = {"r_in": "0.5 deg", "width": "0.3 deg"}
    maker = CNNAnalysis(config)._create_background_maker()
    expected = {"reflected": ReflectedRegionsBackgroundMaker, "fov_background": FoVBackgroundMaker,
                "ring": RingBackgroundMaker, None: type(None)}[method]
    assert type(maker) is expected


def test_cnn_method_makes_cnn_maker(tmp_path):
    config = CNNAnalysisConfig.from_yaml(f"""
        datasets: {{type: 3d, background: {{method: cnn, parameters: {{batch_size: 3}}}}}}
        cnn: {{background_network: {tmp_path}/net.keras}}
    """)
    maker = CNNAnalysis(config)._create_background_maker()
    assert isinstance(maker, CNNBackgroundMaker)
    assert maker.network == f"{tmp_path}/net.keras" and maker.batch_size == 3
    config.datasets.background.parameters = {"bacth_size": 3}
    with pytest.raises(ValueError, match="datasets.background.parameters.*bacth_size"):
        CNNAnalysis(config)._create_background_maker()


def test_round_trip(tmp_path):
    config = CNNAnalysisConfig.read(EXAMPLES / "crab_hess_cnn.yaml")
    assert config.datasets.background.method == "cnn"
    assert config.observations.obs_ids == [23523, 23526]
    assert config.datasets.geom.wcs.binsize == 0.025 * u.deg
    assert CNNAnalysisConfig.from_yaml(config.to_yaml()) == config
    config.cnn.threshold = 0.42
    config.write(tmp_path / "c.yaml")
    again = CNNAnalysisConfig.read(tmp_path / "c.yaml")
    assert again == config and again.cnn.threshold == 0.42
    # the PKS 2155-304 example is valid too
    pks = CNNAnalysisConfig.read(EXAMPLES / "pks2155_hess_cnn.yaml")
    assert pks.datasets.background.method == "cnn" and len(pks.observations.obs_ids) == 15


def test_update_keeps_subclass():
    config = CNNAnalysisConfig().update(
        "cnn: {threshold: 0.3}\ndatasets: {type: 3d, background: {method: cnn}}")
    assert isinstance(config, CNNAnalysisConfig)
    assert config.cnn.threshold == 0.3 and config.datasets.background.method == "cnn"


def test_unknown_cnn_key_names_field():
    with pytest.raises(ValidationError) as info:
        CNNAnalysisConfig.from_yaml("cnn: {treshold: 0.5}")
    message = str(info.value)
    assert "cnn.treshold" in message and "Extra inputs are not permitted" in message


def test_wrong_method_names_field():
    with pytest.raises(ValidationError) as info:
        CNNAnalysisConfig.from_yaml("datasets: {background: {method: cnnn}}")
    message = str(info.value)
    assert "datasets.background.method" in message
    assert "'cnn'" in message and "'ring'" in message
    with pytest.raises(ValidationError, match=r"cnn.threshold\n.*less than or equal to 1"):
        CNNAnalysisConfig.from_yaml("cnn: {threshold: 3}")
    assert isinstance(info.value, ValueError)  # what the CLI reports as an error


def test_cnn_1d_needs_an_on_region_and_no_exclusion():
    with pytest.raises(ValidationError, match=r"datasets.on_region .* is needed"):
        CNNAnalysisConfig.from_yaml("datasets: {type: 1d, background: {method: cnn}}")
    on_region = "on_region: {frame: icrs, lon: 83.6 deg, lat: 22.0 deg, radius: 0.11 deg}"
    config = CNNAnalysisConfig.from_yaml(f"datasets: {{type: 1d, {on_region}, background: {{method: cnn}}}}")
    assert config.datasets.type == "1d" and CNNAnalysis(config).default_steps == ["observations", "datasets"]
    with pytest.raises(ValidationError, match="datasets.background.exclusion means nothing"):
        CNNAnalysisConfig.from_yaml(f"datasets: {{type: 1d, {on_region}, "
                                    "background: {method: cnn, exclusion: mask.fits}}")


def test_analysis_accepts_plain_config_and_checks_steps():
    analysis = CNNAnalysis(AnalysisConfig())
    assert isinstance(analysis.config, CNNAnalysisConfig)
    assert analysis.config.datasets.type == "1d"  # gammapy's default: no map to search
    assert analysis.default_steps == ["observations", "datasets"]
    analysis.config.datasets.type = "3d"
    assert analysis.default_steps == ["observations", "datasets", "find-sources"]
    with pytest.raises(ValueError, match="unknown analysis step.*'find-source'"):
        analysis.run(["observations", "find-source"])
    with pytest.raises(RuntimeError, match="run the 'datasets' step"):
        analysis.find_sources()
    with pytest.raises(TypeError):
        CNNAnalysis("config.yaml")


# --------------------------------------------------------------------------- H.E.S.S. DR1

def hess_config(tiny_networks, obs_ids=(23523, 23526), **changes):
    config = CNNAnalysisConfig.read(EXAMPLES / "crab_hess_cnn.yaml")
    config.observations.datastore = require(HESS_DR1)
    config.observations.obs_ids = list(obs_ids)
    config.cnn.background_network = str(tiny_networks["cleaner"])
    config.cnn.finder_network = str(tiny_networks["finder"])
    config.cnn.threshold = 0.0  # the tiny finder is uncalibrated: keep its best peaks
    config.cnn.max_candidates = 3
    for section, values in changes.items():
        for key, value in values.items():
            setattr(getattr(config.datasets, section), key, value)
    return config


@pytest.fixture(scope="module")
def hess_networks(request):
    """The tiny networks, trained only when the H.E.S.S. data is there."""
    require(HESS_DR1)
    return request.getfixturevalue("tiny_networks")


@pytest.fixture(scope="module")
def crab_analysis(hess_networks):
    analysis = CNNAnalysis(hess_config(hess_networks))
    analysis.run()
    return analysis


def test_hess_crab_cnn_analysis(crab_analysis):
    datasets = crab_analysis.datasets
    assert len(datasets) == 1 and datasets[0].name == "stacked"
    dataset = datasets[0]
    assert len(crab_analysis.observations) == 2
    background = dataset.background.data
    safe = dataset.mask_safe.data
    assert np.all(background[~safe] == 0) and np.all(background >= 0)
    # the CNN background covers the valid field, and no FoV model rescales it
    assert (background[safe] > 0).mean() > 0.95
    models = dataset.models or []
    assert not any(isinstance(m, FoVBackgroundModel) for m in models)
    # the Crab is bright: any background that does not swallow it shows it
    photometry = aperture_photometry(dataset, CRAB)
    assert photometry["statistic"][0] == "cash" and photometry["sqrt_ts"][0] > 5


def test_hess_candidates(crab_analysis):
    table = crab_analysis.candidates
    assert list(table.colnames) == list(COLUMNS)
    assert 1 <= len(table) <= 3
    assert np.all(np.diff(table["score"]) <= 0)
    assert crab_analysis.candidate_models.names == [
        name.replace(" ", "_").replace("+", "p").replace("-", "m").replace(".", "_")
        for name in table["Source_Name"]
    ]
    position = crab_analysis.candidate_models[0].spatial_model.position
    assert position.separation(SkyCoord(table["RA"][0], table["DEC"][0], unit="deg")).deg < 1e-6


def test_hess_fit_with_cnn_background(crab_analysis):
    """The reduced H.E.S.S. dataset has IRFs: a fit seeded 0.05 deg off finds the Crab."""
    seed = CRAB.directional_offset_by(45 * u.deg, 0.05 * u.deg)
    candidates = Table({"Source_Name": ["seed"], "RA": [seed.ra.deg], "DEC": [seed.dec.deg]})
    result = fit_candidates(crab_analysis.datasets[0], candidates)
    row = result.table[0]
    fitted = SkyCoord(row["RA"], row["DEC"], unit="deg")
    assert result.result.success and 0 < row["pos_err"] < 0.02
    # DR1 Crab fits land ~0.015 deg from the nominal position (pointing systematics)
    assert fitted.separation(CRAB).deg < 0.03


def test_hess_fov_auto_analysis(hess_networks):
    """``background: method: fov_auto``: the runs' IRF templates normalised outside one mask found in
    their counts; the stack's background is their sum, and find-sources searches on it."""
    analysis = CNNAnalysis(hess_config(hess_networks, background={"method": "fov_auto"}))
    analysis.run()
    (stacked,) = analysis.datasets
    runs = analysis.run_datasets
    norms = [run.models[f"{run.name}-bkg"].spectral_model.norm.value for run in runs]
    assert len(runs) == 2 and all(0.5 < norm < 2 for norm in norms)

    def inside_safe(dataset):
        return (dataset.npred_background().data * dataset.mask_safe.data).sum()

    assert inside_safe(stacked) == pytest.approx(sum(inside_safe(run) for run in runs), rel=1e-5)
    photometry = aperture_photometry(stacked, CRAB)  # the Crab is not in the normalisation
    assert photometry["sqrt_ts"][0] > 10
    assert 1 <= len(analysis.candidates) <= 3
    with pytest.raises(ValueError, match="'fov_auto' is for 3D map datasets"):
        CNNAnalysis(crab_1d_config([23523], method="fov_auto")).get_datasets()


def test_hess_write_atomic(crab_analysis, tmp_path):
    out = tmp_path / "products"
    paths = crab_analysis.write(out)
    # the candidates' seed models, and the analysis' models (gammapy's; none before a fit)
    assert set(paths) == {"config", "datasets", "dataset_stacked", "candidates", "regions",
                          "models", "summary"} | ({"fitted_models"} if len(crab_analysis.models) else set())
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    table = Table.read(paths["candidates"])
    assert list(table.colnames) == list(COLUMNS) and table["RA"].unit == u.deg
    assert paths["regions"].read_text().count("circle") == len(table)
    assert paths["summary"].read_bytes()[:4] == b"\x89PNG"
    back = Datasets.read(paths["datasets"])
    np.testing.assert_allclose(back[0].background.data, crab_analysis.datasets[0].background.data)
    assert CNNAnalysisConfig.read(paths["config"]) == crab_analysis.config
    before = paths["candidates"].read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        crab_analysis.write(out)
    assert paths["candidates"].read_bytes() == before


def test_hess_background_comparison(hess_networks):
    """CNN vs FoV vs ring on the same reduced Crab dataset (IRF template kept)."""
    tiny_networks = hess_networks
    analysis = CNNAnalysis(hess_config(tiny_networks, background={"method": None}))
    analysis.run(["observations", "datasets"])
    dataset = analysis.datasets[0]
    exclusion = exclusion_mask_from_candidates(dataset.counts.geom, CRAB, 0.3 * u.deg)
    comparison = BackgroundComparison(network=tiny_networks["cleaner"], exclusion_mask=exclusion)
    # the stack of wobbled runs: the CNN would estimate it as one map, and says so
    with pytest.warns(WobbleStackWarning, match="run by run"):
        comparison.estimates(dataset)
    table = comparison.run(analysis.run_datasets)  # per-run CNN, compared on the stack
    assert list(table["method"]) == ["cnn", "fov_background", "ring"]
    fov = table[table["method"] == "fov_background"][0]
    # the FoV "scale" norm is fitted to the counts outside the exclusion region
    assert fov["off_ratio"] == pytest.approx(1, abs=1e-6)
    ring = table[table["method"] == "ring"][0]
    assert ring["off_ratio"] == pytest.approx(1, abs=3 / np.sqrt(ring["off_counts"]))
    estimates, _ = comparison.estimates(analysis.run_datasets)
    assert isinstance(estimates["ring"], MapDatasetOnOff)
    for method in ("fov_background", "ring"):
        photometry = aperture_photometry(estimates[method], CRAB)
        assert photometry["sqrt_ts"][0] > 10, method
    # the template with the exclusion found in the counts: the Crab left out without being told
    blind = BackgroundComparison(methods=("fov_auto",))
    estimates, _ = blind.estimates(analysis.run_datasets)
    assert aperture_photometry(estimates["fov_auto"], CRAB)["sqrt_ts"][0] > 10
    # judged outside the Crab, as FoV: its norm fitted outside the excesses it found
    judged = BackgroundComparison(methods=("fov_auto",), exclusion_mask=exclusion).run(analysis.run_datasets)[0]
    assert judged["method"] == "fov_auto" and judged["off_ratio"] == pytest.approx(1, abs=0.02)


def crab_1d_config(obs_ids, method="cnn"):
    config = CNNAnalysisConfig.read(EXAMPLES / "crab_hess_cnn_1d.yaml")
    config.observations.datastore = require(HESS_DR1)
    config.observations.obs_ids = list(obs_ids)
    config.datasets.background.method = method
    return config


@pytest.mark.slow
def test_hess_1d_cnn_spectrum_beside_reflected():
    """The shipped networks' ON-region background and the Crab spectrum, against reflected regions."""
    fits = {}
    for method in ("cnn", "reflected"):
        analysis = CNNAnalysis(crab_1d_config([23523, 23526], method))
        analysis.run(["observations", "datasets"])
        assert [type(d).__name__ for d in analysis.datasets] == (
            ["SpectrumDataset"] * 2 if method == "cnn" else ["SpectrumDatasetOnOff"] * 2)
        analysis.read_models(EXAMPLES / "crab_power_law.yaml")
        analysis.run(["fit"])
        assert analysis.fit_result.success
        fits[method] = (analysis.models["crab"].spectral_model, analysis.datasets)
    (cnn, cnn_runs), (reflected, reflected_runs) = fits["cnn"], fits["reflected"]
    for run, off in zip(cnn_runs, reflected_runs):
        # alpha * N_off has ~10% Poisson noise here (~100 OFF counts)
        assert run.background.data.sum() == pytest.approx(off.background.data.sum(), rel=0.35)
    for name in ("index", "amplitude"):
        ours, theirs = cnn.parameters[name], reflected.parameters[name]
        assert abs(ours.value - theirs.value) < theirs.error, name


def test_cnn_maker_1d_errors(hess_networks):
    from gammapy.data import DataStore
    from gammapy.datasets import SpectrumDataset
    from gammapy.makers import SpectrumDatasetMaker
    from gammapy.maps import MapAxis, RegionGeom
    from regions import CircleSkyRegion

    observation = DataStore.from_dir(require(HESS_DR1)).get_observations([23523])[0]
    energy = MapAxis.from_energy_bounds(1, 10, 4, unit="TeV")
    maker = CNNBackgroundMaker(hess_networks["cleaner"])

    def spectrum(center, radius=0.11):
        geom = RegionGeom.create(CircleSkyRegion(center, radius * u.deg), axes=[energy])
        empty = SpectrumDataset.create(geom, energy_axis_true=energy.copy(name="energy_true"))
        return SpectrumDatasetMaker(selection=["counts", "exposure"]).run(empty, observation)

    dataset = spectrum(CRAB)
    with pytest.raises(ValueError, match="call run\\(dataset, observation\\)"):
        maker.run(dataset)
    estimated = maker.run(dataset, observation)
    assert isinstance(estimated, SpectrumDataset) and estimated.background.data.sum() > 0
    assert np.all(np.isfinite(estimated.background.data))
    with pytest.raises(ValueError, match="ON region .* lies outside the 5 x 5 deg map"):
        maker.run(spectrum(SkyCoord(120, 22, unit="deg")), observation)
    with pytest.raises(ValueError, match="ON region .* reaches beyond the safe field of view"):
        # inside the square map (a corner, 2.4 deg from the pointing), beyond the 2.5 deg safe circle
        pointing = observation.get_pointing_icrs(observation.tmid)
        maker.run(spectrum(pointing.directional_offset_by(45 * u.deg, 2.4 * u.deg), radius=0.3), observation)


def test_cli_analysis_1d(hess_networks, tmp_path):
    config = crab_1d_config([23523])
    config.cnn.background_network = str(hess_networks["cleaner"])
    path = tmp_path / "crab-1d.yaml"
    config.write(path)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["analysis", str(path), "--output", str(out), "--steps",
                                      "observations,datasets,fit", "--models",
                                      str(EXAMPLES / "crab_power_law.yaml")])
    assert result.exit_code == 0, result.output
    assert "analysis done" in result.output
    fitted = yaml.safe_load((out / "models.yaml").read_text())
    index = {p["name"]: p for p in fitted["components"][0]["spectral"]["parameters"]}["index"]
    assert index["value"] != 2.5 and index["error"] > 0  # the fit moved it, with an error
    assert not (out / "summary.png").exists()


def test_cli_analysis(hess_networks, tmp_path):
    config = hess_config(hess_networks, obs_ids=[23523])
    path = tmp_path / "crab.yaml"
    config.write(path)
    out = tmp_path / "cli-out"
    runner = CliRunner()
    result = runner.invoke(cli, ["analysis", str(path), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "candidate(s)" in result.output
    for name in ("analysis.yaml", "datasets.yaml", "stacked.fits", "candidates.ecsv",
                 "candidates.reg", "candidate_models.yaml", "summary.png"):
        assert (out / name).is_file(), name
    again = runner.invoke(cli, ["analysis", str(path), "--output", str(out),
                                "--steps", "observations,datasets", "--no-figure"])
    assert again.exit_code != 0 and "overwrite" in again.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("find_sources:", "find_source:"))
    result = runner.invoke(cli, ["analysis", str(bad)])
    assert result.exit_code != 0 and "cnn.find_source" in str(result.exception)


# --------------------------------------------------------------------------- simulated, full IRFs

def full_dataset(template, sources, livetime, seed, pointing=(83.6, 22.0)):
    """`SimulationTemplate.reference_dataset` (exposure, PSF, edisp, background) + counts."""
    from gammapy_cnn.simulation import MapParameters, SourceParameters

    params = MapParameters(
        irf_index=0, pointing_ra=pointing[0], pointing_dec=pointing[1], livetime=livetime,
        background_norm=1.0, background_tilt=0.0, background_gradient=0.0, gradient_angle=0.0,
        sources=[SourceParameters(offset_x=a, offset_y=b, flux=f, index=2.5, extension=0.0)
                 for a, b, f in sources],
    )
    sim = template.simulate(params, np.random.default_rng(seed))
    dataset = template.reference_dataset(SkyCoord(*pointing, unit="deg"), livetime * u.s)
    dataset.counts = Map.from_geom(dataset.counts.geom, data=sim.counts.astype(float))
    return dataset, sim


def test_background_comparison_simulated(template, tiny_networks):
    dataset, sim = full_dataset(template, [(0.5, 0.0, 1.0)], livetime=600, seed=1)
    source = SkyCoord(sim.sources[0]["ra"], sim.sources[0]["dec"], unit="deg")
    exclusion = exclusion_mask_from_candidates(dataset.counts.geom, source, 0.3 * u.deg)
    truth = template.background(600)
    comparison = BackgroundComparison(network=tiny_networks["cleaner"], exclusion_mask=exclusion)
    table = comparison.run(dataset, true_background=truth)
    fov, ring = table[1], table[2]
    n_off = fov["off_counts"]
    # the template is the truth up to its norm, which FoV fits with Poisson precision
    assert fov["true_ratio"] == pytest.approx(1, abs=4 / np.sqrt(n_off))
    assert fov["true_rms"] == pytest.approx(abs(fov["true_ratio"] - 1), abs=1e-9)
    assert ring["true_ratio"] == pytest.approx(1, abs=4 / np.sqrt(n_off))
    # with the right background the significance away from the source is ~N(0, 1)
    for row in (fov, ring):
        assert abs(row["sigma_mean"]) < 0.2 and 0.85 < row["sigma_std"] < 1.15
    # the CNN row is the CNN maker's estimate, on the same pixels
    cnn = CNNBackgroundMaker(tiny_networks["cleaner"]).run(dataset).npred_background()
    estimates, _ = comparison.estimates(dataset)
    np.testing.assert_allclose(estimates["cnn"].background.data[0],
                               (cnn.data * dataset.mask_safe.data).sum(axis=0))
    assert np.isfinite(table[0]["true_rms"])


def test_aperture_photometry_matches_li_ma(template):
    dataset, sim = full_dataset(template, [(0.5, 0.0, 0.3)], livetime=300, seed=2)
    image = dataset.counts.geom.to_image()
    x, y = round(sim.sources[0]["x"]), round(sim.sources[0]["y"])
    centre = SkyCoord.from_pixel(x, y, image.wcs, origin=0)  # a pixel centre
    table = aperture_photometry(dataset, Table({"Source_Name": ["s"], "RA": [centre.ra.deg],
                                                "DEC": [centre.dec.deg]}), radius=0.1 * u.deg)
    row = table[0]
    # independent sums: pixels whose centre is within 0.1 deg
    sep = image.get_coord().skycoord.separation(centre).deg
    inside = sep <= 0.1
    assert row["counts"] == dataset.counts.data[:, inside].sum()
    assert row["background"] == pytest.approx(dataset.background.data[:, inside].sum())
    n, b = row["counts"], row["background"]
    li_ma = np.sqrt(2 * (n * np.log(n / b) - (n - b)))
    assert row["sqrt_ts"] == pytest.approx(li_ma, rel=1e-6)
    assert row["excess"] == pytest.approx(n - b)
    # gammapy's ExcessMapEstimator (top-hat at the same pixel) agrees
    assert row["sqrt_ts_map"] == pytest.approx(row["sqrt_ts"], rel=1e-3)

    # on-off (ring) dataset: WStat, Li & Ma eq. 17
    exclusion = exclusion_mask_from_candidates(dataset.counts.geom, centre, 0.3 * u.deg)
    ring = BackgroundComparison(exclusion_mask=exclusion, methods=("ring",)).estimates(dataset)[0]
    on_off = aperture_photometry(ring["ring"], centre)[0]
    assert on_off["statistic"] == "wstat"
    n_on, n_off, alpha = on_off["counts"], on_off["n_off"], on_off["alpha"]
    eq17 = np.sqrt(2 * (n_on * np.log((1 + alpha) / alpha * n_on / (n_on + n_off))
                        + n_off * np.log((1 + alpha) * n_off / (n_on + n_off))))
    assert on_off["sqrt_ts"] == pytest.approx(eq17, rel=1e-6)
    assert on_off["sqrt_ts_map"] == pytest.approx(on_off["sqrt_ts"], rel=1e-3)


def test_fit_candidates_improves_position(template):
    dataset, sim = full_dataset(template, [(0.4, -0.3, 0.3)], livetime=100, seed=5)
    truth = SkyCoord(sim.sources[0]["ra"], sim.sources[0]["dec"], unit="deg")
    dataset = dataset.cutout(truth, width=1.2 * u.deg)  # a local fit: 8x faster, same physics
    seed = truth.directional_offset_by(30 * u.deg, 0.08 * u.deg)
    candidates = Table({"Source_Name": ["CNN J0532.7+2142"], "RA": [seed.ra.deg],
                        "DEC": [seed.dec.deg], "pos_err": [np.nan], "excess": [50.0]})
    result = fit_candidates(dataset, candidates)
    row = result.table[0]
    assert result.result.success and result.table.meta["success"]
    fitted = SkyCoord(row["RA"], row["DEC"], unit="deg")
    assert 0.001 < row["pos_err"] < 0.05
    # 4.5 sigma per axis in 2D: chance < 1e-4
    assert fitted.separation(truth).deg < 3 * row["pos_err_68"]
    assert fitted.separation(truth).deg < seed.separation(truth).deg / 2
    true_amplitude = 0.3 * 2.83e-11
    assert abs(row["amplitude"] - true_amplitude) < 5 * row["amplitude_err"]
    meta = result.table.meta
    assert abs(meta["background_norm"] - 1) < 4 * meta["background_norm_err"] < 0.5
    assert any(isinstance(m, FoVBackgroundModel) for m in result.models)


def test_fit_candidates_needs_irfs(template):
    counts_only = MapDataset(counts=Map.from_geom(template.geom(CRAB)))
    candidates = Table({"Source_Name": ["a"], "RA": [CRAB.ra.deg], "DEC": [CRAB.dec.deg]})
    with pytest.raises(ValueError, match="needs a dataset with IRFs.*exposure"):
        fit_candidates(counts_only, candidates)


def test_significance_map_includes_the_measured_background_systematic():
    from gammapy.maps import MapAxis, WcsGeom

    rng = np.random.default_rng(5)
    geom = WcsGeom.create(skydir=(83.6, 22.0), npix=160, binsz=0.025,
                          axes=[MapAxis.from_energy_bounds(1, 10, 1, unit="TeV")])
    truth = np.full(geom.data_shape, 5.0)
    counts = Map.from_geom(geom, data=rng.poisson(truth).astype(float))
    analysis = CNNAnalysis(CNNAnalysisConfig())
    right = analysis.significance_map(MapDataset(counts=counts, background=Map.from_geom(geom, data=truth)))
    assert right.meta["background_systematic"] == 0.0
    # a background wrong by +-5% on 0.2 deg blocks: Poisson-only significances scatter too much
    pattern = 1 + 0.05 * np.kron(rng.choice([-1, 1], (20, 20)), np.ones((8, 8)))
    wrong = MapDataset(counts=counts, background=Map.from_geom(geom, data=truth * pattern))
    with_sys = analysis.significance_map(wrong)
    assert with_sys.meta["background_systematic"] == pytest.approx(0.05, rel=0.3)
    inner = (slice(20, -20), slice(20, -20))  # away from the map edges
    assert np.std(with_sys.data[inner]) < 0.8 * np.std(
        _poisson_only(analysis, wrong)[inner])


def _poisson_only(analysis, dataset):
    from gammapy.estimators import ExcessMapEstimator

    estimator = ExcessMapEstimator(correlation_radius=analysis.config.excess_map.correlation_radius)
    return np.asarray(estimator.run(dataset)["sqrt_ts"].data)[0]
