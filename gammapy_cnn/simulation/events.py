"""Event lists with arrival times: simulated observations for the real-time monitor.

The maps of `~gammapy_cnn.simulation.sampler` are counts cubes without time.
A real-time test needs events that arrive: gammapy's
`~gammapy.datasets.MapDatasetEventSampler` draws them, with times, from a
`~gammapy.datasets.MapDataset` of the response and from sources whose flux
follows a light curve (`light_curve_source`). `simulate_observation` returns
a DL3-like `~gammapy.data.Observation` (events, GTI, pointing, effective
area) that `gammapy_cnn.realtime.replay` and the monitor take like a real run.
"""

import astropy.units as u
import numpy as np
from astropy.table import Table
from astropy.time import Time
from gammapy.data import FixedPointingInfo, Observation
from gammapy.datasets import MapDataset, MapDatasetEventSampler
from gammapy.makers import MapDatasetMaker
from gammapy.maps import MapAxis
from gammapy.modeling.models import (
    FoVBackgroundModel,
    LightCurveTemplateTemporalModel,
    Models,
    PointSpatialModel,
    PowerLawSpectralModel,
    SkyModel,
)

from ..utils import to_quantity
from .sampler import CRAB_AMPLITUDE, REFERENCE_ENERGY

__all__ = ["REFERENCE_TIME", "light_curve_source", "simulate_observation"]

#: Reference time of the simulated observations (their TIME column counts from it).
REFERENCE_TIME = Time("2026-01-01T00:00:00", scale="utc")
#: Energy-migration axis of the sampler's dispersion (reconstructed / true energy).
_MIGRA = MapAxis.from_bounds(0.2, 5.0, nbin=60, node_type="edges", name="migra")


def light_curve_source(position, flux, times, norms, index=2.5, name="source"):
    """A point source whose flux follows a light curve.

    Parameters
    ----------
    position : `~astropy.coordinates.SkyCoord`
        Its position.
    flux : float
        Flux in Crab units (at 1 TeV) where ``norms`` is 1.
    times : `~astropy.units.Quantity`
        Nodes of the light curve, from the observation's start (linear
        interpolation between them, as gammapy's template model does).
    norms : array_like
        Flux factor at each node.
    index : float
        Power-law index.
    name : str
        Model name.

    Returns
    -------
    model : `~gammapy.modeling.models.SkyModel`
    """
    if not (isinstance(times, u.Quantity) and times.unit.is_equivalent("s")):
        raise ValueError(f"times must be a time Quantity array, got {times!r}")
    times = times.to("s")
    norms = np.asarray(norms, float)
    if times.shape != norms.shape or len(times) < 2:
        raise ValueError(f"times and norms need the same length (>= 2), got {times.shape} and {norms.shape}")
    if np.any(np.diff(times.value) <= 0) or np.any(norms < 0):
        raise ValueError("times must increase and norms be >= 0")
    table = Table({"TIME": times, "NORM": norms})
    table.meta.update(MJDREFI=int(REFERENCE_TIME.mjd), MJDREFF=REFERENCE_TIME.mjd % 1, TIMESYS="utc")
    spectral = PowerLawSpectralModel(index=index, amplitude=flux * CRAB_AMPLITUDE, reference=REFERENCE_ENERGY)
    spatial = PointSpatialModel(lon_0=position.icrs.ra, lat_0=position.icrs.dec, frame="icrs")
    return SkyModel(spectral, spatial, temporal_model=LightCurveTemplateTemporalModel.from_table(table), name=name)


def simulate_observation(template, pointing, livetime, sources=(), seed=0, obs_id=1):
    """A simulated observation: events with arrival times from the response and the sources.

    Parameters
    ----------
    template : `~gammapy_cnn.simulation.SimulationTemplate`
        The response and the map geometry (5 x 5 deg, 0.025 deg pixels by default).
    pointing : `~astropy.coordinates.SkyCoord`
        Pointing (fixed, ICRS).
    livetime : `~astropy.units.Quantity`
        Duration (no dead time), from `REFERENCE_TIME`.
    sources : sequence of `~gammapy.modeling.models.SkyModel`
        E.g. `light_curve_source`; the background is the response's.
    seed : int
        Random seed of the sampler.
    obs_id : int
        The observation's id.

    Returns
    -------
    observation : `~gammapy.data.Observation`
        Events (``TIME``, ``RA``, ``DEC``, ``ENERGY``), GTI, pointing and effective area.
    """
    livetime = to_quantity(livetime, "s", "livetime", positive=True)
    irfs = template.irfs
    # the sampler writes the telescope's name and location into the events' header;
    # a response that does not name them (the embedded one) is a CTAO-North one
    irfs["aeff"].meta.setdefault("TELESCOP", "cta_north")
    irfs["aeff"].meta.setdefault("INSTRUME", "gammapy-cnn simulation")
    observation = Observation.create(pointing=FixedPointingInfo(fixed_icrs=pointing.icrs), livetime=livetime,
                                     irfs=irfs, reference_time=REFERENCE_TIME, tstart=0 * u.s, obs_id=obs_id)
    empty = MapDataset.create(template.geom(pointing), energy_axis_true=template.energy_axis_true,
                              migra_axis=_MIGRA, binsz_irf=0.25, name=f"obs{obs_id}")
    dataset = MapDatasetMaker(selection=["exposure", "background", "psf", "edisp"]).run(empty, observation)
    dataset.models = Models(list(sources) + [FoVBackgroundModel(dataset_name=dataset.name)])
    events = MapDatasetEventSampler(random_state=int(seed)).run(dataset, observation)
    return Observation(obs_id=obs_id, gti=observation.gti, aeff=observation.aeff, events=events,
                       pointing=observation.pointing)
