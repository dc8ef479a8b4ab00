"""Shared fixtures: a few simulated maps and tiny networks trained on them.

Tests run the real code (gammapy, TensorFlow) on small real inputs; the
tiny networks are trained here in seconds by the same recipe code that made
the shipped ones, so the whole path from simulation to catalogue is exercised.
"""

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# gammapy's data folder: hess-dl3-dr1/, cta-caldb/ and cta-1dc-irf/ inside it.
# `.ci/run` points it at ../shared/data when it is unset; tests needing a file skip without it.
GAMMAPY_DATA = Path(os.environ["GAMMAPY_DATA"]) if os.environ.get("GAMMAPY_DATA") else None
_DATA = GAMMAPY_DATA if GAMMAPY_DATA is not None else Path("/GAMMAPY_DATA-is-not-set")
PROD5 = _DATA / "cta-caldb" / "Prod5-North-20deg-AverageAz-4LSTs09MSTs.180000s-v0.1.fits.gz"
IRF_1DC = _DATA / "cta-1dc-irf" / "South_z20_50h_irf_file.fits.gz"
HESS_DR1 = _DATA / "hess-dl3-dr1"


def require(path):
    """Skip the test, saying why, when a reference file from $GAMMAPY_DATA is absent."""
    if GAMMAPY_DATA is None:
        pytest.skip(f"GAMMAPY_DATA is not set (needed for {Path(path).relative_to(_DATA)})")
    if not Path(path).exists():
        pytest.skip(f"reference data {path} not found in GAMMAPY_DATA={GAMMAPY_DATA}")
    return Path(path)


@pytest.fixture(scope="session")
def test_scenario():
    from gammapy_cnn.simulation import Scenario

    return Scenario.preset("test")


@pytest.fixture(scope="session")
def template():
    from gammapy_cnn.simulation import SimulationTemplate

    return SimulationTemplate("default-z20")


@pytest.fixture(scope="session")
def sim_file(tmp_path_factory, test_scenario):
    """64 simulated maps of the test scenario."""
    from gammapy_cnn.simulation.batch import simulate_file

    path = tmp_path_factory.mktemp("sim") / "maps.h5"
    simulate_file(path, 64, scenario=test_scenario, seed=7, progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_networks(tmp_path_factory, sim_file):
    """A tiny cleaner and finder trained for a few steps on `sim_file`."""
    from gammapy_cnn.training import TrainingConfig, train

    out = tmp_path_factory.mktemp("networks")
    paths = {}
    for kind, widths in (("cleaner", [4, 4, 4, 4]), ("finder", [4, 4, 4])):
        config = TrainingConfig(kind=kind, epochs=2, batch_size=8, steps_per_epoch=3,
                                validation_fraction=0.15, widths=widths, seed=1)
        paths[kind] = out / f"{kind}_tiny.keras"
        train(config, paths[kind], data=sim_file, verbose=0)
    return paths


def make_dataset(template, sources=(), livetime=100, seed=0, counts_only=True, pointing=(83.6, 22.0)):
    """A simulated MapDataset (counts only by default) with known truth.

    ``sources`` are (lon, lat, flux) in deg offsets from the centre and Crab units.
    """
    from astropy.coordinates import SkyCoord
    from gammapy.datasets import MapDataset
    from gammapy.maps import Map

    from gammapy_cnn.simulation import MapParameters, SourceParameters

    params = MapParameters(
        irf_index=0, pointing_ra=pointing[0], pointing_dec=pointing[1], livetime=livetime,
        background_norm=1.0, background_tilt=0.0, background_gradient=0.0, gradient_angle=0.0,
        sources=[SourceParameters(offset_x=a, offset_y=b, flux=f, index=2.5, extension=0.0) for a, b, f in sources],
    )
    sim = template.simulate(params, np.random.default_rng(seed))
    geom = template.geom(SkyCoord(pointing[0], pointing[1], unit="deg"))
    counts = Map.from_geom(geom, data=sim.counts.astype(float))
    dataset = MapDataset(counts=counts, name="sim")
    truth = dict(background=template.background(livetime), signal=sim.signal, sources=sim.sources)
    return dataset, truth
