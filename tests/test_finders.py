import json

import astropy.units as u
import numpy as np
import pytest
from gammapy.estimators import ESTIMATOR_REGISTRY

from gammapy_cnn import CNNSourceFinder
from gammapy_cnn.finders import COLUMNS, CandidateCatalog, fit_source, write_ds9

from .conftest import make_dataset


def test_registered():
    assert ESTIMATOR_REGISTRY.get_cls("CNNSourceFinder") is CNNSourceFinder


def test_table_columns_and_units(template, tiny_networks):
    dataset, _ = make_dataset(template, sources=[(0.5, 0.0, 3.0)], livetime=600)
    finder = CNNSourceFinder(network=tiny_networks["finder"], background_network=tiny_networks["cleaner"],
                             threshold=0.0, max_candidates=5)
    table = finder(dataset)
    assert list(table.colnames) == list(COLUMNS)
    assert table["RA"].unit == u.deg and table["pos_err_68"].unit == u.deg
    assert 1 <= len(table) <= 5
    assert np.all(np.diff(table["score"]) <= 0)


def test_run_many_is_run_on_each_with_one_network_call(template, tiny_networks):
    """The monitor's batched path gives, map by map, what the single-map path gives."""
    finder = CNNSourceFinder(network=tiny_networks["finder"], background_network=tiny_networks["cleaner"],
                             threshold=0.0, max_candidates=5)
    datasets = [make_dataset(template, sources=[(0.5, 0.0, 3.0)], livetime=600, seed=1)[0],
                make_dataset(template, livetime=10, seed=2)[0],
                make_dataset(template, sources=[(-1.0, 0.5, 1.0)], livetime=300, seed=3)[0]]
    datasets[1].counts.data[...] = 0  # an empty window
    many = finder.run_many(datasets)
    assert len(many) == 3 and len(many[1]) == 0
    for dataset, table in zip(datasets, many):
        alone = finder(dataset)
        assert len(alone) == len(table)
        # the batch goes through TensorFlow, a single map through LiteRT: network outputs equal to
        # float32 rounding, which a local fit of a faint candidate (converged to 1e-4 in log L)
        # carries into its 5th digit on some CPUs (AMD EPYC: 1.7e-5 on 1.17 counts)
        np.testing.assert_allclose(table["score"], alone["score"], rtol=1e-5, atol=1e-6, err_msg="score")
        for name in ("x", "y", "significance", "excess"):
            np.testing.assert_allclose(table[name], alone[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_empty_table_same_columns(template, tiny_networks):
    dataset, _ = make_dataset(template, livetime=100)
    table = CNNSourceFinder(network=tiny_networks["finder"], background_network=tiny_networks["cleaner"],
                            threshold=1.0)(dataset)
    assert len(table) == 0 and list(table.colnames) == list(COLUMNS)


def test_fit_source_recovers_position():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:60, :60]
    sigma, amp, x0, y0 = 2.5, 400.0, 30.3, 28.6
    mu = 0.2 + amp * np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2) / sigma**2) / (2 * np.pi * sigma**2)
    errors = []
    for _ in range(40):
        counts = rng.poisson(mu)
        fit = fit_source(counts, np.full(counts.shape, 0.2), 31, 29, radius=8)
        errors.append((fit["x"] - x0, fit["y"] - y0, fit["pos_err"]))
    errors = np.array(errors)
    # the error estimate matches the scatter, and the fit is unbiased
    scatter = errors[:, :2].std()
    assert 0.6 < np.median(errors[:, 2]) / scatter < 1.6
    assert abs(errors[:, 0].mean()) < 3 * scatter / np.sqrt(40)


def test_fit_source_uses_the_sharper_high_energy_counts():
    # a PSF that narrows with energy: 4 pixels at low energy, 1 pixel at high energy
    rng = np.random.default_rng(8)
    yy, xx = np.mgrid[:60, :60]
    x0, y0 = 30.3, 28.6
    widths, amplitudes = np.array([4.0, 2.5, 1.0]), np.array([300.0, 100.0, 40.0])
    d2 = (xx - x0) ** 2 + (yy - y0) ** 2
    mu = 0.1 + amplitudes[:, None, None] * np.exp(-0.5 * d2 / widths[:, None, None] ** 2) / (
        2 * np.pi * widths[:, None, None] ** 2)
    background = np.full(mu.shape, 0.1)
    banded, integrated = [], []
    for _ in range(40):
        counts = rng.poisson(mu).astype(float)
        fit = fit_source(counts, background, 31, 29, radius=8)
        assert fit["n_bands"] == 3
        banded.append(np.hypot(fit["x"] - x0, fit["y"] - y0))
        fit = fit_source(counts.sum(axis=0), background.sum(axis=0), 31, 29, radius=8)
        assert fit["n_bands"] == 1
        integrated.append(np.hypot(fit["x"] - x0, fit["y"] - y0))
    assert np.median(banded) < 0.8 * np.median(integrated)
    # a faint source is fitted energy-integrated: one band
    faint = rng.poisson(0.1 + (mu - 0.1) * 0.01).astype(float)  # ~4 source counts
    assert fit_source(faint, background, 31, 29, radius=8)["n_bands"] == 1


