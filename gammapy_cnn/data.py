"""Counts-only datasets from DL3 event lists, for real-time style analysis.

The CNN background estimator and source finder work on counts cubes only:
no instrument response (exposure, background model, PSF, energy dispersion)
is needed. This module turns DL3 observations into
`~gammapy.datasets.MapDataset` objects that hold only ``counts`` and
``mask_safe``, for a whole run or for a time slice of it (a real-time
window), and iterates over sliding windows of a run.

Events are read once per observation and binned with NumPy, so a 100 s
window costs a few milliseconds (``Observation.events`` of a
`~gammapy.data.DataStore` observation rereads the FITS file at every access;
this module never does that per window).

Conventions
-----------
* Time slices are given relative to each observation's start
  (``observation.tstart``, the start of its first GTI) and are half-open,
  ``[start, start + duration)``, like `~gammapy.data.Observation.select_time`.
  The observation's GTIs are cropped to the slice; events outside the cropped
  GTIs are dropped (H.E.S.S. DL3 DR1 runs hold a few events time-stamped a
  few ms after the GTI stop: they are not counted, not even for a full run).
* Energy cuts act on the reconstructed energy and are half-open,
  ``energy_min <= E < energy_max`` (as `~gammapy.data.EventList.select_energy`).
  ``mask_safe`` is True in the energy bins fully inside the cut (as
  `~gammapy.maps.Geom.energy_mask`, but a cut on a bin edge keeps the bin
  despite rounding of the edges) and in the pixels whose centre lies within
  ``offset_max`` of the observation's pointing.
* The exposure time is stored in ``dataset.gti`` (the cropped GTIs of all
  stacked observations; ``dataset.gti.time_sum`` is the on-time) and in the
  one-row ``dataset.meta_table`` (columns ``OBS_ID``, ``RA_PNT``, ``DEC_PNT``,
  ``TSTART_REL``, ``TSTOP_REL``, ``ONTIME``, ``LIVETIME`` in s, ``N_EVENTS``;
  one value per stacked observation, the layout of gammapy's
  `~gammapy.datasets.MapDataset.stack`). `dataset_livetime` returns the
  dead-time corrected livetime. Both survive ``dataset.write`` / ``read``
  (``dataset.meta.optional`` would not: gammapy 2.1 cannot write a dict there).
"""

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import Angle, SkyCoord
from astropy.table import Table, vstack
from gammapy.data import GTI, FixedPointingInfo, Observation, Observations
from gammapy.data.pointing import PointingMode
from gammapy.datasets import MapDataset
from gammapy.maps import Map, MapAxis, WcsGeom

from .observations import read_observations
from .utils import ENERGY_RANGE, NATIVE_BINSZ, NATIVE_ENERGY_NBIN, to_quantity

__all__ = [
    "counts_geom",
    "counts_dataset",
    "dataset_livetime",
    "event_pixels",
    "iter_window_datasets",
    "read_observations",
    "sliding_windows",
]

# Tolerance (s) when comparing times built from floating-point arithmetic, so
# that e.g. a 100 s window ending exactly at the GTI stop is kept.
_TIME_EPS_S = 1e-6
# Relative tolerance when comparing energy cuts with energy bin edges.
_ENERGY_RTOL = 1e-6


# --------------------------------------------------------------------------
# input validation helpers (quantities: gammapy_cnn.utils.to_quantity)
# --------------------------------------------------------------------------
def _energy_range(energy_min, energy_max):
    energy_min = to_quantity(energy_min, u.TeV, "energy_min", allow_none=True)
    energy_max = to_quantity(energy_max, u.TeV, "energy_max", allow_none=True)
    if energy_min is not None and energy_min.value < 0:
        raise ValueError(f"energy_min must be >= 0, got {energy_min!r}.")
    if energy_min is not None and energy_max is not None and energy_max <= energy_min:
        raise ValueError(
            f"energy_max ({energy_max}) must be larger than energy_min ({energy_min})."
        )
    return energy_min, energy_max


