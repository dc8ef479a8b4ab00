import numpy as np
import pytest
from gammapy.datasets import MapDataset
from gammapy.estimators import ExcessMapEstimator
from gammapy.makers import MAKER_REGISTRY
from gammapy.maps import Map, RegionGeom

from gammapy_cnn import CNNBackgroundMaker

from .conftest import make_dataset


def test_registered():
    assert MAKER_REGISTRY.get_cls("CNNBackgroundMaker") is CNNBackgroundMaker
    assert CNNBackgroundMaker.tag == "CNNBackgroundMaker"


def test_run_counts_only_3d(template, tiny_networks):
    dataset, truth = make_dataset(template, sources=[(0.5, 0.3, 1.0)], livetime=300)
    maker = CNNBackgroundMaker(network=tiny_networks["cleaner"])
    before = dataset.counts.data.copy()
    out = maker.run(dataset)
    assert out is not dataset and out.name == dataset.name
    assert out.counts.geom == dataset.counts.geom
    np.testing.assert_array_equal(dataset.counts.data, before)
    assert dataset.background is None
    bkg = out.npred_background().data
    assert bkg.shape == dataset.counts.data.shape
    assert np.all(np.isfinite(bkg)) and np.all(bkg >= 0)
    # the energy spectrum of the estimate follows that of the counts
    frac_est = bkg.sum(axis=(1, 2)) / bkg.sum()
    frac_true = truth["background"].sum(axis=(1, 2)) / truth["background"].sum()
    assert np.allclose(frac_est[:3], frac_true[:3], atol=0.05)
    # the counts scale is kept: the total is the total of counts minus at most the sources
    total = dataset.counts.data.sum()
    assert 0.5 * total < bkg.sum() < 1.5 * total


def test_downstream_excess_estimator(template, tiny_networks):
    dataset, _ = make_dataset(template, sources=[(0.0, 0.0, 2.0)], livetime=300)
    out = CNNBackgroundMaker(network=tiny_networks["cleaner"]).run(dataset)
    maps = ExcessMapEstimator(correlation_radius="0.1 deg", selection_optional=[]).run(out)
    assert np.isfinite(maps["sqrt_ts"].data).any()
    centre = maps["sqrt_ts"].data[0, 100, 100]
    assert centre > 5


def test_clean_returns_counts_map(template, tiny_networks):
    dataset, truth = make_dataset(template, sources=[(0.0, 0.0, 2.0)], livetime=300)
    cleaned = CNNBackgroundMaker(network=tiny_networks["cleaner"]).clean(dataset)
    assert cleaned.geom == dataset.counts.geom.to_image()
    assert cleaned.data[100, 100] > np.median(cleaned.data)


def test_other_geometry_resampled(template, tiny_networks):
    dataset, _ = make_dataset(template, livetime=300)
    coarse = dataset.counts.downsample(2, preserve_counts=True)
    out = CNNBackgroundMaker(network=tiny_networks["cleaner"]).run(MapDataset(counts=coarse))
    assert out.background.geom == coarse.geom
    ratio = out.background.data.sum() / coarse.data.sum()
    assert 0.5 < ratio < 1.5


def test_non_wcs_geometry_error(tiny_networks):
    geom = RegionGeom.create("icrs;circle(83.6, 22.0, 0.5)")
    dataset = MapDataset(counts=Map.from_geom(geom))
    with pytest.raises(ValueError, match="WCS"):
        CNNBackgroundMaker(network=tiny_networks["cleaner"]).run(dataset)


@pytest.mark.parametrize("value, match", [(np.nan, "NaN"), (-1.0, "negative"), (0.5, "whole")])
def test_bad_counts(template, tiny_networks, value, match):
    dataset, _ = make_dataset(template, livetime=100)
    dataset.counts.data[0, 10, 10] = value
    with pytest.raises(ValueError, match=match):
        CNNBackgroundMaker(network=tiny_networks["cleaner"]).run(dataset)


def test_all_zero_counts_valid(template, tiny_networks):
    dataset, _ = make_dataset(template, livetime=100)
    dataset.counts.data[...] = 0
    out = CNNBackgroundMaker(network=tiny_networks["cleaner"]).run(dataset)
    bkg = out.background.data
    assert np.all(np.isfinite(bkg)) and np.all(bkg >= 0) and bkg.sum() < 5


def test_unknown_network():
    with pytest.raises(ValueError, match="no shipped cleaner network named 'nope'"):
        CNNBackgroundMaker(network="nope").network_


