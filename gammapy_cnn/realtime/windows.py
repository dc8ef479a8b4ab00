"""Real-time style source finding: `CNNSourceFinder` over sliding time windows of DL3 runs.

A real-time analysis receives the events of a run as it goes and must say,
window after window, which sources are in the field. `find_in_windows` does
this on recorded runs: each run's event list is read once, every window is
binned into a counts-only dataset (`gammapy_cnn.data.iter_window_datasets`)
and handed to a `~gammapy_cnn.CNNSourceFinder`; the candidates of every
window come out as soon as they are found, with the time it took.

Latency
-------
The latency of a window is the wall-clock time of getting its dataset (the
first window of each run includes reading the run's event list; later ones
only select and histogram events) plus the time of the finder on it. Loading
the networks and TensorFlow's first trace are excluded: by default the finder
is run once, untimed, on the first dataset (``warm_up=True``), as a real-time
service would do at start-up.

Outputs
-------
`RealtimeResult.write` writes, atomically, ``{prefix}.ecsv`` (one row per
candidate and window: the finder's columns plus the window columns of
`WINDOW_COLUMNS`), ``{prefix}_windows.ecsv`` (one row per window, with its
number of candidates and latency, so empty windows are recorded too) and
``{prefix}.reg`` (DS9 circles of radius ``pos_err_68``, labelled with the
candidate name, run and window).
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table, vstack
from astropy.time import Time
from gammapy.datasets import MapDataset
from gammapy.maps import Map, MapAxis

from .data import (
    _observation_list,
    _quantity,
    counts_dataset,
    counts_geom,
    iter_window_datasets,
)
from .finders import COLUMNS, candidates_to_regions
from .utils import write_text_atomic

__all__ = [
    "WINDOW_COLUMNS",
    "RealtimeResult",
    "WindowResult",
    "empty_candidates_table",
    "find_in_windows",
    "parse_quantity",
    "run_windows",
    "safe_energy_min",
    "stacked_image_dataset",
]

#: Columns describing the time window, prepended to the finder's columns.
WINDOW_COLUMNS = {
    "OBS_ID": ("", "observation id (-1: several runs stacked, see meta 'obs_ids')"),
    "WINDOW": ("", "window index within the run (0-based)"),
    "TIME_START": ("", "window start (TT)"),
    "TIME_STOP": ("", "window stop (TT)"),
    "TSTART_REL": ("s", "window start relative to the run start"),
    "TSTOP_REL": ("s", "window stop relative to the run start"),
    "LIVETIME": ("s", "dead-time corrected livetime of the window"),
    "N_EVENTS": ("", "events in the window after the energy cut"),
    "LATENCY": ("s", "wall-clock time to read and bin the window and find its candidates"),
}
#: Extra per-window columns of the windows table.
_WINDOW_EXTRA = {
    "N_CANDIDATES": ("", "number of candidates found in the window"),
    "TIME_BIN": ("s", "wall-clock time to read and bin the window"),
    "TIME_FIND": ("s", "wall-clock time of the finder on the window"),
    "ENERGY_MIN": ("TeV", "lower energy cut"),
}
#: Default energy range of the counts maps when no cut is given.
DEFAULT_ENERGY_RANGE = (0.03 * u.TeV, 100 * u.TeV)


def parse_quantity(text, unit, name, positive=True):
    """Parse a quantity written as text, e.g. ``"100s"``, ``"1.5 min"`` or ``"0.3TeV"``.

    Parameters
    ----------
    text : str or `~astropy.units.Quantity`
        The value, with its unit.
    unit : str or `~astropy.units.Unit`
        Unit the value must be convertible to; the result is in this unit.
    name : str
        Name used in error messages (e.g. ``"--duration"``).
    positive : bool, optional
        Require a value > 0. Default is True.

    Returns
    -------
    quantity : `~astropy.units.Quantity`
        Scalar quantity in ``unit``.

    Raises
    ------
    ValueError
        If the text is not a number with a unit convertible to ``unit``, is
        not finite, or is not positive when required.
    """
    unit = u.Unit(unit)
    if isinstance(text, u.Quantity):
        value = text
    else:
        try:
            value = u.Quantity(str(text).strip())
        except (TypeError, ValueError):
            raise ValueError(
                f"{name}: cannot read {text!r} as a quantity; write a number and a unit, "
                f"e.g. '100s' or '1.5 min' for a time, '0.3TeV' for an energy."
            ) from None
        if value.unit == u.dimensionless_unscaled:
            raise ValueError(
                f"{name}: {text!r} has no unit; write it with a unit convertible to {unit}, "
                f"e.g. '{value.value:g}{unit.to_string()}'."
            )
    return _quantity(value, unit, name, positive=positive)


def safe_energy_min(observation):
    """Safe energy threshold of an observation, from its effective area.

    Parameters
    ----------
    observation : `~gammapy.data.Observation`
        Observation whose effective area header carries ``LO_THRES``
        (H.E.S.S. DL3 DR1 and other GADF data).

    Returns
    -------
    energy : `~astropy.units.Quantity`
        The threshold, in TeV.

    Raises
    ------
    ValueError
        If the observation has no effective area or no ``LO_THRES`` keyword.
    """
    try:
        aeff = observation.aeff
    except Exception as error:  # gammapy raises various errors for absent HDUs
        raise ValueError(
            f"observation {observation.obs_id}: no effective area to read the safe energy "
            f"threshold from ({error}); give the energy cut explicitly."
        ) from error
    value = None if aeff is None else aeff.meta.get("LO_THRES")
    if value is None:
        raise ValueError(
            f"observation {observation.obs_id}: its effective area has no LO_THRES keyword, "
            "so no safe energy threshold is known; give the energy cut explicitly."
        )
    return float(value) * u.TeV


@dataclass
class WindowResult:
    """Candidates of one time window (or of a whole run, or of stacked runs).

    Attributes
    ----------
    obs_id : int
        Observation id; -1 for several stacked runs (see ``obs_ids``).
    index : int
        Window index within the run (0 for a whole run).
    time_start, time_stop : `~astropy.time.Time`
        Window bounds.
    tstart_rel, tstop_rel : `~astropy.units.Quantity`
        Window bounds relative to the run start (s).
    livetime : `~astropy.units.Quantity`
        Dead-time corrected livetime (s).
    n_events : int
        Events in the window after the energy cut.
    energy_min : `~astropy.units.Quantity`
        Lower energy cut (TeV).
    candidates : `~astropy.table.Table`
        The finder's table (columns of `gammapy_cnn.finders.COLUMNS`).
    time_bin, time_find : `~astropy.units.Quantity`
        Wall-clock time to get the dataset and to run the finder (s).
    obs_ids : list of int
        Observations in the window.
    dataset : `~gammapy.datasets.MapDataset` or None
        The counts-only dataset, kept only when asked (``keep_datasets``).
    """

    obs_id: int
    index: int
    time_start: Time
    time_stop: Time
    tstart_rel: u.Quantity
    tstop_rel: u.Quantity
    livetime: u.Quantity
    n_events: int
    energy_min: u.Quantity
    candidates: Table
    time_bin: u.Quantity
    time_find: u.Quantity
    obs_ids: list = field(default_factory=list)
    dataset: MapDataset = None

    @property
    def latency(self):
        """Read + bin + find wall-clock time (s)."""
        return self.time_bin + self.time_find

    def window_row(self):
        """This window's values for the `WINDOW_COLUMNS` (a dict)."""
        return {
            "OBS_ID": self.obs_id,
            "WINDOW": self.index,
            "TIME_START": self.time_start,
            "TIME_STOP": self.time_stop,
            "TSTART_REL": self.tstart_rel.to_value("s"),
            "TSTOP_REL": self.tstop_rel.to_value("s"),
            "LIVETIME": self.livetime.to_value("s"),
            "N_EVENTS": self.n_events,
            "LATENCY": self.latency.to_value("s"),
        }

    def table(self):
        """Candidates with the window columns first (one row per candidate)."""
        n = len(self.candidates)
        table = Table()
        for name, value in self.window_row().items():
            if isinstance(value, Time):
                column = Time(np.repeat(value.mjd, n), format="mjd", scale=value.scale)
                column.format = "isot"
                table[name] = column
            else:
                table[name] = np.full(n, value)
        for name in self.candidates.colnames:
            table[name] = self.candidates[name]
        _describe(table)
        return table

    def describe(self):
        """One line: run, window, number of candidates and latency."""
        return (
            f"{_run_label(self)} window {self.index} "
            f"[{self.tstart_rel.to_value('s'):.0f}, {self.tstop_rel.to_value('s'):.0f}) s "
            f"livetime {self.livetime.to_value('s'):.0f} s, {self.n_events} events: "
            f"{len(self.candidates)} candidate(s); latency {self.latency.to_value('s'):.3f} s "
            f"(read+bin {self.time_bin.to_value('s'):.3f} s, find {self.time_find.to_value('s'):.3f} s)"
        )

    def candidate_lines(self):
        """One line per candidate: window, name, RA, DEC, score, significance, pos_err_68."""
        lines = []
        for row in self.candidates:
            lines.append(
                f"  {_run_label(self)} [{self.tstart_rel.to_value('s'):7.0f}, "
                f"{self.tstop_rel.to_value('s'):7.0f}) s  {row['Source_Name']:<18} "
                f"RA {row['RA']:9.4f}  DEC {row['DEC']:+9.4f}  score {row['score']:.3f}  "
                f"sig {row['significance']:6.1f}  pos_err_68 {row['pos_err_68']:.4f} deg"
            )
        return lines


