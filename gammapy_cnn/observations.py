"""Reading DL3 observations without IRFs: a data store folder or a single event file.

The counts-only datasets of `gammapy_cnn.data` need events, good time
intervals and a pointing, nothing else; `read_observations` gives them as
gammapy `~gammapy.data.Observations`, with clear errors for paths that hold
no events. ``gammapy_cnn.data.read_observations`` is the same function.
"""

import logging
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from gammapy.data import GTI, DataStore, EventList, FixedPointingInfo, Observation, Observations

__all__ = ["read_observations"]

log = logging.getLogger(__name__)


def _is_datastore_dir(path):
    return any((path / name).exists() for name in ("hdu-index.fits.gz", "hdu-index.fits"))


def _read_event_file(path):
    """Observation from a single DL3 FITS file; IRFs are attached only if present."""
    try:
        with fits.open(path) as hdulist:
            names = [hdu.name for hdu in hdulist]
            header = hdulist["EVENTS"].header.copy() if "EVENTS" in names else None
    except OSError as error:
        raise ValueError(f"{path} is not a readable FITS file: {error}") from error
    if header is None:
        raise ValueError(
            f"{path} holds no events: no EVENTS HDU (HDUs found: {names})."
        )
    try:
        return Observation.read(path, checksum=False)
    except Exception as error:  # missing GTI / IRF quirks: fall back to events only
        log.debug("Observation.read(%s) failed (%s); reading the event list only.", path, error)
    events = EventList.read(path, checksum=False)
    if "GTI" in names:
        gti = GTI.read(path, checksum=False)
    else:
        try:
            gti = GTI.create(
                [header["TSTART"]] * u.s, [header["TSTOP"]] * u.s, reference_time=events.time_ref
            )
        except KeyError as error:
            raise ValueError(
                f"{path} has no GTI HDU and no TSTART/TSTOP in its EVENTS header."
            ) from error
    try:
        pointing = FixedPointingInfo.from_fits_header(header)
    except Exception as error:
        raise ValueError(
            f"{path}: cannot read the pointing from the EVENTS header: {error}"
        ) from error
    return Observation(obs_id=header.get("OBS_ID"), events=events, gti=gti, pointing=pointing)


def read_observations(path, obs_ids=None):
    """Read observations from a DL3 data store folder or a single event file.

    No IRF is required: observations are usable by `counts_dataset` as long as
    they hold events, GTIs and a pointing.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        Either a folder with ``hdu-index.fits[.gz]`` and ``obs-index.fits[.gz]``
        (a `~gammapy.data.DataStore`), or a single DL3 FITS file with an
        ``EVENTS`` HDU (and ideally a ``GTI`` HDU; otherwise the GTI is
        ``[TSTART, TSTOP]`` of the events header).
    obs_ids : int or list of int, optional
        Observations to read. Default is all of them.

    Returns
    -------
    observations : `~gammapy.data.Observations`
        The observations, in the order of ``obs_ids`` (data store: ascending
        ``OBS_ID`` by default).

    Raises
    ------
    ValueError
        If ``path`` does not exist, holds no events (no ``EVENTS`` HDU, a folder
        without index files or without observations), or an ``obs_id`` is missing.

    Notes
    -----
    A file whose ``EVENTS`` table has zero rows is accepted (empty window).
    """
    if path is None:
        raise ValueError("path is required: a DL3 data store folder or a DL3 FITS event file.")
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"DL3 path {str(path)!r} does not exist.")
    if obs_ids is not None:
        obs_ids = [obs_ids] if np.isscalar(obs_ids) else list(obs_ids)
        try:
            obs_ids = [int(obs_id) for obs_id in obs_ids]
        except (TypeError, ValueError) as error:
            raise ValueError(f"obs_ids must be integers, got {obs_ids!r}.") from error
        if not obs_ids:
            raise ValueError("obs_ids is empty; pass None to read all observations.")

    if path.is_dir():
        if not _is_datastore_dir(path):
            raise ValueError(
                f"{str(path)!r} is a folder without hdu-index.fits[.gz]: it holds no DL3 data "
                "store; pass a single event file or a folder with index files."
            )
        try:
            datastore = DataStore.from_dir(path)
        except Exception as error:
            raise ValueError(f"cannot open the DL3 data store {str(path)!r}: {error}") from error
        available = [int(obs_id) for obs_id in datastore.obs_ids]
        if not available:
            raise ValueError(f"DL3 data store {str(path)!r} holds no observations.")
        if obs_ids is None:
            obs_ids = sorted(available)
        missing = sorted(set(obs_ids) - set(available))
        if missing:
            raise ValueError(
                f"obs_ids {missing} are not in the DL3 data store {str(path)!r} "
                f"(it holds {len(available)} observations: {sorted(available)})."
            )
        observations = datastore.get_observations(obs_ids, required_irf=[])
        if len(observations) != len(obs_ids):
            raise ValueError(
                f"some of obs_ids {obs_ids} in {str(path)!r} have no events or GTI HDU."
            )
        return observations

    observation = _read_event_file(path)
    if obs_ids is not None and observation.obs_id not in obs_ids:
        raise ValueError(
            f"{str(path)!r} holds observation {observation.obs_id}, not obs_ids {obs_ids}."
        )
    return Observations([observation])

