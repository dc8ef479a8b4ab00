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