def test_catalog_interface(template, tiny_networks, tmp_path):
    dataset, _ = make_dataset(template, sources=[(0.5, 0.0, 3.0)], livetime=600)
    finder = CNNSourceFinder(network=tiny_networks["finder"], background_network=tiny_networks["cleaner"],
                             threshold=0.0, max_candidates=3)
    catalog = finder.run_catalog(dataset)
    assert isinstance(catalog, CandidateCatalog)
    name = catalog.table["Source_Name"][0]
    source = catalog[name]
    assert source.position.separation(catalog[0].position).deg < 1e-9
    models = catalog.to_models()
    assert len(models) == len(catalog.table)
    write_ds9(catalog.table, tmp_path / "c.reg")
    assert "circle" in (tmp_path / "c.reg").read_text()


def test_calibration_sets_threshold_and_error_scale(template, tiny_networks, sim_file, tmp_path):
    import shutil

    from gammapy_cnn.training import calibrate_finder

    network = tmp_path / "finder.keras"  # calibration writes the card: work on a copy
    shutil.copy(tiny_networks["finder"], network)
    shutil.copy(tiny_networks["finder"].with_suffix(".json"), network.with_suffix(".json"))
    cal = calibrate_finder(network, sim_file, background=tiny_networks["cleaner"], max_maps=12,
                           progress=False)
    assert cal["n_fields"] == 12
    assert np.all(np.diff(cal["false_per_field"]) <= 0)  # a rate above a rising score
    assert cal["pos_err_scale"] > 0
    finder = CNNSourceFinder(network=network, background_network=tiny_networks["cleaner"])
    assert finder.threshold == cal["default_threshold"]
    assert finder.pos_err_scale == cal["pos_err_scale"]

    dataset, _ = make_dataset(template, sources=[(0.5, 0.0, 3.0)], livetime=600)
    tables = [CNNSourceFinder(network=network, background_network=tiny_networks["cleaner"], threshold=0.0,
                              pos_err_scale=scale)(dataset) for scale in (1.0, 2.0)]
    np.testing.assert_allclose(tables[1]["pos_err"], 2 * tables[0]["pos_err"])
    with pytest.raises(ValueError, match="pos_err_scale must be positive"):
        CNNSourceFinder(pos_err_scale=0)

    # the rescue rule: below-threshold peaks kept for their local significance only
    assert finder.rescue_rule == dict(score=cal["rescue_score"], significance=cal["rescue_significance"])
    assert CNNSourceFinder(network=network, rescue=False).rescue_rule is None
    assert CNNSourceFinder(network=network, refine=False).rescue_rule is None
    rule = dict(score=0.0, significance=3.0)  # loose, so that the tiny network rescues some
    card = json.loads(network.with_suffix(".json").read_text())
    card["calibration"].update(rescue_score=rule["score"], rescue_significance=rule["significance"])
    network.with_suffix(".json").write_text(json.dumps(card))
    threshold = 0.9
    with_rescue, without = (CNNSourceFinder(network=network, background_network=tiny_networks["cleaner"],
                                            threshold=threshold, rescue=r)(dataset) for r in (True, False))
    assert np.all(without["score"] >= threshold)
    extra = with_rescue[with_rescue["score"] < threshold]
    assert len(extra) >= 1
    assert np.all(extra["significance"] >= rule["significance"])
    assert len(with_rescue) == len(without) + len(extra)


@pytest.mark.parametrize("frame, centre", [("icrs", (83.6, 22.0)), ("galactic", (359.9, -2.0)),
                                           ("icrs", (10.0, 89.5))])
