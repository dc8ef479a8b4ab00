"""Results of a real-time style run: `WindowResult`, `RealtimeResult` and their writers.

`RealtimeResult.write` writes, atomically, ``{prefix}.ecsv`` (one row per
candidate and window: the window columns of `WINDOW_COLUMNS`, then the
finder's columns of `gammapy_cnn.finders.COLUMNS`), ``{prefix}_windows.ecsv``
(one row per window, with its number of candidates and timings, so empty
windows are recorded too) and ``{prefix}.reg`` (DS9 circles of radius
``pos_err_68``, labelled with the candidate name, run and window).
"""

import io
from dataclasses import dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table, hstack, vstack
from astropy.time import Time
from gammapy.datasets import MapDataset

from ..finders import candidates_to_regions, empty_candidates_table
from ..utils import write_text_atomic

__all__ = ["WINDOW_COLUMNS", "RealtimeResult", "WindowResult"]

# name: (unit, dtype, description); dtype "time" is an `~astropy.time.Time` column (TT, ISOT)
_WINDOW_SCHEMA = {
    "OBS_ID": ("", np.int64, "observation id (-1: several runs stacked, see meta 'obs_ids')"),
    "WINDOW": ("", np.int64, "window index within the run (0-based)"),
    "TIME_START": ("", "time", "window start (TT)"),
    "TIME_STOP": ("", "time", "window stop (TT)"),
    "TSTART_REL": ("s", float, "window start relative to the run start"),
    "TSTOP_REL": ("s", float, "window stop relative to the run start"),
    "LIVETIME": ("s", float, "dead-time corrected livetime of the window"),
    "N_EVENTS": ("", np.int64, "events in the window after the energy cut"),
    "LATENCY": ("s", float, "wall-clock time to read and bin the window and find its candidates"),
}
# extra columns of the windows table (one row per window)
_WINDOW_EXTRA_SCHEMA = {
    "N_CANDIDATES": ("", np.int64, "number of candidates found in the window"),
    "TIME_BIN": ("s", float, "wall-clock time to read and bin the window"),
    "TIME_FIND": ("s", float, "wall-clock time of the finder on the window"),
    "ENERGY_MIN": ("TeV", float, "lower energy cut"),
}
#: Columns describing the time window, prepended to the finder's columns: name -> (unit, description).
WINDOW_COLUMNS = {name: (unit, text) for name, (unit, _, text) in _WINDOW_SCHEMA.items()}


def _time_column(mjd):
    column = Time(mjd, format="mjd", scale="tt")
    column.format = "isot"
    return column


def _empty_window_table(schema):
    """Zero-row table with the columns of ``schema`` (described, see `_describe`)."""
    table = Table()
    for name, (_, dtype, _) in schema.items():
        table[name] = _time_column(np.zeros(0)) if dtype == "time" else np.zeros(0, dtype=dtype)
    return _describe(table)


def _describe(table):
    """Set the units and descriptions of the window columns of ``table``; returns it."""
    for name, (unit, _, description) in {**_WINDOW_SCHEMA, **_WINDOW_EXTRA_SCHEMA}.items():
        if name in table.colnames:
            if unit and not isinstance(table[name], Time):
                table[name].unit = unit
            table[name].info.description = description
    return table


def _ecsv_text(table):
    buffer = io.StringIO()
    table.write(buffer, format="ascii.ecsv")
    return buffer.getvalue()


def _run_label(window):
    if window.obs_id == -1:
        return f"stack of {len(window.obs_ids)} runs"
    return f"obs {window.obs_id}"


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
        The counts-only dataset, kept only when asked (``keep_datasets``);
        for a stack of runs, their stacked counts image.
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
        return _describe(table)

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
            table = hstack([_empty_window_table(_WINDOW_SCHEMA), empty_candidates_table()])
        table.meta = self._table_meta()
        return _describe(table)

    @property
    def windows_table(self):
        """One row per window: window columns, number of candidates, timings."""
        table = _empty_window_table({**_WINDOW_SCHEMA, **_WINDOW_EXTRA_SCHEMA})
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
        return _describe(table)

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
                raise ValueError(
                    f"output files exist: {existing}; replace them with overwrite=True "
                    "(--overwrite on the command line)."
                )
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
            The paths written, as `output_paths` gives them (which raises on a file
            in the way, or on existing files without ``overwrite``).
        """
        paths = self.output_paths(directory, prefix, overwrite)
        Path(directory).expanduser().mkdir(parents=True, exist_ok=True)
        write_text_atomic(paths["candidates"], _ecsv_text(self.candidates))
        write_text_atomic(paths["windows"], _ecsv_text(self.windows_table))
        if any(len(w.candidates) for w in self.windows):
            text = self.regions().serialize(format="ds9")
        else:
            text = "# Region file format: DS9 astropy/regions\n# no candidates\n"
        write_text_atomic(paths["regions"], text)
        return paths
