"""`Monitor`: the real-time monitor of one observation, fed events as they arrive.

Every timescale (10 s to 1000 s and the cumulative exposure by default) has
its own windows, back to back from the observation's start; each window that
the new events close goes through the `~gammapy_cnn.CNNSourceFinder`. Its
candidates are associated into `Track` s (one per source on the sky, with a
stable id, a refined position and a light curve), and `Alert` s are raised for
new sources and for flares of known ones.
"""

import itertools
import logging
import time
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table, vstack
from astropy.time import Time
from gammapy.data import EventList
from gammapy.datasets import MapDataset
from gammapy.maps import Map, MapAxis
from gammapy.stats import WStatCountsStatistic
from scipy.stats import norm

from ..candidates import EXTENDED_TS
from ..data import counts_geom, event_pixels
from ..finders import POSITIONS_PER_FIELD
from ..utils import ENERGY_RANGE, to_quantity
from .flux import ExcessToFlux, effective_area, safe_energy_threshold

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_TIMESCALES", "LIGHT_CURVE_COLUMNS", "Alert", "Monitor", "Track", "alert_significance"]

#: Window lengths of the monitor (s); ``None`` is the cumulative exposure.
DEFAULT_TIMESCALES = (*([10, 30, 100, 300, 1000] * u.s), None)
#: The cumulative window is looked at this often (s).
CUMULATIVE_EVERY = 100.0
#: Chance alerts per hour the default alert threshold allows (`alert_significance`).
DEFAULT_ALERT_FALSE_RATE = 0.1 / u.h


def _windows_per_hour(timescales):
    """Windows looked at per hour of data over ``timescales`` (``None``: the cumulative window)."""
    return sum(3600.0 / (CUMULATIVE_EVERY if t is None else u.Quantity(t, "s").to_value("s"))
               for t in timescales)


def alert_significance(alert_false_rate=DEFAULT_ALERT_FALSE_RATE, timescales=DEFAULT_TIMESCALES):
    """The significance at which chance alerts come at ``alert_false_rate``.

    A one-sided Gaussian tail times the trials of an hour: `POSITIONS_PER_FIELD`
    positions in each window of every timescale (``None``: the cumulative
    window, looked at every `CUMULATIVE_EVERY` s). 5.26 for the defaults.
    """
    trials = POSITIONS_PER_FIELD * _windows_per_hour(timescales)
    tail = u.Quantity(alert_false_rate, "1/h").to_value("1/h") / trials
    return float(norm.isf(tail))


#: An alert needs this many excess counts: below, a window's local fit is far from Gaussian
#: (a 10 s window of a H.E.S.S. Crab run gave a "6.2 sigma" 0.55 deg wide fit to 18 of its 38 events).
MIN_ALERT_EXCESS = 10.0
#: Flares are judged on windows of at least this many seconds: in 10 s windows a bright source's
#: free-width fit scatters too much for a rate comparison (the steady 4 Crab of H.E.S.S. PKS
#: 2155-304 run 33793 raised a "flare" on a 10 s window at 2.2 times its level).
MIN_FLARE_TIMESCALE = 30.0
#: A flare ends (its track can flare again) only in a window of at least this many seconds, and
#: three times the flaring one, that starts after it with the rate back halfway down.
REARM_TIMESCALE = 100.0
#: Aperture and background ring (radii) of the check an alert must pass.
ALERT_APERTURE = 0.1 * u.deg
ALERT_RING = (0.5, 0.8) * u.deg


#: Columns of a track's light curve: timescale [s] (NaN: cumulative), window start and stop
#: (MJD TT), the candidate's excess counts, significance, integral flux above the maps'
#: energy threshold [cm-2 s-1] and in Crab units (NaN without an effective area:
#: counts only), position and error [deg].
LIGHT_CURVE_COLUMNS = ["timescale", "t_start", "t_stop", "excess", "significance", "flux", "flux_crab",
                       "ra", "dec", "pos_err_68"]