def _offset_max(offset_max):
    if offset_max is None:
        return None
    value = to_quantity(offset_max, u.deg, "offset_max", positive=True)
    return Angle(value)


def _observation_list(observations):
    """Flatten ``observations`` into a non-empty list of `~gammapy.data.Observation`."""
    if isinstance(observations, Observation):
        return [observations]
    if isinstance(observations, (str, Path)):
        raise ValueError(
            "observations must be Observation objects, got a path "
            f"{str(observations)!r}: read it first with read_observations(path)."
        )
    try:
        items = list(observations)
    except TypeError:
        raise ValueError(
            "observations must be an Observation, an Observations or a list of them, "
            f"got {type(observations).__name__}."
        ) from None
    result = []
    for item in items:
        if isinstance(item, Observation):
            result.append(item)
        elif isinstance(item, Observations):
            result.extend(item)
        else:
            raise ValueError(
                "observations must be an Observation, an Observations or a list of them; "
                f"found an element of type {type(item).__name__}."
            )
    if not result:
        raise ValueError("observations is empty: at least one Observation is needed.")
    return result


def _check_geom(geom):
    if not isinstance(geom, WcsGeom):
        raise ValueError(f"geom must be a gammapy WcsGeom, got {type(geom).__name__}.")
    if geom.axes.names != ["energy"]:
        raise ValueError(
            "geom must have exactly one non-spatial axis, the reconstructed energy axis "
            f"named 'energy'; got axes {geom.axes.names}."
        )
    if not geom.is_regular:
        raise ValueError("geom must be a regular WcsGeom (same image for every energy bin).")
    return geom


# --------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------
def counts_geom(center, width=5 * u.deg, binsz=NATIVE_BINSZ, energy_axis=None, frame="icrs"):
    """Square TAN-projected counts geometry.

    Parameters
    ----------
    center : `~astropy.coordinates.SkyCoord`
        Map centre (scalar), any frame; converted to ``frame``.
    width : `~astropy.units.Quantity`, optional
        Side length of the square map (angle). Default is 5 deg.
    binsz : `~astropy.units.Quantity`, optional
        Pixel size (angle). The number of pixels per side is
        ``round(width / binsz)``, so the actual width is ``npix * binsz``.
        Default is 0.025 deg (200 x 200 pixels for the default width).
    energy_axis : `~gammapy.maps.MapAxis`, optional
        Reconstructed energy axis; its name must be ``"energy"``. Default is 7
        log bins from 0.03 TeV to 100 TeV.
    frame : {"icrs", "galactic"}, optional
        Sky frame of the map. Default is "icrs".

    Returns
    -------
    geom : `~gammapy.maps.WcsGeom`
        Geometry with axes ``(energy, lat, lon)``.

    Raises
    ------
    ValueError
        If an argument has a wrong type, unit or value.
    """
    if not isinstance(center, SkyCoord):
        raise ValueError(f"center must be an astropy SkyCoord, got {type(center).__name__}.")
    if not center.isscalar:
        raise ValueError(f"center must be a scalar SkyCoord, got shape {center.shape}.")
    if frame not in ("icrs", "galactic"):
        raise ValueError(f"frame must be 'icrs' or 'galactic', got {frame!r}.")
    width = to_quantity(width, u.deg, "width", positive=True)
    binsz = to_quantity(binsz, u.deg, "binsz", positive=True)
    npix = int(round(float(width / binsz)))
    if npix < 1:
        raise ValueError(
            f"width ({width}) must be at least one pixel of binsz ({binsz}); "
            f"round(width / binsz) = {npix}."
        )
    if npix * binsz.value >= 180:
        raise ValueError(f"width ({width}) is too large for a TAN projection (< 180 deg).")
    if energy_axis is None:
        energy_axis = MapAxis.from_energy_bounds(*ENERGY_RANGE, nbin=NATIVE_ENERGY_NBIN, name="energy")
    if not isinstance(energy_axis, MapAxis):
        raise ValueError(
            f"energy_axis must be a gammapy MapAxis, got {type(energy_axis).__name__}."
        )
    if energy_axis.name != "energy" or not energy_axis.unit.is_equivalent(u.TeV):
        raise ValueError(
            "energy_axis must be a reconstructed energy axis named 'energy' with an energy "
            f"unit, got name {energy_axis.name!r} and unit {energy_axis.unit!s}."
        )
    skydir = center.transform_to(frame)
    return WcsGeom.create(
        skydir=skydir,
        npix=npix,
        binsz=binsz.value,
        proj="TAN",
        frame=frame,
        axes=[energy_axis],
    )


