"""Simulate many maps into one file, in parallel, resumable."""

import logging
import threading
import time

import astropy.units as u
import numpy as np
from gammapy.maps import MapAxis
from gammapy.utils.parallel import run_multiprocessing
from tqdm.auto import tqdm

from .io import BACKGROUND_FIELDS, MAP_FIELDS, SOURCE_FIELDS, SimulationWriter
from .sampler import SimulationTemplate
from .scenario import Scenario

__all__ = ["simulate_file", "simulate_maps", "get_template"]

log = logging.getLogger(__name__)
_TEMPLATES = {}


def get_template(irf, geometry):
    """Template of ``irf`` on a scenario geometry, cached per process."""
    key = (str(irf), geometry.model_dump_json())
    if key not in _TEMPLATES:
        energy_axis = MapAxis.from_energy_bounds(
            u.Quantity(geometry.energy_min), u.Quantity(geometry.energy_max),
            nbin=geometry.energy_nbin, name="energy",
        )
        _TEMPLATES[key] = SimulationTemplate(
            irf, npix=geometry.npix, binsz=u.Quantity(geometry.binsz), energy_axis=energy_axis
        )
    return _TEMPLATES[key]


def map_rng(seed, index):
    """Random stream of map ``index`` of a file simulated with ``seed``.

    Independent of how maps are split between processes, so the same seed
    gives the same file whatever ``n_jobs``.
    """
    return np.random.default_rng([int(seed), int(index)])


def simulate_maps(scenario, seed, start, stop):
    """Simulate maps ``start..stop-1`` of a scenario.

    Returns
    -------
    chunk : dict
        ``counts``, ``signal``, ``mask``, ``maps`` and ``sources`` arrays,
        as `~gammapy_cnn.simulation.io.SimulationWriter.append` takes them.
    """
    if isinstance(scenario, str):
        scenario = Scenario.from_yaml(scenario)
    templates = [get_template(irf, scenario.geometry) for irf in scenario.irf]
    n = stop - start
    tpl = templates[0]
    shape = (n, tpl.energy_axis.nbin, tpl.npix, tpl.npix)
    counts = np.empty(shape, dtype=np.uint16)
    signal = np.empty(shape, dtype=np.float32)
    mask = np.empty((n, tpl.npix, tpl.npix), dtype=bool)
    maps = np.zeros(n, dtype=MAP_FIELDS)
    sources = []
    for i in range(n):
        index = start + i
        rng = map_rng(seed, index)
        params = scenario.sample(rng)
        template = templates[params.irf_index]
        sim = template.simulate(params, rng)
        if sim.counts.max(initial=0) > np.iinfo(np.uint16).max:
            raise OverflowError(f"map {index}: a pixel exceeds 65535 counts")
        counts[i] = sim.counts
        signal[i] = sim.signal
        mask[i] = template.mask
        row = maps[i]
        row["seed"] = index
        for name in ("irf_index", "pointing_ra", "pointing_dec", *BACKGROUND_FIELDS):
            row[name] = getattr(params, name)
        row["n_sources"] = len(sim.sources)
        row["npred_signal"] = float(sim.signal.sum())
        row["npred_background"] = sim.npred_background
        row["npred_diffuse"] = sim.npred_diffuse
        for src in sim.sources:
            sources.append((index,) + tuple(src[name] for name, _ in SOURCE_FIELDS[1:]))
    return dict(counts=counts, signal=signal, mask=mask, maps=maps,
                sources=np.array(sources, dtype=SOURCE_FIELDS))


def simulate_file(output, n, scenario=None, seed=0, n_jobs=1, backend="multiprocessing",
                  chunk_size=32, resume=False, progress=True):
    """Simulate ``n`` maps of a scenario into an HDF5 file.

    Parameters
    ----------
    output : str or `~pathlib.Path`
        File to write; filled as ``OUTPUT.partial`` and renamed when complete.
    n : int
        Number of maps.
    scenario : `~gammapy_cnn.simulation.Scenario`, optional
        Default is the ``default`` preset (the training scenario).
    seed : int
        Seed of the file; map ``i`` uses ``numpy.random.default_rng([seed, i])``.
    n_jobs : int
        Worker processes (gammapy's parallel backend).
    backend : {"multiprocessing", "ray"}
        gammapy parallel backend; ``ray`` uses a running Ray cluster if any.
    chunk_size : int
        Maps per task; also the checkpoint granularity.
    resume : bool
        Continue an interrupted run from its ``.partial`` file.
    progress : bool
        Show a progress bar.

    Returns
    -------
    rate : float
        Maps simulated per second of wall time.
    """
    if int(n) < 1:
        raise ValueError(f"n must be a positive number of maps, got {n}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    scenario = scenario if scenario is not None else Scenario.preset("default")
    scenario_yaml = scenario.to_yaml()
    templates = [get_template(irf, scenario.geometry) for irf in scenario.irf]
    from .. import __version__

    attrs = dict(scenario=scenario_yaml, seed=int(seed), irfs=[str(i) for i in scenario.irf],
                 package_version=__version__)
    writer = SimulationWriter(output, templates, attrs, resume=resume)
    done = writer.n_maps
    if done > n:
        writer.close(complete=False)
        raise ValueError(f"{writer.partial} already holds {done} maps, more than n={n}")
    if done:
        log.info(f"resuming {writer.partial} after {done} maps")
    chunks = [(scenario_yaml, seed, s, min(s + chunk_size, n)) for s in range(done, n, chunk_size)]
    bar = tqdm(total=n, initial=done, disable=not progress, unit="map", desc="simulate")
    start_time = time.perf_counter()
    try:
        if n_jobs <= 1:
            for args in chunks:
                chunk = simulate_maps(*args)
                writer.append(**chunk)
                bar.update(len(chunk["maps"]))
        else:
            _run_parallel(chunks, writer, bar, n_jobs, backend)
    except BaseException:
        writer.close(complete=False)
        bar.close()
        raise
    bar.close()
    elapsed = time.perf_counter() - start_time
    writer.close(complete=True)
    return (n - done) / elapsed if elapsed > 0 else float("inf")


def _run_parallel(chunks, writer, bar, n_jobs, backend):
    """Run chunks on gammapy's parallel backend, writing them in order as they finish."""
    pending, errors = {}, []
    next_start = [chunks[0][2]] if chunks else [0]
    lock = threading.Lock()

    def write_ready(chunk):
        # Called in the pool's result thread: keep the file in map order.
        # An exception escaping here would kill that thread and hang the pool.
        with lock:
            if errors:
                return
            try:
                pending[int(chunk["maps"]["seed"][0])] = chunk
                while next_start[0] in pending:
                    ready = pending.pop(next_start[0])
                    writer.append(**ready)
                    bar.update(len(ready["maps"]))
                    next_start[0] += len(ready["maps"])
            except Exception as error:  # noqa: BLE001
                errors.append(error)

    run_multiprocessing(
        simulate_maps, chunks, backend=backend, pool_kwargs={"processes": n_jobs},
        method="apply_async",
        method_kwargs={"callback": write_ready, "error_callback": errors.append},
        task_name="simulate",
    )
    if errors:
        raise errors[0]