@dataclass
class Track:
    """One source followed across windows and timescales.

    ``light_curve`` has one row (a dict of `LIGHT_CURVE_COLUMNS`) per window
    in which the finder saw it.
    """

    track_id: int
    ra: float
    dec: float
    pos_err_68: float
    first_time: float
    known_name: str = ""
    light_curve: list = field(default_factory=list)
    #: end (MJD TT) and timescale (s) of the window that raised the last flare alert, while the flare lasts
    flare_end: float | None = None
    flare_timescale: float = np.nan

    @property
    def known(self):
        """Whether the track matches a source of the monitor's catalogue."""
        return bool(self.known_name)

    @property
    def position(self):
        return SkyCoord(self.ra, self.dec, unit="deg")

    def add(self, row):
        """Add a detection; the position becomes the inverse-variance mean of all of them."""
        self.light_curve.append(row)
        w_old, w_new = 1 / max(self.pos_err_68, 1e-4) ** 2, 1 / max(row["pos_err_68"], 1e-4) ** 2
        old, new = self.position.cartesian, SkyCoord(row["ra"], row["dec"], unit="deg").cartesian
        mean = SkyCoord((old * w_old + new * w_new) / (w_old + w_new))
        self.ra, self.dec = float(mean.ra.deg), float(mean.dec.deg)
        self.pos_err_68 = float(1 / np.sqrt(w_old + w_new))

    def rate(self, before):
        """The track's rate before time ``before`` (MJD TT): the median excess rate (counts/s) of
        its detections in windows that ended by then, on the longest timescale among them (NaN if none).

        A flare is measured against it: only data before the window, so that a source that
        is fading (an afterglow) is not compared with its own later, fainter windows.
        """
        rows = [r for r in self.light_curve if r["t_stop"] <= before + 1e-9 and np.isfinite(r["timescale"])]
        if not rows:
            return np.nan
        longest = max(r["timescale"] for r in rows)
        return float(np.median([r["excess"] / ((r["t_stop"] - r["t_start"]) * 86400)
                                for r in rows if r["timescale"] == longest]))


@dataclass
class Alert:
    """What an alert packet says (`gammapy_cnn.realtime.alerts` writes it)."""

    alert_id: str
    track_id: int
    kind: str  # "new" or "flare"
    ra: float
    dec: float
    pos_err_68: float
    timescale: float
    significance: float
    excess: float
    flux: float  # cm-2 s-1 above the energy threshold; NaN without an effective area
    flux_crab: float
    false_alarm_rate: float  # per hour, all timescales and windows
    time: float  # end of the triggering data, MJD TT
    latency: float  # s, wall clock from having the data to the alert
    known_name: str = ""


