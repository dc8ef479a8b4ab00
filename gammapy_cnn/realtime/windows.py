"""The window loop: a source finder over sliding time windows of DL3 runs.

`WindowSearch` holds a finder with the window length, the cuts and the map
geometry, checked once; it searches whole runs (`WindowSearch.whole_run`),
the sliding windows of one run (`WindowSearch.windows`) or a list of runs
in time order (`WindowSearch.iter_windows`). `find_in_windows` and
`run_windows` are the one-call forms.
"""

import time

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import vstack
from gammapy.datasets import Datasets, MapDataset
from gammapy.maps import Map, MapAxis

from ..data import _observation_list, counts_dataset, counts_geom, iter_window_datasets
from ..templates import AutoExclusionFoVBackgroundMaker, background_template
from ..utils import ENERGY_RANGE, NATIVE_BINSZ, to_quantity
from .results import RealtimeResult, WindowResult

__all__ = [
    "DEFAULT_ENERGY_RANGE",
    "WindowSearch",
    "find_in_windows",
    "mean_pointing",
    "parse_quantity",
    "run_windows",
    "safe_energy_min",
    "stacked_image_dataset",
]

#: Default energy range of the counts maps when no cut is given (the networks' `~gammapy_cnn.utils.ENERGY_RANGE`).
DEFAULT_ENERGY_RANGE = ENERGY_RANGE