def _run_label(window):
    if window.obs_id == -1:
        return f"stack of {len(window.obs_ids)} runs"
    return f"obs {window.obs_id}"


def _describe(table):
    for name, (unit, description) in {**WINDOW_COLUMNS, **_WINDOW_EXTRA}.items():
        if name in table.colnames:
            if unit and not isinstance(table[name], Time):
                table[name].unit = unit
            table[name].info.description = description


class RealtimeResult:
    """The windows of a real-time style run, and their candidates.

    Parameters
    ----------
    windows : list of `WindowResult`
        In processing order.
    meta : dict, optional
        Written into the output tables' meta (finder, cuts, ...).
    """

    def __init__(self, windows, meta=None):
        self.windows = list(windows)
        self.meta = dict(meta or {})

    def __len__(self):
        return len(self.windows)

    @property
    def latency(self):
        """Latency of every window (s)."""
        return u.Quantity([w.latency.to_value("s") for w in self.windows], u.s)

    @property
    def median_latency(self):
        """Median latency over the windows (s); NaN without windows."""
        if not self.windows:
            return np.nan * u.s
        return np.median(self.latency)

    @property
    def candidates(self):
        """All candidates, with the window columns first (`WINDOW_COLUMNS`)."""
        tables = [w.table() for w in self.windows if len(w.candidates)]
        if tables:
            table = vstack(tables, metadata_conflicts="silent")
        else:
            table = _empty_candidates()
        table.meta = self._table_meta()
        _describe(table)
        return table

    @property
    def windows_table(self):
        """One row per window: window columns, number of candidates, timings."""
        table = _empty_windows()
        for window in self.windows:
            row = window.window_row()
            row.update(
                N_CANDIDATES=len(window.candidates),
                TIME_BIN=window.time_bin.to_value("s"),
                TIME_FIND=window.time_find.to_value("s"),
                ENERGY_MIN=window.energy_min.to_value("TeV"),
            )
            table.add_row(row)
        table.meta = self._table_meta()
        _describe(table)
        return table

    def _table_meta(self):
        meta = {str(k): v for k, v in self.meta.items()}
        stacked = sorted({i for w in self.windows if w.obs_id == -1 for i in w.obs_ids})
        if stacked:
            meta["obs_ids"] = [int(i) for i in stacked]
        if self.windows:
            meta["median_latency_s"] = float(self.median_latency.to_value("s"))
        return meta

    def regions(self):
        """DS9-ready `~regions.Regions`: one circle per candidate, labelled with its window."""
        from regions import Regions

        out = []
        for window in self.windows:
            for region, row in zip(candidates_to_regions(window.candidates), window.candidates):
                region.meta["text"] = (
                    f"{row['Source_Name']} {_run_label(window)} "
                    f"{window.tstart_rel.to_value('s'):.0f}-{window.tstop_rel.to_value('s'):.0f}s"
                )
                out.append(region)
        return Regions(out)

    @staticmethod
    def output_paths(directory, prefix="candidates", overwrite=False):
        """Paths `write` would write, checked (call it before a long run to fail early).

        Returns
        -------
        paths : dict
            ``{"candidates": Path, "windows": Path, "regions": Path}``.

        Raises
        ------
        ValueError
            If ``directory`` is a file, or a file exists and ``overwrite`` is False.
        """
        directory = Path(directory).expanduser()
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"output {str(directory)!r} exists and is not a folder.")
        paths = {
            "candidates": directory / f"{prefix}.ecsv",
            "windows": directory / f"{prefix}_windows.ecsv",
            "regions": directory / f"{prefix}.reg",
        }
        if not overwrite:
            existing = [str(p) for p in paths.values() if p.exists()]
            if existing:
                raise ValueError(f"output files exist: {existing}; use overwrite=True.")
        return paths

    def write(self, directory, prefix="candidates", overwrite=False):
        """Write the candidates (ECSV), the windows (ECSV) and the regions (DS9), atomically.

        Parameters
        ----------
        directory : str or `~pathlib.Path`
            Output folder, created if needed.
        prefix : str, optional
            File name stem. Default is ``"candidates"``.
        overwrite : bool, optional
            Replace existing files. Default is False.

        Returns
        -------
        paths : dict
            ``{"candidates": Path, "windows": Path, "regions": Path}``.

        Raises
        ------
        ValueError
            If ``directory`` is a file, or a file exists and ``overwrite`` is False.
        """
        paths = self.output_paths(directory, prefix, overwrite)
        Path(directory).expanduser().mkdir(parents=True, exist_ok=True)
        write_text_atomic(paths["candidates"], _ecsv_text(self.candidates))
        write_text_atomic(paths["windows"], _ecsv_text(self.windows_table))
        text = self.regions().serialize(format="ds9") if any(
            len(w.candidates) for w in self.windows
        ) else "# Region file format: DS9 astropy/regions\n# no candidates\n"
        write_text_atomic(paths["regions"], text)
        return paths