class Monitor:
    """The real-time monitor of one observation: feed it events, get tracks and alerts.

    Parameters
    ----------
    pointing : `~astropy.coordinates.SkyCoord`
        The observation's pointing; the maps are 5 x 5 deg around it.
    tstart : `~astropy.time.Time`
        Start of the observation (the windows are back to back from it).
    finder : `~gammapy_cnn.CNNSourceFinder`
        The finder run on every window.
    timescales : sequence of `~astropy.units.Quantity` or None
        Window lengths; ``None`` is the cumulative exposure, looked at every
        `CUMULATIVE_EVERY` seconds. Default `DEFAULT_TIMESCALES`.
    energy_axis : `~gammapy.maps.MapAxis`, optional
        Reconstructed energy axis of the maps (default: `~gammapy_cnn.data.counts_geom`'s).
    catalog : `~astropy.table.Table` or `~gammapy.catalog.SourceCatalog`, optional
        Known sources (``RA``/``DEC`` columns, or a catalogue's ``positions``);
        a track within ``association_radius`` of one is known, and alerts only
        on flares.
    association_radius : `~astropy.coordinates.Angle`
        Candidates this close to a track are that source, and so are those
        within twice the combined ``pos_err_68`` of both. Default 0.2 deg.
    alert_false_rate : `~astropy.units.Quantity`
        A new source is alerted when its false-alarm rate (per hour, over all
        timescales, windows and positions) is below this. Default 0.1 / h.
    flare_factor : float
        A known track flares when a window's excess rate is this many times
        its rate before the window (`Track.rate`), significantly. Default 2.
    offset_max : `~astropy.coordinates.Angle`
        Pixels beyond this from the pointing are masked. Default 2.5 deg.
    to_flux : `~gammapy_cnn.realtime.ExcessToFlux`, optional
        Converts excess counts into integral fluxes (e.g.
        ``ExcessToFlux.from_observation``). Without it (no IRF) light curves
        and alerts hold counts only, their flux columns NaN.
    gti : `~gammapy.data.GTI`, optional
        The observation's good time intervals: a window's livetime is its
        overlap with them (fluxes), and a window wholly in a gap is not
        looked at. Default: the data are continuous.
    alert_writer : callable, optional
        Called with each `Alert` as it is raised (e.g.
        `gammapy_cnn.realtime.alerts.AlertWriter`).
    name : str
        Prefix of the alert ids (``{name}-1``, ``{name}-2``...), e.g. the run's id.
    """

    def __init__(self, pointing, tstart, finder, timescales=DEFAULT_TIMESCALES, energy_axis=None, catalog=None,
                 association_radius=0.2 * u.deg, alert_false_rate=DEFAULT_ALERT_FALSE_RATE, flare_factor=2.0,
                 offset_max=2.5 * u.deg, to_flux=None, gti=None, alert_writer=None, name="monitor"):
        if not isinstance(pointing, SkyCoord) or not pointing.isscalar:
            raise ValueError(f"pointing must be a scalar SkyCoord, got {pointing!r}")
        self.pointing = pointing.icrs
        self.tstart = Time(tstart)
        self.finder = finder
        lengths = [None if t is None else
                   to_quantity(t, "s", "timescale", positive=True, bare_numbers=True).to_value("s")
                   for t in timescales]
        if not lengths:
            raise ValueError("at least one timescale is needed")
        self.timescales = tuple(sorted(lengths, key=lambda t: np.inf if t is None else t))
        self.geom = counts_geom(self.pointing, energy_axis=energy_axis)
        self.catalog = _catalog_positions(catalog)
        self.association_radius = to_quantity(association_radius, "deg", "association_radius", positive=True)
        self.alert_false_rate = to_quantity(alert_false_rate, "1/h", "alert_false_rate", positive=True)
        self.flare_factor = float(flare_factor)
        offset = self.geom.to_image().separation(self.pointing)
        self._safe_image = offset < to_quantity(offset_max, "deg", "offset_max", positive=True)
        self.to_flux = to_flux
        self.alert_writer = alert_writer
        self.tracks, self.alerts, self.windows = [], [], []
        self.name = str(name)
        # each event is binned once, on arrival: its time (s) and pixel, one array per chunk
        self._times, self._pixels = [], []
        self._last, self._alerted = 0.0, set()
        #: events that arrived after data later than them (kept, logged)
        self.late_events = 0
        self._gti = None if gti is None else np.column_stack(
            [(Time(gti.time_start) - self.tstart).to_value("s"), (Time(gti.time_stop) - self.tstart).to_value("s")])
        self._alert_numbers = itertools.count(1)
        self._next = {t: (CUMULATIVE_EVERY if t is None else t) for t in self.timescales}

    @classmethod
    def from_observation(cls, observation, finder, **kwargs):
        """The monitor of a DL3 run: its pointing, start, good time intervals and id (``name``);
        with an effective area, maps from the run's safe energy threshold (where the area reaches
        10% of its maximum; unless ``energy_axis`` is given) and fluxes
        (`ExcessToFlux.from_observation`). ``kwargs`` go to `Monitor`."""
        kwargs.setdefault("name", str(observation.obs_id))
        kwargs.setdefault("gti", observation.gti)
        pointing = observation.get_pointing_icrs(observation.tmid)
        aeff = effective_area(observation)
        if aeff is not None and kwargs.get("energy_axis") is None:
            # maps from the run's safe threshold, as a likelihood analysis of the run would use
            threshold = safe_energy_threshold(aeff)
            decades = np.log10(ENERGY_RANGE[1].to_value("TeV") / threshold.to_value("TeV"))
            kwargs["energy_axis"] = MapAxis.from_energy_bounds(threshold, ENERGY_RANGE[1],
                                                               nbin=max(int(round(3 * decades)), 2), name="energy")
        if kwargs.get("to_flux") is None:
            axis = counts_geom(pointing, energy_axis=kwargs.get("energy_axis")).axes["energy"]
            kwargs["to_flux"] = ExcessToFlux.from_observation(observation, axis)
        return cls(pointing, observation.tstart, finder, **kwargs)

    @property
    def windows_per_hour(self):
        """Windows looked at per hour of data, over all timescales."""
        return _windows_per_hour(self.timescales)

    def false_alarm_rate(self, significance):
        """Chance alerts per hour at or above ``significance`` (one-sided Gaussian tail, all trials)."""
        return float(norm.sf(significance) * POSITIONS_PER_FIELD * self.windows_per_hour)

    def feed(self, events, until=None, now=None):
        """Take a chunk of events; look at every window it closes. Returns the new alerts.

        Parameters
        ----------
        events : `~gammapy.data.EventList` or `~astropy.table.Table`
            Events with ``TIME`` (s since the reference time in the table's
            ``MJDREFI``/``MJDREFF``, as in DL3), ``RA``, ``DEC`` and
            ``ENERGY``; in time order across calls.
        until : `~astropy.time.Time`, optional
            The data are complete up to this time (a chunk may hold no event).
            Default: the last event's time.
        now : float, optional
            Wall-clock time (``time.time()``) at which the chunk was had;
            latencies count from it. Default: when ``feed`` is called.
        """
        received = time.time() if now is None else now
        table = events.table if isinstance(events, EventList) else Table(events)
        missing = {"TIME", "RA", "DEC", "ENERGY"} - set(table.colnames)
        if missing:
            raise ValueError(f"events lack the column(s) {sorted(missing)}")
        if not isinstance(table["TIME"], Time):  # DL3 style: seconds since MJDREFI + MJDREFF
            table = _with_time_column(table)
        chunk = EventList(table)
        seconds = (chunk.time - self.tstart).to_value("s")
        late = int(np.sum(seconds < self._last - 1e-6)) if self._times else 0
        if late:
            # kept: the windows still open (longer timescales, the cumulative one) count them;
            # those already looked at are not looked at again
            self.late_events += late
            log.warning("%d event(s) arrived out of time order (up to %.3f s before the data so far); kept "
                        "for the windows still open", late, self._last - float(seconds.min()))
        self._append(chunk, seconds)
        if until is not None:
            self._last = max(self._last, float((Time(until) - self.tstart).to_value("s")))
        return self._look(self._last, received)

    def finish(self, tstop=None, now=None):
        """The end of the observation: look at the windows it closes (partial ones are dropped,
        the cumulative one is looked at once more). Returns the new alerts."""
        received = time.time() if now is None else now
        end = self._last if tstop is None else (Time(tstop) - self.tstart).to_value("s")
        alerts = self._look(end, received)
        if None in self.timescales and end > 0:
            alerts += self._process([(None, 0.0, end)], received)
        return alerts

    def _append(self, chunk, seconds):
        if len(seconds):
            self._times.append(np.asarray(seconds, float))
            self._pixels.append(event_pixels(self.geom, chunk.radec, chunk.energy))
            self._last = max(self._last, float(seconds.max()))

    def _events(self):
        """Times (s) and pixels of all events so far (the chunks joined once per call, not per window)."""
        if len(self._times) > 1:
            self._times, self._pixels = [np.concatenate(self._times)], [np.concatenate(self._pixels)]
        if not self._times:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        return self._times[0], self._pixels[0]

    def _look(self, end, received):
        due = []
        for t in self.timescales:
            while self._next[t] <= end + 1e-6:  # until= in Time arithmetic may fall a hair short
                stop = self._next[t]
                due.append((t, 0.0 if t is None else stop - t, stop))
                self._next[t] += CUMULATIVE_EVERY if t is None else t
        return self._process(due, received) if due else []

    def _dataset(self, events, start, stop, name):
        times, pixels = events
        pick = (times >= start) & (times < stop) & (pixels >= 0)
        size = int(np.prod(self.geom.data_shape))
        counts = np.bincount(pixels[pick], minlength=size).reshape(self.geom.data_shape).astype(float)
        safe = np.broadcast_to(self._safe_image, self.geom.data_shape).copy()
        dataset = MapDataset(counts=Map.from_geom(self.geom, data=counts),
                             mask_safe=Map.from_geom(self.geom, data=safe), name=name)
        dataset.meta_table = Table({"RA_PNT": [self.pointing.ra.deg] * u.deg,
                                    "DEC_PNT": [self.pointing.dec.deg] * u.deg})
        return dataset

    def _process(self, due, received):
        """The windows that fall due together: their maps go through the finder in one batched call."""
        alerts, events = [], self._events()
        due = [(t, start, stop, self._livetime(start, stop)) for t, start, stop in due]
        due = [window for window in due if window[3] > 1e-3]  # a window wholly in a GTI gap is not looked at
        if not due:
            return alerts
        began = time.perf_counter()
        datasets = [self._dataset(events, start, stop, name=f"{'cumulative' if t is None else f'{t:g}s'}_{stop:.0f}")
                    for t, start, stop, _ in due]
        tables = self.finder.run_many(datasets)
        seconds = (time.perf_counter() - began) / len(due)
        for (timescale, start, stop, livetime), dataset, table in zip(due, datasets, tables):
            t_start, t_stop = ((self.tstart + [start, stop] * u.s).tt.mjd)
            self.windows.append({"timescale": np.nan if timescale is None else timescale, "t_start": t_start,
                                 "t_stop": t_stop, "n_candidates": len(table),
                                 "n_counts": float(dataset.counts.data.sum()), "seconds": seconds})
            for candidate in table:
                alert = self._associate(candidate, dataset.counts, timescale, t_start, t_stop, livetime, received)
                if alert is not None:
                    alerts.append(alert)
        for alert in alerts:
            self.alerts.append(alert)
            if self.alert_writer is not None:
                self.alert_writer(alert)
        return alerts

    def _livetime(self, start, stop):
        """Seconds of good time between ``start`` and ``stop`` (s from the start)."""
        if self._gti is None:
            return stop - start
        return float(np.sum(np.clip(np.minimum(self._gti[:, 1], stop) - np.maximum(self._gti[:, 0], start), 0, None)))

    def _associate(self, candidate, counts, timescale, t_start, t_stop, livetime, received):
        position = SkyCoord(candidate["RA"], candidate["DEC"], unit="deg")
        row = {"timescale": np.nan if timescale is None else timescale, "t_start": t_start, "t_stop": t_stop,
               "excess": float(candidate["excess"]), "significance": float(candidate["significance"]),
               "flux": np.nan, "flux_crab": np.nan, "ra": float(position.ra.deg), "dec": float(position.dec.deg),
               "pos_err_68": float(candidate["pos_err_68"])}
        on, off, alpha = self._aperture(counts, position)
        if self.to_flux is not None:
            # the excess shared over energy like the aperture's (the Crab's when it holds too few counts)
            per_energy = np.clip(on - alpha * off, 0, None)
            shares = per_energy / per_energy.sum() if per_energy.sum() >= MIN_ALERT_EXCESS else None
            flux, crab = self.to_flux(row["excess"], position.separation(self.pointing), livetime, shares)
            row.update(flux=float(flux), flux_crab=float(crab))
        # only point-like candidates the network itself scores above its threshold, with enough
        # counts, can alert: the finder's rescue rule also keeps lower scores (fine for a catalogue),
        # and in short windows an "extended" fit is one gone wide over background fluctuations
        # (H.E.S.S. Crab run 23526, 100 s: 68 "excess" counts where 31 events lie within 0.3 deg)
        alerting = candidate["score"] >= self.finder.threshold and row["excess"] >= MIN_ALERT_EXCESS \
            and candidate["ts_ext"] < EXTENDED_TS and row["significance"] >= self._alert_significance()
        if alerting:
            # the fit's significance is inflated at a few counts (its width is free): an alert must
            # also stand out in a fixed aperture over a ring of the same counts map
            statistic = WStatCountsStatistic(n_on=on.sum(), n_off=off.sum(), alpha=alpha)
            row["significance"] = min(row["significance"], float(statistic.sqrt_ts) if alpha > 0 else 0.0)
            alerting = row["significance"] >= self._alert_significance()
        track = self._nearest_track(position, row["pos_err_68"])
        if track is None:
            track = Track(len(self.tracks) + 1, row["ra"], row["dec"], row["pos_err_68"], t_stop,
                          known_name=self._known_name(position))
            self.tracks.append(track)
            track.light_curve.append(row)
        else:
            reference = track.rate(before=t_start)
            track.add(row)
            if track.known or track.track_id in self._alerted:
                return self._flare(track, row, reference, alerting, received)
        if alerting and not track.known:
            self._alerted.add(track.track_id)
            return self._alert(track, row, "new", received)
        return None

    def _aperture(self, counts, position):
        """Counts per energy bin within `ALERT_APERTURE` of ``position`` (ON) and in the `ALERT_RING`
        annulus (OFF), and their area ratio alpha (0 when either is empty)."""
        separation = counts.geom.to_image().separation(position).to_value("deg")
        safe = self._safe_image
        inner, outer = ALERT_RING.to_value("deg")
        on_pixels = (separation < ALERT_APERTURE.to_value("deg")) & safe
        off_pixels = (separation >= inner) & (separation < outer) & safe
        data = counts.data.reshape((-1,) + separation.shape)
        alpha = on_pixels.sum() / off_pixels.sum() if on_pixels.any() and off_pixels.any() else 0.0
        return data[:, on_pixels].sum(axis=1), data[:, off_pixels].sum(axis=1), alpha

    def _flare(self, track, row, reference, alerting, received):
        """A flare alert when the window's rate exceeds ``flare_factor`` times the reference rate,
        significantly (the excess above the reference over its error, at the alert significance)."""
        duration = (row["t_stop"] - row["t_start"]) * 86400
        error = row["excess"] / max(row["significance"], 1e-3)
        above = (row["excess"] - reference * duration) / error if np.isfinite(reference) else 0.0
        ratio = row["excess"] / (reference * duration) if reference > 0 else np.inf
        if track.flare_end is None:
            if alerting and ratio >= self.flare_factor and above >= self._alert_significance() \
                    and not row["timescale"] < MIN_FLARE_TIMESCALE:
                track.flare_end, track.flare_timescale = row["t_stop"], row["timescale"]
                return self._alert(track, row, "flare", received)
        elif (ratio < (1 + self.flare_factor) / 2 and row["t_start"] >= track.flare_end - 1e-9
              and row["timescale"] >= max(3 * track.flare_timescale, REARM_TIMESCALE)):
            # re-armed by a longer window after the flaring one whose rate is back halfway down
            # (hysteresis: a flickering source does not alert at every crossing)
            track.flare_end, track.flare_timescale = None, np.nan
        return None

    def _alert_significance(self):
        """The significance at which the false-alarm rate per hour is ``alert_false_rate``."""
        return alert_significance(self.alert_false_rate, self.timescales)

    def _alert(self, track, row, kind, received):
        return Alert(
            alert_id=f"{self.name}-{next(self._alert_numbers)}", track_id=track.track_id, kind=kind,
            ra=row["ra"], dec=row["dec"], pos_err_68=row["pos_err_68"],
            timescale=row["timescale"], significance=row["significance"], excess=row["excess"],
            flux=row["flux"], flux_crab=row["flux_crab"],
            false_alarm_rate=self.false_alarm_rate(row["significance"]), time=row["t_stop"],
            latency=time.time() - received, known_name=track.known_name,
        )

    def _nearest_track(self, position, pos_err_68):
        """The track this candidate is: the nearest within ``association_radius`` or, for uncertain
        positions, within twice their combined 68% errors (~3 sigma)."""
        if not self.tracks:
            return None
        separation = position.separation(SkyCoord([t.position for t in self.tracks])).deg
        errors = np.array([t.pos_err_68 for t in self.tracks])
        reach = np.maximum(self.association_radius.to_value("deg"), 2 * np.hypot(errors, pos_err_68))
        best = int(np.argmin(separation / reach))
        return self.tracks[best] if separation[best] < reach[best] else None

    def _known_name(self, position):
        if self.catalog is None:
            return ""
        positions, names = self.catalog
        separation = position.separation(positions)
        best = int(np.argmin(separation))
        return str(names[best]) if separation[best] < self.association_radius else ""

    def tracks_table(self):
        """One row per track: id, position, error, first detection, known name, detections, best significance."""
        rows = [{"TRACK_ID": t.track_id, "RA": t.ra, "DEC": t.dec, "POS_ERR_68": t.pos_err_68,
                 "FIRST_TIME": t.first_time, "KNOWN": t.known, "KNOWN_NAME": t.known_name,
                 "N_DETECTIONS": len(t.light_curve),
                 "MAX_SIGNIFICANCE": max(r["significance"] for r in t.light_curve)} for t in self.tracks]
        names = ["TRACK_ID", "RA", "DEC", "POS_ERR_68", "FIRST_TIME", "KNOWN", "KNOWN_NAME", "N_DETECTIONS",
                 "MAX_SIGNIFICANCE"]
        table = Table(rows=rows, names=names) if rows else Table(names=names, dtype=[int, float, float, float,
                                                                                        float, bool, str, int, float])
        for name, unit in (("RA", "deg"), ("DEC", "deg"), ("POS_ERR_68", "deg")):
            table[name].unit = unit
        return table

    def light_curves(self, alerted_or_known=True):
        """Light curves of several tracks in one table (a ``TRACK_ID`` column first): by default
        those that raised an alert or match a known source, else all."""
        chosen = [t.track_id for t in self.tracks
                  if not alerted_or_known or t.known or t.track_id in self._alerted]
        tables = [self.light_curve(track_id) for track_id in chosen]
        for table, track_id in zip(tables, chosen):
            table.add_column(track_id, name="TRACK_ID", index=0)
        if not tables:
            return Table(names=["TRACK_ID"] + LIGHT_CURVE_COLUMNS, dtype=[int] + [float] * len(LIGHT_CURVE_COLUMNS))
        return vstack(tables)

    def light_curve(self, track_id):
        """The track's light curve: one row per window in which it was found (`LIGHT_CURVE_COLUMNS`)."""
        (track,) = [t for t in self.tracks if t.track_id == track_id]
        table = Table(rows=track.light_curve, names=LIGHT_CURVE_COLUMNS)
        for name, unit in (("timescale", "s"), ("flux", "cm-2 s-1"), ("ra", "deg"), ("dec", "deg"),
                           ("pos_err_68", "deg")):
            table[name].unit = unit
        return table