def parse_quantity(text, unit, name, positive=True):
    """Parse a quantity written as text, e.g. ``"100s"``, ``"1.5 min"`` or ``"0.3TeV"``.

    `gammapy_cnn.utils.to_quantity` with ``positive=True`` by default, for
    command-line options.

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
    return to_quantity(text, unit, name, positive=positive)


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
        return to_quantity(energy_min(observation), u.TeV, "energy_min(observation)")
    return to_quantity(energy_min, u.TeV, "energy_min", allow_none=True)


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


def mean_pointing(observations):
    """Direction of the mean unit vector of the observations' pointings (ICRS).

    Parameters
    ----------
    observations : list of `~gammapy.data.Observation`
        Observations with a pointing.

    Returns
    -------
    center : `~astropy.coordinates.SkyCoord`
        Scalar ICRS direction (the centre of a stacked map).
    """
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
    from ..preprocessing import counts_image

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
# the window loop
# --------------------------------------------------------------------------
class WindowSearch:
    """A source finder over time windows of DL3 runs, with its cuts and map geometry.

    The arguments are checked once, here. Each run is binned on a map
    centred on its pointing (a stack of runs on their mean pointing), with
    one energy bin between the cuts; every search returns `WindowResult`
    objects holding the candidates and the wall-clock time it took.

    Parameters
    ----------
    finder : `~gammapy_cnn.CNNSourceFinder` or callable
        Takes a counts-only `~gammapy.datasets.MapDataset` (a run or a
        window) or, for a stack, `~gammapy.datasets.Datasets` with one such
        dataset per run on the stack's map, and returns a candidates table
        with the columns of `gammapy_cnn.finders.COLUMNS`.
    duration : `~astropy.units.Quantity`, optional
        Window length (time), needed by `windows`. Default: whole runs only.
    step : `~astropy.units.Quantity`, optional
        Offset between window starts (time). Default: half of ``duration``.
        Only windows fully inside one GTI interval are made.
    energy_min : `~astropy.units.Quantity`, "safe" or callable, optional
        Lower reconstructed energy cut: a value, ``"safe"`` for each run's
        safe threshold (`safe_energy_min`), or a function of the observation
        returning a Quantity. Default is 0.03 TeV.
    energy_max : `~astropy.units.Quantity`, optional
        Upper energy cut. Default is 100 TeV.
    offset_max : `~astropy.units.Quantity`, optional
        Pixels farther than this from the pointing are masked. Default 2.5 deg.
    width, binsz : `~astropy.units.Quantity`, optional
        Map side and pixel size. Default 5 deg and 0.025 deg. A stack's map
        is wider where it must be to hold every run's field (``offset_max``
        around each pointing).
    warm_up : bool, optional
        Run the finder once, untimed, on the first dataset, so that loading
        the networks is not counted in the first window's latency. Default True.
    keep_datasets : bool, optional
        Keep each window's dataset in `WindowResult.dataset` (a `Datasets` of the runs for a stack). Default False.
    background_template : bool, optional
        Whole runs only: give each run's dataset its IRF background
        (`~gammapy_cnn.templates.background_template`), normalised to the counts
        outside the excesses found in them, one mask for the runs of a stack
        (`~gammapy_cnn.templates.AutoExclusionFoVBackgroundMaker`), for a finder
        that uses the datasets' own background (``CNNSourceFinder(background_network=None)``).
        For sources larger than a counts-only estimate keeps. Default False.

    Raises
    ------
    ValueError
        On bad input.

    Examples
    --------
    A monitor handing over each run as it comes::

        search = WindowSearch(CNNSourceFinder(), 100 * u.s, energy_min="safe")
        for window in search.windows(observation):
            print(window.describe())
    """

    def __init__(
        self,
        finder,
        duration=None,
        step=None,
        *,
        energy_min=None,
        energy_max=None,
        offset_max=2.5 * u.deg,
        width=5 * u.deg,
        binsz=NATIVE_BINSZ,
        warm_up=True,
        keep_datasets=False,
        background_template=False,
    ):
        if not callable(finder):
            raise ValueError(f"finder must be a CNNSourceFinder or a callable, got {finder!r}.")
        if duration is not None:
            duration = to_quantity(duration, u.s, "duration", positive=True)
            step = duration / 2 if step is None else to_quantity(step, u.s, "step", positive=True)
        elif step is not None:
            raise ValueError("step is given without duration: a step only makes sense with windows.")
        if background_template and duration is not None:
            raise ValueError("background_template is for whole runs: give no window duration.")
        self.finder = finder
        self.duration = duration
        self.step = step
        self.energy_min = energy_min
        self.energy_max = to_quantity(energy_max, u.TeV, "energy_max", allow_none=True, positive=True)
        self.offset_max = to_quantity(offset_max, u.deg, "offset_max", allow_none=True, positive=True)
        self.width = to_quantity(width, u.deg, "width", positive=True)
        self.binsz = to_quantity(binsz, u.deg, "binsz", positive=True)
        self.keep_datasets = bool(keep_datasets)
        self.background_template = bool(background_template)
        self._warm = not warm_up

    def energy_cut(self, observation):
        """Lower energy cut of one run (`~astropy.units.Quantity` in TeV, or None for no cut).

        Raises
        ------
        ValueError
            If the cut cannot be had (no safe threshold) or is not below ``energy_max``.
        """
        cut = _energy_cut(observation, self.energy_min)
        if cut is not None and self.energy_max is not None and cut >= self.energy_max:
            raise ValueError(
                f"observation {observation.obs_id}: energy_min ({cut}) is not below "
                f"energy_max ({self.energy_max})."
            )
        return cut

    def find(self, dataset):
        """Run the finder on ``dataset`` (warming it up first if asked).

        Returns
        -------
        candidates : `~astropy.table.Table`
            The finder's table.
        time_find : `~astropy.units.Quantity`
            Wall-clock time of the (timed) finder call (s).
        """
        if not self._warm:
            self.finder(dataset)
            self._warm = True
        t0 = time.perf_counter()
        table = self.finder(dataset)
        return table, (time.perf_counter() - t0) * u.s

    def whole_run(self, observations):
        """Search a whole run, or several runs stacked into one map (``obs_id`` -1).

        Parameters
        ----------
        observations : `~gammapy.data.Observation` or list of them
            One run, or runs to stack.

        Returns
        -------
        window : `WindowResult`
        """
        return self._whole_run(self._with_cuts(observations))

    def windows(self, observation):
        """Search the sliding windows of one run, in time order.

        Parameters
        ----------
        observation : `~gammapy.data.Observation`
            The run.

        Returns
        -------
        windows : generator of `WindowResult`
            One per window, as soon as it is processed.

        Raises
        ------
        ValueError
            If the search has no ``duration`` or the run no energy cut
            (checked when called, before the first window).
        """
        if self.duration is None:
            raise ValueError("windows need a duration: give WindowSearch a window duration.")
        ((obs, cut),) = self._with_cuts([observation])
        return self._windows_of_run(obs, cut)

    def iter_windows(self, observations, stack=False):
        """Search runs in time order: their windows, or each whole run, or all runs stacked.

        Parameters
        ----------
        observations : `~gammapy.data.Observations` or list of `~gammapy.data.Observation`
            The runs.
        stack : bool, optional
            Without ``duration``: stack all runs into one window. Default is False.

        Returns
        -------
        windows : generator of `WindowResult`
            With ``duration``, the windows of each run (`windows`); without,
            one per run (`whole_run`), or one for all runs with ``stack``.

        Raises
        ------
        ValueError
            On bad input, checked for every run when called, before the first window.
        """
        if stack and self.duration is not None:
            raise ValueError(
                "stack=True is for whole runs only: give either a window duration or stack=True."
            )
        items = self._with_cuts(observations)

        def generate():
            if self.duration is not None:
                for obs, cut in items:
                    yield from self._windows_of_run(obs, cut)
            elif stack and len(items) > 1:
                yield self._whole_run(items)
            else:
                for item in items:
                    yield self._whole_run([item])

        return generate()

    # ----------------------------------------------------------------------
    def _with_cuts(self, observations):
        """(observation, energy cut) pairs in time order; every cut checked now."""
        items = [(obs, self.energy_cut(obs)) for obs in _observation_list(observations)]
        return sorted(items, key=lambda item: item[0].tstart.mjd)

    def _geom(self, center, cut, width=None):
        return _run_geom(center, cut, self.energy_max, self.width if width is None else width, self.binsz)

    def _stack_width(self, center, observations):
        """Side of a stack's map: ``width``, or wider to hold every run's field (``offset_max``,
        else half of ``width``, around its pointing). A run cut off by the map's edge has its CNN
        background extrapolated from part of its field: a stack of runs 2 deg from their mean
        pointing (three real runs, one of them 7 deg from the others) got a 23 sigma false source."""
        reach = self.offset_max if self.offset_max is not None else self.width / 2
        farthest = max(center.separation(_pointing(obs)) for obs in observations)
        return max(self.width, 2 * (farthest + reach).to(self.width.unit))

    def _dataset(self, observation, geom, cut):
        return counts_dataset(observation, geom, energy_min=cut, energy_max=self.energy_max,
                              offset_max=self.offset_max, name=f"obs_{observation.obs_id}")

    def _whole_run(self, items):
        t0 = time.perf_counter()
        if len(items) == 1:
            obs, cut = items[0]
            dataset = self._dataset(obs, self._geom(_pointing(obs), cut), cut)
            meta = dataset.meta_table
        else:
            # one dataset per run on the stack's map, searched jointly: each run's background
            # and heatmap are made on its own pointing (CNNSourceFinder.run on Datasets)
            center = mean_pointing([obs for obs, _ in items])
            width = self._stack_width(center, [obs for obs, _ in items])
            dataset = Datasets([self._dataset(obs, self._geom(center, cut, width), cut) for obs, cut in items])
            meta = vstack([p.meta_table for p in dataset])
        if self.background_template:
            for run, (obs, _) in zip(dataset if isinstance(dataset, Datasets) else [dataset], items):
                run.background = background_template(obs, run.counts.geom)
            dataset = AutoExclusionFoVBackgroundMaker().run(dataset)
        time_bin = (time.perf_counter() - t0) * u.s
        table, time_find = self.find(dataset)
        starts = [o.tstart for o, _ in items]
        stops = [o.tstop for o, _ in items]
        first = min(range(len(items)), key=lambda i: starts[i].mjd)
        last = max(range(len(items)), key=lambda i: stops[i].mjd)
        lo_cut = min((c for _, c in items if c is not None), default=None)
        return WindowResult(
            obs_id=int(items[0][0].obs_id) if len(items) == 1 else -1, index=0,
            time_start=starts[first], time_stop=stops[last],
            tstart_rel=float(np.min(np.asarray(meta["TSTART_REL"], dtype=float))) * u.s,
            tstop_rel=float(np.max(np.asarray(meta["TSTOP_REL"], dtype=float))) * u.s,
            livetime=float(np.sum(np.asarray(meta["LIVETIME"], dtype=float))) * u.s,
            n_events=int(np.sum(np.asarray(meta["N_EVENTS"], dtype=int))),
            energy_min=_cut_or_default(lo_cut), candidates=table, time_bin=time_bin,
            time_find=time_find, obs_ids=[int(o.obs_id) for o, _ in items],
            dataset=(None if not self.keep_datasets else
                     stacked_image_dataset(dataset, name="stacked") if isinstance(dataset, Datasets)
                     else dataset),
        )

    def _windows_of_run(self, obs, cut):
        iterator = iter_window_datasets(
            obs, duration=self.duration, step=self.step, geom=self._geom(_pointing(obs), cut),
            name_prefix="obs_", energy_min=cut, energy_max=self.energy_max,
            offset_max=self.offset_max,
        )
        index = 0
        while True:
            t0 = time.perf_counter()
            try:
                t_start, t_stop, dataset = next(iterator)
            except StopIteration:
                return
            time_bin = (time.perf_counter() - t0) * u.s
            table, time_find = self.find(dataset)
            meta = dataset.meta_table
            yield WindowResult(
                obs_id=int(obs.obs_id), index=index, time_start=t_start, time_stop=t_stop,
                tstart_rel=float(meta["TSTART_REL"][0]) * u.s,
                tstop_rel=float(meta["TSTOP_REL"][0]) * u.s,
                livetime=float(meta["LIVETIME"][0]) * u.s,
                n_events=int(meta["N_EVENTS"][0]),
                energy_min=_cut_or_default(cut), candidates=table, time_bin=time_bin,
                time_find=time_find, obs_ids=[int(obs.obs_id)],
                dataset=dataset if self.keep_datasets else None,
            )
            index += 1


def _pointing(observation):
    center = observation.get_pointing_icrs(observation.tmid)
    return SkyCoord(center.ra, center.dec)


def _cut_or_default(cut):
    return (DEFAULT_ENERGY_RANGE[0] if cut is None else cut).to("TeV")


def find_in_windows(observations, finder, duration=None, step=None, *, stack=False, **options):
    """Run a source finder on sliding time windows of DL3 runs, window after window.

    ``find_in_windows(observations, finder, duration=None, step=None, *,
    stack=False, energy_min=None, energy_max=None, offset_max=2.5 deg,
    width=5 deg, binsz=0.025 deg, warm_up=True, keep_datasets=False,
    background_template=False)``

    The one-call form of `WindowSearch`: ``WindowSearch(finder, duration,
    step, **options).iter_windows(observations, stack)``; the keyword
    arguments ``options`` are those of `WindowSearch`, with its defaults.

    Parameters
    ----------
    observations : `~gammapy.data.Observations` or list of `~gammapy.data.Observation`
        Runs with events, GTIs and pointing (see `gammapy_cnn.data.read_observations`).
    finder, duration, step
        The finder, the window length (default: one window per whole run) and
        the offset between window starts (default: half the length); see `WindowSearch`.
    stack : bool, optional
        Without ``duration``: search all runs together (one window), as a
        `~gammapy.datasets.Datasets` of the runs on a map centred on their
        mean pointing (`WindowSearch.iter_windows`). Default is False.
    energy_min, energy_max, offset_max, width, binsz, warm_up, keep_datasets, background_template
        Cuts, map geometry and options of `WindowSearch` (defaults: 0.03-100 TeV,
        2.5 deg, a 5 deg map of 0.025 deg pixels, warm-up on, datasets not kept,
        no background template).

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
    search = WindowSearch(finder, duration, step, **options)
    return search.iter_windows(obs_list, stack=stack)


def run_windows(observations, finder, duration=None, step=None, **kwargs):
    """`find_in_windows`, collected into a `RealtimeResult` (see its parameters)."""
    return RealtimeResult(find_in_windows(observations, finder, duration, step, **kwargs))
