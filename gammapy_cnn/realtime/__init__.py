"""Real-time style source finding: `CNNSourceFinder` over sliding time windows of DL3 runs.

A real-time analysis receives the events of a run as it goes and must say,
window after window, which sources are in the field. `find_in_windows` does
this on recorded runs: each run's event list is read once, every window is
binned into a counts-only dataset (`gammapy_cnn.data.iter_window_datasets`)
and handed to a `~gammapy_cnn.CNNSourceFinder`; the candidates of every
window come out as soon as they are found, with the time it took.
`WindowSearch` is the loop itself, its arguments checked once, for callers
that hand over runs one by one.

`Monitor` is the live counterpart: fed event chunks as they arrive, it looks
at back-to-back windows of several timescales at once (10 s to 1000 s and the
cumulative exposure), follows sources as `Track` s with light curves, and
raises `Alert` s for new sources and flares, written as VOEvent 2.0 packets and
an ``alerts.ecsv`` log by `AlertWriter` (``gammapy-cnn monitor``).

The package has eight modules: ``windows`` (the replay loop: `WindowSearch`,
`find_in_windows`, `run_windows` and their dataset helpers), ``results``
(`WindowResult`, `RealtimeResult` and their table, ECSV and DS9 writers),
``monitor`` (`Monitor`, `Track`, `Alert`), ``feeds`` (`replay` of a
recorded run and `new_files` arriving in a folder), ``flux`` (`ExcessToFlux`: excess
counts to integral fluxes with a run's effective area), ``config``
(`MonitorConfig`, the YAML settings of ``gammapy-cnn monitor``),
``alerts`` (the VOEvent and log writer) and ``card`` (the false-alarm card:
the alert threshold's rule and the false alerts it gave on source-free
data). Every public name is importable from ``gammapy_cnn.realtime``.

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

from ..finders import empty_candidates_table  # noqa: F401  (its home is gammapy_cnn.finders)
from . import alerts, card, config, feeds, flux, monitor, results, windows
from .alerts import *  # noqa: F403
from .card import *  # noqa: F403
from .config import *  # noqa: F403
from .feeds import *  # noqa: F403
from .flux import *  # noqa: F403
from .monitor import *  # noqa: F403
from .results import *  # noqa: F403
from .windows import *  # noqa: F403

__all__ = (results.__all__ + windows.__all__ + monitor.__all__ + alerts.__all__ + flux.__all__ + config.__all__
           + card.__all__ + feeds.__all__)
