"""The benchmark's test maps: one simulated map, its truth and the datasets the methods get.

The simulated maps do not depend on the pointing in pixel space, so one IRF
dataset per response is reduced once (1 s, at `REFERENCE_POINTING`) and
scaled to each map's livetime with `scaled_reference`.
"""

import time
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord

__all__ = [
    "EXCLUSION_RADIUS",
    "REFERENCE_POINTING",
    "BenchmarkMap",
    "exclusion_mask",
    "scaled_reference",
    "simulate_benchmark_map",
]

#: Radius around every true source that the ring, FoV and ON/OFF methods exclude.
EXCLUSION_RADIUS = 0.3 * u.deg
#: Pointing of the reused IRF datasets (any pointing gives the same pixels).
REFERENCE_POINTING = SkyCoord(83.633, 22.015, unit="deg")


@dataclass
class BenchmarkMap:
    """One simulated test map with its truth and the datasets the methods use.

    Attributes
    ----------
    index : int
        Map index in the test set (its random stream is ``[seed, index]``).
    params : `~gammapy_cnn.simulation.MapParameters`
    counts : `~numpy.ndarray`
        (n_energy, ny, nx) observed counts.
    signal, background : `~numpy.ndarray`
        (ny, nx) true expected source and background counts, energy-integrated.
    sources : list of dict
        True sources (``x``, ``y`` in pixels, ``flux`` in Crab, ...).
    dataset : `~gammapy.datasets.MapDataset`
        Counts only: what the CNN methods get.
    reference : `~gammapy.datasets.MapDataset`
        The same counts in the full IRF dataset (exposure, PSF, energy
        dispersion, IRF background): what the gammapy methods get.
    exclusion : `~gammapy.maps.WcsNDMap`
        2D exclusion mask (True outside 0.3 deg of every true source).
    mask : `~numpy.ndarray`
        (ny, nx) bool safe mask (where the IRF background is positive).
    reduction_time : float
        Wall time (s) of building ``reference`` (IRF dataset reduction).
    """

    index: int
    params: object
    counts: np.ndarray
    signal: np.ndarray
    background: np.ndarray
    sources: list
    dataset: object
    reference: object
    exclusion: object
    mask: np.ndarray
    reduction_time: float

    @property
    def livetime(self):
        """Livetime of the map as a `~astropy.units.Quantity`."""
        return self.params.livetime * u.s

    @property
    def counts_image(self):
        """(ny, nx) energy-integrated counts, as float."""
        return self.counts.sum(axis=0).astype(float)

    @property
    def binsz(self):
        """Pixel size in deg."""
        return float(np.abs(self.dataset.counts.geom.pixel_scales[0].to_value("deg")))

    def source_xy(self):
        """(n, 2) pixel positions of the true sources."""
        return np.array([[s["x"], s["y"]] for s in self.sources]).reshape(-1, 2)


def simulate_benchmark_map(template, scenario, seed, index, reference=None):
    """Simulate map ``index`` of a test set and build its datasets.

    The maps are the ones ``gammapy-cnn simulate --scenario ... --seed SEED``
    writes (same random stream per map).

    Parameters
    ----------
    template : `~gammapy_cnn.simulation.SimulationTemplate`
    scenario : `~gammapy_cnn.simulation.Scenario`
    seed, index : int
    reference : `~gammapy.datasets.MapDataset`, optional
        A 1 s IRF dataset of ``template`` (`reference_dataset`) to reuse,
        scaled to the map's livetime. The map is then analysed on that
        dataset's tangent plane instead of its own pointing's: the same
        pixels, since the simulated maps do not depend on the pointing in
        pixel space. Default: reduce a dataset at the map's pointing (~0.5 s).

    Returns
    -------
    bmap : `BenchmarkMap`
    """
    from gammapy.datasets import MapDataset
    from gammapy.maps import Map

    from ..simulation.batch import map_rng

    rng = map_rng(seed, index)
    params = scenario.sample(rng)
    sim = template.simulate(params, rng)
    background = template.map_background(params)
    if reference is None:
        pointing = SkyCoord(params.pointing_ra, params.pointing_dec, unit="deg")
        start = time.perf_counter()
        reference = template.reference_dataset(pointing, params.livetime * u.s)
        reduction_time = time.perf_counter() - start
    else:
        reference = scaled_reference(reference, params.livetime * u.s, name=f"map{index}-irf")
        reduction_time = np.nan
    geom = reference.counts.geom
    counts_map = Map.from_geom(geom, data=sim.counts.astype(np.float32))
    reference.counts = counts_map
    mask = template.mask.copy()
    safe = Map.from_geom(geom, data=np.broadcast_to(mask, geom.data_shape).copy())
    reference.mask_safe = safe
    dataset = MapDataset(counts=counts_map.copy(), mask_safe=safe.copy(), name=f"map{index}")
    return BenchmarkMap(
        index=index, params=params, counts=sim.counts, signal=sim.signal.sum(axis=0),
        background=background.sum(axis=0), sources=sim.sources, dataset=dataset,
        reference=reference, exclusion=exclusion_mask(geom, sim.sources), mask=mask,
        reduction_time=reduction_time,
    )


def scaled_reference(reference, livetime, name=None):
    """Copy of a 1 s IRF dataset for another livetime (exposure and background scale with it).

    Parameters
    ----------
    reference : `~gammapy.datasets.MapDataset`
        Made by `~gammapy_cnn.simulation.SimulationTemplate.reference_dataset` with 1 s.
    livetime : `~astropy.units.Quantity`
    name : str, optional

    Returns
    -------
    dataset : `~gammapy.datasets.MapDataset`
    """
    factor = float(u.Quantity(livetime, "s").value)
    if not factor > 0:
        raise ValueError(f"livetime must be positive, got {livetime}")
    out = reference.copy(name=name)
    out.exposure = reference.exposure * factor
    out.background = reference.background * factor
    return out


def exclusion_mask(geom, sources, radius=EXCLUSION_RADIUS):
    """2D exclusion mask, True outside ``radius`` of every source.

    The circles are drawn in pixels of the map's projection (``radius`` over
    the pixel size), like every other distance of the benchmark.

    Parameters
    ----------
    geom : `~gammapy.maps.WcsGeom`
    sources : list of dict
        With pixel ``x``, ``y``.
    radius : `~astropy.units.Quantity`

    Returns
    -------
    mask : `~gammapy.maps.WcsNDMap`
    """
    from gammapy.maps import Map

    image = geom.to_image()
    binsz = float(np.abs(image.pixel_scales[0].to_value("deg")))
    ny, nx = image.data_shape
    yy, xx = np.mgrid[:ny, :nx]
    keep = np.ones((ny, nx), bool)
    r = u.Quantity(radius, "deg").value / binsz
    # not geom.region_mask with CircleSkyRegions: those scale the radius by the local
    # pixel size of the TAN projection (12.007 instead of 12 pixels at 2 deg offset),
    # which moves edge pixels and with them the published ring/FoV numbers
    for src in sources:
        keep &= (xx - src["x"]) ** 2 + (yy - src["y"]) ** 2 > r**2
    return Map.from_geom(image, data=keep)