def test_table_coordinates_match_astropy(frame, centre):
    from astropy.coordinates import SkyCoord
    from gammapy.maps import WcsGeom

    from gammapy_cnn.finders import _icrs_and_galactic

    geom = WcsGeom.create(skydir=centre, frame=frame, npix=200, binsz=0.025, proj="TAN")
    x, y = np.random.default_rng(0).uniform(0, 199, (2, 20))
    (ra, dec), (glon, glat) = _icrs_and_galactic(geom, x, y)
    coord = SkyCoord.from_pixel(x, y, geom.wcs, origin=0)
    assert SkyCoord(ra, dec, unit="deg").separation(coord.icrs).arcsec.max() < 1e-6
    assert SkyCoord(glon, glat, unit="deg", frame="galactic").separation(coord.galactic).arcsec.max() < 1e-6
    assert np.all((ra >= 0) & (ra < 360) & (glon >= 0) & (glon < 360))


def test_background_network_parameter_and_its_deprecated_name(tiny_networks):
    finder = CNNSourceFinder(network=tiny_networks["finder"], background_network=None)
    assert finder.background_network is None and finder.background_maker is None
    with pytest.warns(FutureWarning, match="background_network"):
        old = CNNSourceFinder(network=tiny_networks["finder"], background=tiny_networks["cleaner"])
    assert old.background_network == tiny_networks["cleaner"]
    with pytest.raises(TypeError, match="background_network only"):
        CNNSourceFinder(background_network="x", background="y")


def test_constructor_arguments_are_stored_under_their_own_names(tiny_networks):
    import inspect

    from gammapy_cnn import CNNBackgroundMaker

    given = dict(network=tiny_networks["finder"], threshold=0.3, background_network=tiny_networks["cleaner"],
                 refine=False, max_candidates=7, pos_err_scale=2.0, rescue=False, systematics=False,
                 significance_search=False, min_significance=3.0,
                 psf_sigma=0.07 * u.deg)
    finder = CNNSourceFinder(**given)
    parameters = set(inspect.signature(CNNSourceFinder).parameters) - {"background"}  # deprecated alias
    assert parameters == set(given)
    for name, value in given.items():
        assert getattr(finder, name) == value, name
    maker = CNNBackgroundMaker(network=tiny_networks["cleaner"], batch_size=5)
    assert (maker.network, maker.batch_size) == (tiny_networks["cleaner"], 5)
    assert set(inspect.signature(CNNBackgroundMaker).parameters) == {"network", "batch_size"}
    # the learned state is apart, loaded on first use
    assert "network_" not in vars(finder) and finder.network_.card["kind"] == "finder"


def test_copy_finder_and_maker(template, tiny_networks):
    from gammapy_cnn import CNNBackgroundMaker

    finder = CNNSourceFinder(network=tiny_networks["finder"], background_network=tiny_networks["cleaner"],
                             threshold=0.2)
    dataset, _ = make_dataset(template, sources=[(0.5, 0.3, 1.0)], livetime=300)
    for obj in (finder, CNNBackgroundMaker(network=tiny_networks["cleaner"])):
        fresh = obj.copy()  # before and after the network is loaded
        assert fresh is not obj and type(fresh) is type(obj)
        obj.run(dataset)
        loaded = obj.copy()
        assert loaded.network_ is obj.network_  # learned state shared, not duplicated
    copied = finder.copy()
    assert copied._lock is not finder._lock and copied.threshold == 0.2
    assert copied.background_maker is not finder.background_maker
    assert copied.run(dataset).pformat() == finder.run(dataset).pformat()


def test_created_dataset_safe_mask_hint(template, tiny_networks):
    from gammapy.datasets import MapDataset

    dataset, _ = make_dataset(template, livetime=100)
    created = MapDataset.create(dataset.counts.geom, name="created")
    created.counts = dataset.counts
    finder = CNNSourceFinder(network=tiny_networks["finder"], background_network=tiny_networks["cleaner"])
    with pytest.raises(ValueError, match="MapDataset.create makes an all-False mask_safe"):
        finder.run(created)


def test_a_fit_that_walks_off_its_start_is_fitted_again_there(template, tiny_networks):
    """A heatmap peak 0.1 deg off a very bright source (a GRB's first seconds): the refinement
    must end on the source, not stay at the peak because the fit moved too far."""
    dataset, truth = make_dataset(template, sources=[(0.5, 0.0, 100.0)], livetime=10, seed=5)
    (source,) = truth["sources"]
    finder = CNNSourceFinder(network=tiny_networks["finder"], threshold=0.0, rescue=False, systematics=False,
                             min_significance=0)
    cube = dataset.counts.data.astype(float)
    mask = np.ones(cube.shape[1:], bool)
    start_x, start_y = source["x"] + 4.0, source["y"] - 0.5  # 0.1 deg off
    (row,) = finder._refined([start_x], [start_y], [0.9], cube, truth["background"], mask, 2.5, None)
    assert np.hypot(row["x"] - source["x"], row["y"] - source["y"]) < 0.5  # pixels (0.0125 deg)
