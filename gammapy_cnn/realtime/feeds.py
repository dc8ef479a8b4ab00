"""Getting events to a `~gammapy_cnn.realtime.Monitor`: a recorded run replayed in time order
(`replay`, at real-time speed or as fast as possible), and DL3 files taken as they appear in a
folder (`new_files`, ``gammapy-cnn monitor --follow``)."""

import time

import astropy.units as u
import numpy as np

from ..utils import to_quantity

__all__ = ["new_files", "replay"]


def replay(observation, monitor, chunk=1 * u.s, speed=None):
    """Feed a recorded observation's events to ``monitor`` in time order, ``chunk`` by ``chunk``.

    Parameters
    ----------
    observation : `~gammapy.data.Observation`
        A DL3 run (events and GTI).
    monitor : `Monitor`
        Built for this run (its pointing and start).
    chunk : `~astropy.units.Quantity`
        Duration of data per `Monitor.feed` call. Default 1 s.
    speed : float, optional
        1: as in real time (each chunk is fed once its data would exist);
        2: twice as fast; None: as fast as possible (the default).

    Returns
    -------
    alerts : list of `Alert`
    """
    step = to_quantity(chunk, "s", "chunk", positive=True).to_value("s")
    if speed is not None and not float(speed) > 0:
        raise ValueError(f"speed must be > 0 (1: real time) or None (as fast as possible), got {speed}")
    events = observation.events
    seconds = (events.time - monitor.tstart).to_value("s")
    order = np.argsort(seconds, kind="stable")
    seconds = seconds[order]
    stop = float((observation.tstop - monitor.tstart).to_value("s"))
    started, alerts = time.time(), []
    for start in np.arange(0.0, stop, step):
        end = min(start + step, stop)
        if speed is not None:
            time.sleep(max(0.0, started + end / float(speed) - time.time()))
        lo, hi = np.searchsorted(seconds, [start, end])
        alerts += monitor.feed(events.select_row_subset(order[lo:hi]), until=monitor.tstart + end * u.s)
    return alerts + monitor.finish(observation.tstop)


def new_files(directory, pattern="*.fits*", poll=1.0, idle_exit=None, sleep=time.sleep):
    """The files that appear in ``directory``, oldest first, as they arrive (a generator).

    Files already there come first. A file is handed out once its size has
    stayed the same over one poll, so that one still being copied in is not
    read half; a producer that moves finished files in (a rename, atomic) is
    the safe way. Each file is handed out once, and again if it changes
    afterwards (a file that was read half and then completed is not lost).

    Parameters
    ----------
    directory : str or `~pathlib.Path`
        The folder to watch (it must exist).
    pattern : str
        Glob of the files to take. Default DL3 FITS files, compressed or not.
    poll : float
        Seconds between looks. Default 1.
    idle_exit : float, optional
        Stop after this many seconds without a new file. Default: never
        (until interrupted).
    """
    from pathlib import Path

    folder = Path(directory)
    if not folder.is_dir():
        raise ValueError(f"--follow needs an existing folder, got {str(directory)!r}")
    handed, looked = {}, {}  # path -> (size, mtime) when handed out / at the last look
    idle = 0.0
    while idle_exit is None or idle <= idle_exit:
        ready, arriving = [], False
        for path in folder.glob(pattern):
            if not path.is_file():
                continue
            stat = path.stat()
            state = (stat.st_size, stat.st_mtime_ns)
            if handed.get(path) == state:
                continue
            if looked.get(path) == state:
                ready.append(path)
            else:
                arriving = True  # new or still changing: not idle
            looked[path] = state
        for path in sorted(ready, key=lambda p: (looked[p][1], p.name)):
            handed[path] = looked[path]
            yield path
        idle = 0.0 if ready or arriving else idle + poll
        sleep(poll)