def _empty_candidates():
    window = WindowResult(
        obs_id=0, index=0, time_start=Time(51544.0, format="mjd", scale="tt"),
        time_stop=Time(51544.0, format="mjd", scale="tt"), tstart_rel=0 * u.s,
        tstop_rel=0 * u.s, livetime=0 * u.s, n_events=0, energy_min=0 * u.TeV,
        candidates=empty_candidates_table(),
        time_bin=0 * u.s, time_find=0 * u.s,
    )
    return window.table()


def empty_candidates_table():
    """A finder table with no row: the columns, units and descriptions of ``COLUMNS``."""
    table = Table()
    for name, (unit, description) in COLUMNS.items():
        table[name] = np.zeros(0, dtype="U20" if name == "Source_Name" else float)
        table[name].unit = unit or None
        table[name].description = description
    return table


def _empty_windows():
    table = Table()
    for name in list(WINDOW_COLUMNS) + list(_WINDOW_EXTRA):
        if name in ("TIME_START", "TIME_STOP"):
            column = Time(np.zeros(0), format="mjd", scale="tt")
            column.format = "isot"
            table[name] = column
        elif name in ("OBS_ID", "WINDOW", "N_EVENTS", "N_CANDIDATES"):
            table[name] = np.zeros(0, dtype=np.int64)
        else:
            table[name] = np.zeros(0, dtype=float)
    return table