def _default_geom(observation):
    return counts_geom(_pointing_icrs(observation, observation.tmid))


def _pointing_icrs(observation, time):
    if observation.pointing is None:
        raise ValueError(
            f"observation {observation.obs_id} has no pointing information; it is needed "
            "for the default geometry and the offset mask."
        )
    pointing = observation.get_pointing_icrs(time)
    return SkyCoord(pointing.ra, pointing.dec, frame="icrs")


def event_pixels(geom, radec, energy):
    """Flat index of each event in ``geom.data_shape`` (energy, lat, lon), -1 outside the map.

    Binning events once and counting windows with `numpy.bincount` of these
    indices is what makes many time windows cheap.
    """
    ix, iy, ie = geom.coord_to_idx({"skycoord": radec, "energy": energy})
    inside = (ix >= 0) & (iy >= 0) & (ie >= 0)
    flat = np.full(len(ix), -1, dtype=np.int64)
    flat[inside] = np.ravel_multi_index((ie[inside], iy[inside], ix[inside]), geom.data_shape)
    return flat


# --------------------------------------------------------------------------
# events of one observation, read once
# --------------------------------------------------------------------------
class _ObservationEvents:
    """Events, GTIs and pointing of one observation as plain arrays.

    Times are float64 seconds relative to ``observation.tstart``. The binning
    of events in a geometry (and the field-of-view mask) are cached for the
    last geometry used, so that many windows cost only a boolean selection and
    a `numpy.bincount`.
    """

    def __init__(self, observation):
        self.observation = observation
        self.obs_id = observation.obs_id
        events = observation.events  # reads the file once for DataStore observations
        if events is None:
            raise ValueError(f"observation {self.obs_id} has no event list.")
        gti = observation.gti
        if gti is None or len(gti.table) == 0:
            raise ValueError(f"observation {self.obs_id} has no GTI.")
        self.gti = gti
        self.time_ref = gti.time_start[0]
        self.gti_start = np.atleast_1d((gti.time_start - self.time_ref).to_value("s"))
        self.gti_stop = np.atleast_1d((gti.time_stop - self.time_ref).to_value("s"))
        table = events.table
        self.n_events = len(table)
        if self.n_events:
            self.time = np.asarray((events.time - self.time_ref).to_value("s"), dtype=float)
            self.energy = np.asarray(u.Quantity(table["ENERGY"]).to_value("TeV"), dtype=float)
            self.radec = SkyCoord(
                u.Quantity(table["RA"], u.deg), u.Quantity(table["DEC"], u.deg), frame="icrs"
            )
        else:
            self.time = np.zeros(0)
            self.energy = np.zeros(0)
            self.radec = None
        dead = observation.observation_dead_time_fraction
        self.deadtime_fraction = 0.0 if dead is None else float(dead)
        self._fixed_pointing = (
            isinstance(observation.pointing, FixedPointingInfo)
            and observation.pointing.mode == PointingMode.POINTING
        )
        self._geom = None
        self._flat_idx = None
        self._fov_key = None
        self._fov_mask = None

    # -- time ----------------------------------------------------------------
    def crop_gti(self, start, stop):
        """GTI intervals (s, relative) cropped to ``[start, stop)``; ``None`` means open."""
        lo = self.gti_start if start is None else np.maximum(self.gti_start, start)
        hi = self.gti_stop if stop is None else np.minimum(self.gti_stop, stop)
        keep = hi > lo + _TIME_EPS_S
        return lo[keep], hi[keep]

    def time_mask(self, starts, stops):
        mask = np.zeros(self.n_events, dtype=bool)
        for lo, hi in zip(starts, stops):
            mask |= (self.time >= lo) & (self.time < hi)
        return mask

    # -- binning -------------------------------------------------------------
    def flat_index(self, geom):
        """Flat index of every event in ``geom.data_shape``, -1 outside the map."""
        if self._geom is not None and (self._geom is geom or self._geom == geom):
            return self._flat_idx
        if self.n_events == 0:
            flat = np.zeros(0, dtype=np.int64)
        else:
            flat = event_pixels(geom, self.radec, self.energy * u.TeV)
        self._geom, self._flat_idx = geom, flat
        self._fov_key, self._fov_mask = None, None
        return flat

    def fov_mask(self, geom, offset_max, time):
        """Image mask, True where the pixel centre is within ``offset_max`` of the pointing."""
        if offset_max is None:
            return np.ones(geom.data_shape[-2:], dtype=bool)
        pointing = _pointing_icrs(self.observation, time)
        key = (id(geom), float(offset_max.deg), float(pointing.ra.deg), float(pointing.dec.deg))
        if self._geom is geom and self._fov_key == key:
            return self._fov_mask
        centers = geom.to_image().get_coord().skycoord
        mask = np.asarray(centers.separation(pointing).deg <= offset_max.deg)
        if self._geom is geom:
            self._fov_key, self._fov_mask = key, mask
        return mask

    def pointing_time(self, starts, stops):
        """Time at which the pointing is evaluated (middle of the selected data)."""
        if self._fixed_pointing or len(starts) == 0:
            return self.observation.tmid
        return self.time_ref + 0.5 * (starts[0] + stops[-1]) * u.s