def _acceptances(amplitude):
    """A network's radial shape and a different, non-monotonic real one (200 x 200 pixels)."""
    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(xx - 99.5, yy - 99.5) / 100
    network = np.exp(-(r**2))
    # the instrument is fainter at the centre, brighter at 0.7 half-widths, with a gradient
    # (like CTA 1DC South seen by the default network)
    truth = network * np.exp(-amplitude * np.cos(np.pi * r / 0.7) + 0.05 * (xx - 99.5) / 100)
    return network, truth, r < 1


def test_shape_refit_follows_the_counts_only_when_they_demand_it():
    from gammapy_cnn.background import refit_shape

    rng = np.random.default_rng(4)
    network, truth_shape, inside = _acceptances(0.08)
    keep = np.ones((200, 200), bool)
    for level, corrected in ((20.0, True), (0.005, False)):
        truth = level * truth_shape
        counts = rng.poisson(truth).astype(float)
        start = network * counts.sum() / network.sum()
        out, reshaped = refit_shape(counts, start, keep)
        assert reshaped == corrected
        error_before = np.sqrt(np.mean((start / truth - 1)[inside] ** 2))
        error_after = np.sqrt(np.mean((out / truth - 1)[inside] ** 2))
        if corrected:
            assert error_after < 0.25 * error_before
        else:  # ~200 counts cannot tell the shapes apart: the network's is kept
            np.testing.assert_array_equal(out, start)


def test_refit_to_counts_is_not_biased_by_the_excesses_a_wrong_shape_makes():
    from gammapy_cnn.background import away_from_excesses, fit_to_counts

    rng = np.random.default_rng(5)
    network, truth_shape, inside = _acceptances(0.15)
    truth = 20 * truth_shape  # ~500 000 counts: a long exposure
    counts = rng.poisson(truth).astype(float)
    mask = np.ones(counts.shape, bool)
    network = network * counts.sum() / network.sum()  # the network predicts the level too
    # the network's shape alone makes spurious 5 sigma "excesses" in an empty field...
    assert not away_from_excesses(counts, network, mask).all()
    # ...which must not pull the refit normalisation low (one pass: -0.5%)
    out, _ = fit_to_counts(counts, network, mask)
    assert abs(out.sum() / counts.sum() - 1) < 0.002
    assert away_from_excesses(counts, out, mask).mean() > 0.995  # the noise's own 5 sigma remain


def test_original_network_and_its_former_name_seed():
    from gammapy_cnn.networks import load_network

    network = load_network("cleaner", "original")
    assert network.architecture == "original" and network.path.name == "cleaner_original.keras"
    # "seed" is an alias, and a network is loaded (and hashed) once per file
    assert load_network("cleaner", "seed", expect_architecture="seed") is network
    assert CNNBackgroundMaker(network="seed").network_ is network


def test_shape_refit_never_overflows_and_a_failed_fit_keeps_the_shape():
    """All counts in one block of a flat background: the fit runs away; no warning, shape kept."""
    import warnings

    from gammapy_cnn.background import refit_shape

    for i in range(20):
        rng = np.random.default_rng(i)
        counts = np.zeros((64, 64))
        y, x = rng.integers(0, 56, 2)
        counts[y : y + 8, x : x + 8] = rng.poisson(rng.uniform(1, 500), (8, 8))
        background = np.full((64, 64), rng.uniform(1e-3, 1))
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            out, reshaped = refit_shape(counts, background, np.ones((64, 64), bool))
        assert np.all(np.isfinite(out))
        if not reshaped:
            assert out is background


def test_energy_split_follows_each_bins_own_shape():
    """At high statistics a bin whose acceptance differs from the image's gets its own shape."""
    from gammapy_cnn.background import split_in_energy

    rng = np.random.default_rng(2)
    y, x = (np.mgrid[:96, :96] - 47.5) / 48
    r2 = x**2 + y**2
    expected = np.stack([200 * (1 - 0.3 * r2), 80 * (1 + 0.4 * r2) + 10 * x])  # soft falls, hard rises
    cube = rng.poisson(expected).astype(float)
    image = expected.sum(axis=0)
    out = split_in_energy(image, cube, cube.sum(axis=0), np.ones((96, 96), bool))
    assert np.allclose(out.sum(axis=0), image)  # the image fixes the total
    centre, edge = r2 < 0.1, r2 > 0.8
    for i in range(2):
        # the bin's own contrast between edge and centre, not the image's
        truth = expected[i][edge].mean() / expected[i][centre].mean()
        assert out[i][edge].mean() / out[i][centre].mean() == pytest.approx(truth, rel=0.03), i
    # off-centre pointing: the radial part follows it
    shifted = split_in_energy(image, cube, cube.sum(axis=0), np.ones((96, 96), bool), centre=(20.0, 47.5))
    assert not np.allclose(shifted, out)