def _ecsv_text(table):
    import io

    buffer = io.StringIO()
    table.write(buffer, format="ascii.ecsv")
    return buffer.getvalue()


# --------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------
def _energy_cut(observation, energy_min):
    if isinstance(energy_min, str):
        if energy_min != "safe":
            raise ValueError(
                f"energy_min must be a Quantity, None or 'safe', got the string {energy_min!r}."
            )
        return safe_energy_min(observation)
    if callable(energy_min):
        return _quantity(energy_min(observation), u.TeV, "energy_min(observation)")
    return _quantity(energy_min, u.TeV, "energy_min", allow_none=True)


def _run_geom(center, energy_min, energy_max, width, binsz):
    """Counts geometry with one energy bin ``[energy_min, energy_max)``.

    The finder integrates over energy; one bin whose edges are the cuts keeps
    every selected event (a bin grid would drop those between the cut and the
    next bin edge from the safe mask).
    """
    lo = DEFAULT_ENERGY_RANGE[0] if energy_min is None else energy_min
    hi = DEFAULT_ENERGY_RANGE[1] if energy_max is None else energy_max
    if hi <= lo:
        raise ValueError(f"energy_max ({hi}) must be larger than energy_min ({lo}).")
    axis = MapAxis.from_energy_edges(u.Quantity([lo, hi]).to("TeV"), name="energy")
    return counts_geom(center, width=width, binsz=binsz, energy_axis=axis)