def _slice_bounds(start, duration):
    start = to_quantity(start, u.s, "start", allow_none=True)
    duration = to_quantity(duration, u.s, "duration", allow_none=True, positive=True)
    lo = None if start is None else start.to_value("s")
    if duration is None:
        hi = None
    else:
        hi = (0.0 if lo is None else lo) + duration.to_value("s")
    return lo, hi


def _energy_bin_mask(geom, energy_min, energy_max):
    """True for the energy bins fully inside ``[energy_min, energy_max]``.

    Like `~gammapy.maps.Geom.energy_mask`, with a relative tolerance of 1e-6 so
    that a cut placed on a bin edge keeps the bin (log-spaced edges carry
    rounding errors, e.g. 10.000000000000002 TeV).
    """
    edges = geom.axes["energy"].edges.to_value("TeV")
    mask = np.ones(len(edges) - 1, dtype=bool)
    if energy_min is not None:
        mask &= edges[:-1] >= energy_min.to_value("TeV") * (1 - _ENERGY_RTOL)
    if energy_max is not None:
        mask &= edges[1:] <= energy_max.to_value("TeV") * (1 + _ENERGY_RTOL)
    return mask


def _meta_table(rows):
    """One-row meta table, as `~gammapy.makers.MapDatasetMaker` makes it.

    With several observations each column holds one value per observation,
    the layout `~gammapy.datasets.MapDataset.stack` produces.
    """
    if len(rows) == 1:
        table = Table([rows[0]])
    else:
        table = Table({key: [np.array([row[key] for row in rows])] for key in rows[0]})
    for column in ("RA_PNT", "DEC_PNT"):
        table[column].unit = u.deg
    for column in ("TSTART_REL", "TSTOP_REL", "ONTIME", "LIVETIME"):
        table[column].unit = u.s
    return table