def test_systematic_fraction_finds_a_wrong_background_and_not_noise():
    from gammapy_cnn.background import systematic_fraction

    rng = np.random.default_rng(4)
    truth = np.full((160, 160), 5.0)  # 320 counts per 0.2 deg block
    keep = np.ones(truth.shape, bool)
    keep[70:90, 70:90] = False  # a source left out
    counts = rng.poisson(truth).astype(float)
    assert systematic_fraction(counts, truth, keep) < 0.01  # Poisson: nothing beyond it
    # a background wrong by +-5% from block to block (smooth on the 0.2 deg scale)
    wrong = truth * (1 + 0.05 * np.kron(rng.choice([-1, 1], (20, 20)), np.ones((8, 8))))
    assert systematic_fraction(counts, wrong, keep) == pytest.approx(0.05, rel=0.25)
    assert systematic_fraction(counts, wrong, np.zeros(truth.shape, bool)) == 0.0  # no block left


def test_one_energy_split_rule():
    """Excesses and excluded pixels are left out of the spectrum; nothing left: all valid pixels."""
    from gammapy_cnn.background import split_in_energy

    rng = np.random.default_rng(1)
    background = np.full((64, 64), 4.0)
    cube = np.stack([rng.poisson(3.0, (64, 64)), rng.poisson(1.0, (64, 64))]).astype(float)
    cube[1, 30:34, 30:34] += 200  # a hard source: its counts must not harden the background
    counts, mask = cube.sum(axis=0), np.ones((64, 64), bool)
    out = split_in_energy(background, cube, counts, mask)
    assert out.shape == cube.shape and np.allclose(out.sum(axis=0), background)
    assert abs(out[1].sum() / out.sum() - 0.25) < 0.02
    exclude = np.zeros((64, 64), bool)
    exclude[:, :32] = True
    half = split_in_energy(background, cube, counts, mask, exclude=exclude)
    assert abs(half[1].sum() / half.sum() - 0.25) < 0.03
    flat = split_in_energy(background, np.zeros_like(cube), np.zeros((64, 64)), mask)
    assert np.allclose(flat[0], flat[1])


@pytest.mark.parametrize("shape", [(100, 100), (34, 57), (3, 5), (20, 300)])
def test_fast_excess_search_is_scipys_filter_and_dilation(shape):
    """The matrix Gaussian and the excess search's shifted-copy dilation are scipy's operations."""
    from scipy.ndimage import binary_dilation, gaussian_filter

    from gammapy_cnn.background import _dilated
    from gammapy_cnn.utils import gaussian_smoothed

    rng = np.random.default_rng(3)
    image = rng.normal(size=shape)
    for sigma, mode in ((1.5, "reflect"), (2.0, "reflect"), (2.4, "constant")):
        np.testing.assert_allclose(gaussian_smoothed(image, sigma, mode=mode), gaussian_filter(image, sigma, mode=mode),
                                   atol=1e-14)
    spots = rng.random(shape) > 0.97
    spots[0, -1] = True  # a corner: the dilation stops at the map's edge
    for iterations in (1, 2, 3):
        np.testing.assert_array_equal(_dilated(spots, iterations), binary_dilation(spots, iterations=iterations))


def test_shape_correction_on_pixels_is_the_interpolated_radial_profile():
    from gammapy_cnn.background import _SHAPE_KNOTS, _shape_pixels

    params = np.random.default_rng(4).normal(size=len(_SHAPE_KNOTS))
    # an off-centre pointing: corners beyond the last knot take its value, as numpy.interp
    index, offset, x, y = _shape_pixels(60, 80, 40.0, 30.0, 70.5, 5.0)
    slopes = np.diff(params) / np.diff(_SHAPE_KNOTS)
    expected = np.interp(np.hypot(x, y), _SHAPE_KNOTS, params)
    assert np.hypot(x, y).max() > _SHAPE_KNOTS[-1]
    np.testing.assert_allclose(np.take(params, index) + np.take(slopes, index) * offset, expected, atol=1e-14)