def _mean_pointing(observations):
    """Direction of the mean unit vector of the observations' pointings (ICRS)."""
    xyz = []
    for obs in observations:
        pointing = obs.get_pointing_icrs(obs.tmid)
        xyz.append(SkyCoord(pointing.ra, pointing.dec, frame="icrs").cartesian.xyz.value)
    x, y, z = np.mean(xyz, axis=0)
    ra = np.degrees(np.arctan2(y, x)) % 360
    dec = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return SkyCoord(ra, dec, unit="deg", frame="icrs")


def stacked_image_dataset(datasets, name=None):
    """Stack counts-only datasets of one sky geometry into one 2D counts image.

    Each dataset's counts are summed over its energy bins inside its own safe
    mask, so runs with different energy cuts (e.g. their own safe energy
    thresholds) can be stacked; the stacked safe mask is the OR of the images'.

    Parameters
    ----------
    datasets : list of `~gammapy.datasets.MapDataset`
        Counts-only datasets on the same spatial geometry.
    name : str, optional
        Name of the stacked dataset.

    Returns
    -------
    dataset : `~gammapy.datasets.MapDataset`
        2D counts-only dataset (``counts`` and ``mask_safe``).

    Raises
    ------
    ValueError
        If ``datasets`` is empty or the spatial geometries differ.
    """
    from .preprocessing import counts_image

    datasets = list(datasets)
    if not datasets:
        raise ValueError("datasets is empty: nothing to stack.")
    image_geom = datasets[0].counts.geom.to_image()
    counts = np.zeros(image_geom.data_shape)
    mask = np.zeros(image_geom.data_shape, dtype=bool)
    for dataset in datasets:
        if dataset.counts.geom.to_image() != image_geom:
            raise ValueError(
                f"dataset {dataset.name!r} has another spatial geometry than "
                f"{datasets[0].name!r}; stack datasets of one sky geometry only."
            )
        c, m = counts_image(dataset)
        counts += c
        mask |= m
    return MapDataset(
        counts=Map.from_geom(image_geom, data=counts.astype(np.float32)),
        mask_safe=Map.from_geom(image_geom, data=mask, dtype=bool),
        name=name,
    )