def _build_dataset(cached, geom, lo, hi, energy_min, energy_max, offset_max, name):
    """Counts-only dataset of the events in ``cached`` (list of `_ObservationEvents`)."""
    counts = np.zeros(int(np.prod(geom.data_shape)), dtype=np.int64)
    fov = np.zeros(geom.data_shape[-2:], dtype=bool)
    gtis, rows = [], []
    e_lo = -np.inf if energy_min is None else energy_min.to_value("TeV")
    e_hi = np.inf if energy_max is None else energy_max.to_value("TeV")
    for obs_events in cached:
        starts, stops = obs_events.crop_gti(lo, hi)
        if len(starts) == 0:
            gti_text = ", ".join(
                f"[{a:.1f}, {b:.1f})" for a, b in zip(obs_events.gti_start, obs_events.gti_stop)
            )
            raise ValueError(
                f"time slice [{'start of run' if lo is None else f'{lo:g} s'}, "
                f"{'end of run' if hi is None else f'{hi:g} s'}) relative to the start of "
                f"observation {obs_events.obs_id} does not overlap its GTIs "
                f"({gti_text} s relative to its start)."
            )
        flat = obs_events.flat_index(geom)
        select = obs_events.time_mask(starts, stops)
        select &= (obs_events.energy >= e_lo) & (obs_events.energy < e_hi)
        select &= flat >= 0
        counts += np.bincount(flat[select], minlength=int(np.prod(geom.data_shape)))

        time = obs_events.pointing_time(starts, stops)
        fov |= obs_events.fov_mask(geom, offset_max, time)

        ontime = float(np.sum(stops - starts))
        livetime = ontime * (1.0 - obs_events.deadtime_fraction)
        ref = obs_events.time_ref
        gtis.append(
            GTI.create(
                ref + starts * u.s, ref + stops * u.s, reference_time=obs_events.gti.time_ref
            )
        )
        if obs_events.observation.pointing is None:  # allowed with offset_max=None
            ra_pnt, dec_pnt = np.nan, np.nan
        else:
            pointing = _pointing_icrs(obs_events.observation, time)
            ra_pnt, dec_pnt = pointing.ra.deg, pointing.dec.deg
        rows.append(
            {
                "OBS_ID": obs_events.obs_id,
                "RA_PNT": ra_pnt,
                "DEC_PNT": dec_pnt,
                "TSTART_REL": float(starts[0]),
                "TSTOP_REL": float(stops[-1]),
                "ONTIME": ontime,
                "LIVETIME": livetime,
                "N_EVENTS": int(select.sum()),
            }
        )

    mask = _energy_bin_mask(geom, energy_min, energy_max)[:, np.newaxis, np.newaxis]
    mask = mask & fov[np.newaxis]
    counts_map = Map.from_geom(geom, data=counts.reshape(geom.data_shape).astype(np.float32))
    mask_map = Map.from_geom(geom, data=mask, dtype=bool)

    if len(gtis) == 1:
        gti = gtis[0]
    else:
        gti = GTI(vstack([g.table for g in gtis]), reference_time=gtis[0].time_ref)
    meta_table = _meta_table(rows)
    return MapDataset(
        counts=counts_map, mask_safe=mask_map, gti=gti, meta_table=meta_table, name=name
    )


