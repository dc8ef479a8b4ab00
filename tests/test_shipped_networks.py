"""The shipped default networks, as a user gets them, on a seeded simulated observation.

The other tests use tiny networks trained in conftest: they test the code
paths, not what the package is for. This one runs ``CNNBackgroundMaker()``
and ``CNNSourceFinder()`` with their shipped default networks on a 100 s
observation with one 1 Crab point source 1 deg from the pointing, and checks
the outcome: the source is found where it is, and the background level is
right (the total counts are ~3000, so their Poisson noise is 1.8 %: the
5 % window is ~3 sigma of it, and of the spread seen over seeds).
"""

import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from gammapy_cnn import CNNBackgroundMaker, CNNSourceFinder

from .conftest import make_dataset


@pytest.fixture(scope="module")
def shipped():
    return CNNBackgroundMaker(), CNNSourceFinder()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_networks_find_the_source_and_the_background(template, shipped, seed):
    maker, finder = shipped
    dataset, truth = make_dataset(template, sources=[(1.0, 0.0, 1.0)], livetime=100, seed=seed)
    (source,) = truth["sources"]
    true_position = SkyCoord(source["ra"], source["dec"], unit="deg")
    assert true_position.separation(dataset.counts.geom.center_skydir).deg == pytest.approx(1.0, abs=0.02)

    out = maker.run(dataset)
    ratio = out.npred_background().data.sum() / truth["background"].sum()
    assert 0.95 < ratio < 1.05

    table = finder(dataset)
    assert len(table) >= 1
    best = SkyCoord(table["RA"][0], table["DEC"][0], unit="deg")
    assert best.separation(true_position).deg < 0.05
    # a 1 Crab source in 100 s (~200 counts) is not a marginal candidate
    assert table["score"][0] >= finder.threshold
    assert np.isfinite(table["pos_err_68"][0]) and table["pos_err_68"][0] < 0.05


@pytest.mark.slow
def test_an_unknown_instruments_empty_fields_keep_their_level(shipped):
    """Deep empty fields of a response the networks never saw (CTA 1DC South, 1800 s): the
    background's shape errors must not be taken for sources and fed back (the second pass
    once left out 84% of such a map and fitted the level to the rest: 0.60 of the truth)."""
    from gammapy.datasets import MapDataset
    from gammapy.maps import Map

    from gammapy_cnn.simulation import MapParameters, SimulationTemplate

    from .conftest import IRF_1DC, require

    template = SimulationTemplate(require(IRF_1DC))
    maker, _ = shipped
    rng = np.random.default_rng(515151)  # the seed of benchmarks/energy_bands.py, whose maps these are
    ratios = []
    for livetime in [100.0] * 10 + [1800.0] * 5:
        params = MapParameters(0, float(rng.uniform(0, 360)), float(rng.uniform(-50, 50)), livetime,
                               float(rng.uniform(0.9, 1.1)), float(rng.uniform(-0.05, 0.05)), 0.0, 0.0, [])
        sim = template.simulate(params, rng)
        rng.uniform(0, 1, 20), rng.uniform(0, 2 * np.pi, 20)  # the benchmark's apertures
        if livetime < 1800:
            continue
        geom = template.geom(SkyCoord(params.pointing_ra, params.pointing_dec, unit="deg"))
        out = maker.run(MapDataset(counts=Map.from_geom(geom, data=sim.counts.astype(float))))
        truth = template.background(livetime, params.background_norm, params.background_tilt)
        ratios.append(out.background.data.sum() / truth.sum())
    assert np.all(np.abs(np.array(ratios) - 1) < 0.03), ratios


@pytest.mark.parametrize("binsz, off_pointing", [(0.025, False), (0.05, False), (0.05, True)])
def test_maps_smaller_than_the_training_field_keep_their_level(template, shipped, binsz, off_pointing):
    """A 4 x 4 deg map, on the network's pixels or coarser, centred on its pointing or 0.6 deg
    off it (pointing recorded): the network sees it inside its 5 x 5 deg frame (once it saw
    the map alone, took its edges for the acceptance's fall and lost 8% of the background;
    0.05 deg pixels off the pointing once lost all of it)."""
    import astropy.units as u
    from astropy.table import Table
    from gammapy.datasets import MapDataset
    from gammapy.maps import Map, WcsGeom

    maker, _ = shipped
    dataset, truth = make_dataset(template, livetime=1800, seed=4)
    full = dataset.counts
    pointing = full.geom.center_skydir
    center = pointing.directional_offset_by(90 * u.deg, 0.6 * u.deg) if off_pointing else pointing
    geom = WcsGeom.create(skydir=center, width=4, binsz=binsz, frame="icrs", axes=full.geom.axes)
    coords = full.geom.get_coord()
    counts, expected = Map.from_geom(geom), Map.from_geom(geom)
    counts.fill_by_coord(coords, weights=full.data)
    expected.fill_by_coord(coords, weights=truth["background"])
    cut = MapDataset(counts=counts, name="cut")
    cut.meta_table = Table({"OBS_ID": [1], "RA_PNT": [pointing.ra.deg] * u.deg, "DEC_PNT": [pointing.dec.deg] * u.deg})

    out = maker.run(cut)
    safe = np.ones(geom.data_shape, bool) if out.mask_safe is None else out.mask_safe.data
    assert safe.mean() > 0.95
    ratio = out.background.data[safe].sum() / expected.data[safe].sum()
    # ~40000 counts: Poisson noise 0.5%; the off-pointing frame is partly masked, which
    # the networks never saw in training (measured 0.955 there, 1.000 centred)
    assert ratio == pytest.approx(1.0, abs=0.06 if off_pointing else 0.02)


def test_scored_candidates_must_also_be_significant_after_trials(template):
    """The trials floor: a candidate is kept by its score only when its significance reaches it."""
    dataset, _ = make_dataset(template, sources=[(1.0, 0.0, 0.3)], livetime=100, seed=4)
    finder = CNNSourceFinder(rescue=False, min_significance=0)
    (candidate,) = finder(dataset)[:1]
    assert candidate["score"] >= finder.threshold
    # the default floor is the 0.02-per-field false rate over 2500 positions
    assert CNNSourceFinder().min_significance == pytest.approx(4.31, abs=0.01)
    above = CNNSourceFinder(rescue=False, min_significance=candidate["significance"] + 0.1)
    assert not np.any(np.abs(above(dataset)["score"] - candidate["score"]) < 1e-6)
    with pytest.raises(ValueError, match="min_significance"):
        CNNSourceFinder(min_significance=-1)