# --------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------
def find_in_windows(
    observations,
    finder,
    duration=None,
    step=None,
    *,
    stack=False,
    energy_min=None,
    energy_max=None,
    offset_max=2.5 * u.deg,
    width=5 * u.deg,
    binsz=0.025 * u.deg,
    warm_up=True,
    keep_datasets=False,
):
    """Run a source finder on sliding time windows of DL3 runs, window after window.

    Parameters
    ----------
    observations : `~gammapy.data.Observations` or list of `~gammapy.data.Observation`
        Runs with events, GTIs and pointing (see `gammapy_cnn.data.read_observations`).
    finder : `~gammapy_cnn.CNNSourceFinder` or callable
        Takes a counts-only `~gammapy.datasets.MapDataset` and returns a
        candidates table with the columns of `gammapy_cnn.finders.COLUMNS`.
    duration : `~astropy.units.Quantity`, optional
        Window length (time). Default: one window per whole run.
    step : `~astropy.units.Quantity`, optional
        Offset between window starts (time). Default: half of ``duration``.
        Only windows fully inside one GTI interval are made.
    stack : bool, optional
        Without ``duration``: stack all runs into one dataset (one window),
        on a map centred on their mean pointing. Default is False.
    energy_min : `~astropy.units.Quantity`, "safe" or callable, optional
        Lower reconstructed energy cut: a value, ``"safe"`` for each run's
        safe threshold (`safe_energy_min`), or a function of the observation
        returning a Quantity. Default is 0.03 TeV.
    energy_max : `~astropy.units.Quantity`, optional
        Upper energy cut. Default is 100 TeV.
    offset_max : `~astropy.units.Quantity`, optional
        Pixels farther than this from the pointing are masked. Default 2.5 deg.
    width, binsz : `~astropy.units.Quantity`, optional
        Map side and pixel size, the map being centred on the pointing.
        Default 5 deg and 0.025 deg.
    warm_up : bool, optional
        Run the finder once, untimed, on the first dataset, so that loading
        the networks is not counted in the first window's latency. Default True.
    keep_datasets : bool, optional
        Keep each window's dataset in `WindowResult.dataset`. Default False.

    Yields
    ------
    window : `WindowResult`
        One per window, in time order per run, as soon as it is processed.

    Raises
    ------
    ValueError
        On bad input (checked when called, before the first window), or if a
        run has no safe energy threshold when ``energy_min="safe"``.
    """
    obs_list = _observation_list(observations)
    if not callable(finder):
        raise ValueError(f"finder must be a CNNSourceFinder or a callable, got {finder!r}.")
    if duration is not None:
        duration = _quantity(duration, u.s, "duration", positive=True)
        step = duration / 2 if step is None else _quantity(step, u.s, "step", positive=True)
        if stack:
            raise ValueError(
                "stack=True is for whole runs only: give either a window duration or stack=True."
            )
    elif step is not None:
        raise ValueError("step is given without duration: a step only makes sense with windows.")
    energy_max = _quantity(energy_max, u.TeV, "energy_max", allow_none=True, positive=True)
    offset_max = _quantity(offset_max, u.deg, "offset_max", allow_none=True, positive=True)
    width = _quantity(width, u.deg, "width", positive=True)
    binsz = _quantity(binsz, u.deg, "binsz", positive=True)
    cuts = [_energy_cut(obs, energy_min) for obs in obs_list]  # fail early, before any window
    for obs, cut in zip(obs_list, cuts):
        if cut is not None and energy_max is not None and cut >= energy_max:
            raise ValueError(
                f"observation {obs.obs_id}: energy_min ({cut}) is not below energy_max ({energy_max})."
            )

    state = {"warm": not warm_up}

    def find(dataset):
        if not state["warm"]:
            finder(dataset)
            state["warm"] = True
        t0 = time.perf_counter()
        table = finder(dataset)
        return table, (time.perf_counter() - t0) * u.s

    def whole_run(items, index_obs_id):
        t0 = time.perf_counter()
        if len(items) == 1:
            obs, cut = items[0]
            center = obs.get_pointing_icrs(obs.tmid)
            geom = _run_geom(SkyCoord(center.ra, center.dec), cut, energy_max, width, binsz)
            dataset = counts_dataset(obs, geom, energy_min=cut, energy_max=energy_max,
                                     offset_max=offset_max, name=f"obs_{obs.obs_id}")
            meta = dataset.meta_table
        else:
            center = _mean_pointing([obs for obs, _ in items])
            parts = []
            for obs, cut in items:
                geom = _run_geom(center, cut, energy_max, width, binsz)
                parts.append(counts_dataset(obs, geom, energy_min=cut, energy_max=energy_max,
                                            offset_max=offset_max, name=f"obs_{obs.obs_id}"))
            dataset = stacked_image_dataset(parts, name="stacked")
            meta = vstack([p.meta_table for p in parts])
        time_bin = (time.perf_counter() - t0) * u.s
        table, time_find = find(dataset)
        starts = [o.tstart for o, _ in items]
        stops = [o.tstop for o, _ in items]
        first = min(range(len(items)), key=lambda i: starts[i].mjd)
        last = max(range(len(items)), key=lambda i: stops[i].mjd)
        lo_cut = min((c for _, c in items if c is not None), default=None)
        return WindowResult(
            obs_id=index_obs_id, index=0, time_start=starts[first], time_stop=stops[last],
            tstart_rel=float(np.min(np.asarray(meta["TSTART_REL"], dtype=float))) * u.s,
            tstop_rel=float(np.max(np.asarray(meta["TSTOP_REL"], dtype=float))) * u.s,
            livetime=float(np.sum(np.asarray(meta["LIVETIME"], dtype=float))) * u.s,
            n_events=int(np.sum(np.asarray(meta["N_EVENTS"], dtype=int))),
            energy_min=(DEFAULT_ENERGY_RANGE[0] if lo_cut is None else lo_cut).to("TeV"),
            candidates=table, time_bin=time_bin, time_find=time_find,
            obs_ids=[int(o.obs_id) for o, _ in items],
            dataset=dataset if keep_datasets else None,
        )

    def windows_of_run(obs, cut):
        center = obs.get_pointing_icrs(obs.tmid)
        geom = _run_geom(SkyCoord(center.ra, center.dec), cut, energy_max, width, binsz)
        iterator = iter_window_datasets(
            obs, duration=duration, step=step, geom=geom, name_prefix="obs_",
            energy_min=cut, energy_max=energy_max, offset_max=offset_max,
        )
        index = 0
        while True:
            t0 = time.perf_counter()
            try:
                t_start, t_stop, dataset = next(iterator)
            except StopIteration:
                return
            time_bin = (time.perf_counter() - t0) * u.s
            table, time_find = find(dataset)
            meta = dataset.meta_table
            yield WindowResult(
                obs_id=int(obs.obs_id), index=index, time_start=t_start, time_stop=t_stop,
                tstart_rel=float(meta["TSTART_REL"][0]) * u.s,
                tstop_rel=float(meta["TSTOP_REL"][0]) * u.s,
                livetime=float(meta["LIVETIME"][0]) * u.s,
                n_events=int(meta["N_EVENTS"][0]),
                energy_min=(DEFAULT_ENERGY_RANGE[0] if cut is None else cut).to("TeV"),
                candidates=table, time_bin=time_bin, time_find=time_find,
                obs_ids=[int(obs.obs_id)], dataset=dataset if keep_datasets else None,
            )
            index += 1

    items = sorted(zip(obs_list, cuts), key=lambda item: item[0].tstart.mjd)

    def generate():
        if duration is None:
            if stack and len(items) > 1:
                yield whole_run(items, -1)
            else:
                for item in items:
                    yield whole_run([item], int(item[0].obs_id))
        else:
            for obs, cut in items:
                yield from windows_of_run(obs, cut)

    return generate()


def run_windows(observations, finder, duration=None, step=None, **kwargs):
    """`find_in_windows`, collected into a `RealtimeResult` (see its parameters)."""
    return RealtimeResult(find_in_windows(observations, finder, duration, step, **kwargs))