# --------------------------------------------------------------------------
# public dataset builders
# --------------------------------------------------------------------------
def counts_dataset(
    observations,
    geom=None,
    *,
    energy_min=None,
    energy_max=None,
    offset_max=2.5 * u.deg,
    start=None,
    duration=None,
    name=None,
):
    """Counts-only `~gammapy.datasets.MapDataset` from one or several observations.

    No IRF is used: the dataset holds ``counts`` and ``mask_safe`` only (no
    exposure, background, PSF or energy dispersion). Several observations are
    stacked: counts are summed and ``mask_safe`` is OR-ed.

    Parameters
    ----------
    observations : `~gammapy.data.Observation`, `~gammapy.data.Observations` or list
        Observation(s) with events, GTI and pointing.
    geom : `~gammapy.maps.WcsGeom`, optional
        Counts geometry with one reconstructed ``energy`` axis. Default is
        `counts_geom` centred on the pointing of the first observation.
    energy_min, energy_max : `~astropy.units.Quantity`, optional
        Reconstructed energy cuts; events with ``energy_min <= E < energy_max``
        are kept. Default is no cut.
    offset_max : `~astropy.units.Quantity` or `~astropy.coordinates.Angle`, optional
        ``mask_safe`` is True where the pixel centre is within ``offset_max`` of
        the pointing of at least one observation. ``None`` disables the cut.
        Counts are not cut (events outside are kept but masked). Default is 2.5 deg.
    start : `~astropy.units.Quantity`, optional
        Start of the time slice (time unit), relative to the start of each
        observation. Default is the observation start.
    duration : `~astropy.units.Quantity`, optional
        Length of the time slice (time unit, > 0). Default is until the end of
        each observation.
    name : str, optional
        Dataset name. Default is a unique name made by gammapy.

    Returns
    -------
    dataset : `~gammapy.datasets.MapDataset`
        Counts-only dataset (``counts`` float32, ``mask_safe`` bool).
        ``dataset.gti`` holds the GTIs cropped to the slice and
        ``dataset.meta_table`` the livetime, on-time, pointing and number of
        selected events of each observation (see `dataset_livetime`).

    Raises
    ------
    ValueError
        On bad input, or if the time slice does not overlap the GTIs of an
        observation (the message names the observation id).

    Notes
    -----
    An empty event selection is valid and gives an all-zero counts cube.
    """
    obs_list = _observation_list(observations)
    energy_min, energy_max = _energy_range(energy_min, energy_max)
    offset_max = _offset_max(offset_max)
    lo, hi = _slice_bounds(start, duration)
    geom = _default_geom(obs_list[0]) if geom is None else _check_geom(geom)
    cached = [_ObservationEvents(obs) for obs in obs_list]
    return _build_dataset(cached, geom, lo, hi, energy_min, energy_max, offset_max, name)


def dataset_livetime(dataset):
    """Dead-time corrected livetime of a dataset made by this module.

    Parameters
    ----------
    dataset : `~gammapy.datasets.MapDataset`
        Dataset from `counts_dataset` or `iter_window_datasets`; for other
        datasets the livetime of the exposure map is used if any.

    Returns
    -------
    livetime : `~astropy.units.Quantity`
        Livetime in s.

    Raises
    ------
    ValueError
        If the dataset carries no livetime information.
    """
    table = dataset.meta_table
    if table is not None and "LIVETIME" in table.colnames:
        # units are lost when gammapy stacks meta tables: the column is in s
        return np.sum(np.asarray(table["LIVETIME"], dtype=float)) * u.s
    exposure = getattr(dataset, "exposure", None)
    if exposure is not None and "livetime" in exposure.meta:
        return u.Quantity(exposure.meta["livetime"], u.s)
    raise ValueError(f"dataset {dataset.name!r} carries no livetime information.")


def _windows_relative(gti_start, gti_stop, duration, step):
    """(start, stop) pairs in s, fully inside one GTI interval each."""
    for g0, g1 in zip(gti_start, gti_stop):
        n = int(np.floor((g1 - g0 - duration + _TIME_EPS_S) / step)) + 1
        for k in range(max(n, 0)):
            t0 = g0 + k * step
            yield t0, t0 + duration


def _window_args(duration, step):
    duration = to_quantity(duration, u.s, "duration", positive=True)
    step = to_quantity(step, u.s, "step", positive=True)
    return duration.to_value("s"), step.to_value("s")