def _with_time_column(table):
    """A copy of an events table whose ``TIME`` (s since the header's reference) is an `~astropy.time.Time`."""
    from gammapy.utils.time import time_ref_from_dict

    if "MJDREFI" not in table.meta and "MJDREF" not in table.meta:
        raise ValueError("events with TIME in seconds need the reference time in the table's meta "
                         "(MJDREFI and MJDREFF, and TIMESYS, as in DL3), or a TIME column of astropy Time")
    table = table.copy(copy_data=False)
    seconds = u.Quantity(table["TIME"], "s") if table["TIME"].unit is None else u.Quantity(table["TIME"])
    table["TIME"] = time_ref_from_dict(table.meta, scale=str(table.meta.get("TIMESYS", "tt")).lower()) + seconds
    return table


def _catalog_positions(catalog):
    """(SkyCoord, names) of a catalogue of known sources, or None."""
    if catalog is None:
        return None
    if hasattr(catalog, "positions"):  # a gammapy SourceCatalog
        names = catalog.table[catalog._source_name_key] if hasattr(catalog, "_source_name_key") else \
            np.arange(len(catalog.table)).astype(str)
        return catalog.positions.icrs, np.asarray(names).astype(str)
    table = Table(catalog)
    columns = {c.upper(): c for c in table.colnames}
    if "RA" not in columns or "DEC" not in columns:
        raise ValueError(f"the catalogue of known sources needs RA and DEC columns, has {table.colnames}")
    positions = SkyCoord(table[columns["RA"]], table[columns["DEC"]], unit="deg")
    name_column = next((columns[c] for c in ("SOURCE_NAME", "NAME") if c in columns), None)
    names = table[name_column] if name_column else [f"known {i + 1}" for i in range(len(table))]
    return positions, np.asarray(names).astype(str)