def sliding_windows(observation, duration=100 * u.s, step=50 * u.s):
    """Sliding time windows over the GTIs of an observation.

    Windows start at each GTI start and advance by ``step``; only windows fully
    inside one GTI interval are produced (a last partial window is dropped).

    Parameters
    ----------
    observation : `~gammapy.data.Observation`
        Observation with a GTI.
    duration : `~astropy.units.Quantity`, optional
        Window length (time unit, > 0). Default is 100 s.
    step : `~astropy.units.Quantity`, optional
        Offset between consecutive window starts (time unit, > 0); ``step <
        duration`` gives overlapping windows. Default is 50 s.

    Returns
    -------
    windows : generator of (`~astropy.time.Time`, `~astropy.time.Time`)
        ``(t_start, t_stop)`` of each window, in time order.

    Raises
    ------
    ValueError
        On bad input (checked when called, not when iterated).
    """
    if not isinstance(observation, Observation):
        raise ValueError(
            f"observation must be a gammapy Observation, got {type(observation).__name__}."
        )
    duration_s, step_s = _window_args(duration, step)
    gti = observation.gti
    if gti is None or len(gti.table) == 0:
        raise ValueError(f"observation {observation.obs_id} has no GTI.")
    ref = gti.time_start[0]
    starts = np.atleast_1d((gti.time_start - ref).to_value("s"))
    stops = np.atleast_1d((gti.time_stop - ref).to_value("s"))

    def generate():
        for t0, t1 in _windows_relative(starts, stops, duration_s, step_s):
            yield ref + t0 * u.s, ref + t1 * u.s

    return generate()


def iter_window_datasets(
    observations, duration=100 * u.s, step=50 * u.s, geom=None, name_prefix=None, **cuts
):
    """Counts-only datasets of sliding time windows, for real-time style analysis.

    Each observation's event list is read once; every window then costs a
    boolean selection and a histogram. Observations are processed in time
    order, each with the windows of `sliding_windows`.

    Parameters
    ----------
    observations : `~gammapy.data.Observation`, `~gammapy.data.Observations` or list
        Observation(s) to slide over.
    duration : `~astropy.units.Quantity`, optional
        Window length (time unit). Default is 100 s.
    step : `~astropy.units.Quantity`, optional
        Offset between window starts (time unit). Default is 50 s.
    geom : `~gammapy.maps.WcsGeom`, optional
        Counts geometry. Default is `counts_geom` centred on each observation's
        pointing.
    name_prefix : str, optional
        Datasets are named ``"{name_prefix}{obs_id}_{t0:.0f}s"`` with ``t0``
        the window start relative to the observation start. Default is ``""``.
    **cuts
        ``energy_min``, ``energy_max``, ``offset_max``, as in `counts_dataset`.

    Yields
    ------
    t_start, t_stop : `~astropy.time.Time`
        Window bounds.
    dataset : `~gammapy.datasets.MapDataset`
        Counts-only dataset of the window (see `counts_dataset`).

    Raises
    ------
    ValueError
        On bad input (checked when called, not when iterated).
    """
    allowed = {"energy_min", "energy_max", "offset_max"}
    unknown = set(cuts) - allowed
    if unknown:
        raise ValueError(
            f"unknown keyword(s) {sorted(unknown)}; allowed cuts are {sorted(allowed)}."
        )
    obs_list = _observation_list(observations)
    energy_min, energy_max = _energy_range(cuts.get("energy_min"), cuts.get("energy_max"))
    offset_max = _offset_max(cuts.get("offset_max", 2.5 * u.deg))
    duration_s, step_s = _window_args(duration, step)
    if geom is not None:
        _check_geom(geom)
    prefix = "" if name_prefix is None else str(name_prefix)
    obs_list = sorted(obs_list, key=lambda obs: obs.tstart.mjd)

    def generate():
        for obs in obs_list:
            cached = _ObservationEvents(obs)
            obs_geom = _default_geom(obs) if geom is None else geom
            for t0, t1 in _windows_relative(
                cached.gti_start, cached.gti_stop, duration_s, step_s
            ):
                dataset = _build_dataset(
                    [cached],
                    obs_geom,
                    t0,
                    t1,
                    energy_min,
                    energy_max,
                    offset_max,
                    name=f"{prefix}{cached.obs_id}_{t0:.0f}s",
                )
                yield cached.time_ref + t0 * u.s, cached.time_ref + t1 * u.s, dataset

    return generate()
