"""Where the example data are: gammapy's ``$GAMMAPY_DATA`` folder.

The examples, tests and benchmarks use public data from gammapy's data
folder, the one the ``GAMMAPY_DATA`` environment variable names (see
gammapy's ``gammapy download datasets``): the H.E.S.S. DL3 DR1 data store in
``$GAMMAPY_DATA/hess-dl3-dr1`` and CTAO responses in
``$GAMMAPY_DATA/cta-caldb``. The package itself never needs them.

As a convenience for a gammapy-cnn checkout beside a shared data folder,
when ``GAMMAPY_DATA`` is not set the folders of `FALLBACK_DIRS` are tried,
in order (``$GAMMAPY_CNN_SHARED_DATA``, then ``../shared/data`` and
``../../shared/data`` from the current folder, i.e. from the checkout's
root or from its ``examples/``).
"""

import os
from pathlib import Path

__all__ = ["FALLBACK_DIRS", "HESS_DR1", "find_hess_dr1", "gammapy_data_dir"]

#: Sub-folder of ``$GAMMAPY_DATA`` holding the H.E.S.S. DL3 DR1 data store.
HESS_DR1 = "hess-dl3-dr1"
#: Folders tried when ``$GAMMAPY_DATA`` is not set; relative ones from the current folder.
FALLBACK_DIRS = ("$GAMMAPY_CNN_SHARED_DATA", "../shared/data", "../../shared/data")


def gammapy_data_dir():
    """The gammapy data folder: ``$GAMMAPY_DATA``, else the first of `FALLBACK_DIRS` found.

    Returns
    -------
    path : `~pathlib.Path`
        An existing folder (absolute).

    Raises
    ------
    FileNotFoundError
        If ``$GAMMAPY_DATA`` names no folder, or it is not set and no
        fallback folder exists; the message says to set ``GAMMAPY_DATA``.
    """
    value = os.environ.get("GAMMAPY_DATA")
    if value:
        path = Path(value).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"GAMMAPY_DATA is {value!r}, which is not a folder; set GAMMAPY_DATA to the "
                f"folder holding {HESS_DR1}/ and cta-caldb/."
            )
        return path.resolve()
    for entry in FALLBACK_DIRS:
        expanded = os.path.expandvars(entry)
        if "$" in expanded:  # an unset variable
            continue
        path = Path(expanded).expanduser()
        if path.is_dir():
            return path.resolve()
    raise FileNotFoundError(
        f"no gammapy data folder: set GAMMAPY_DATA to the folder holding {HESS_DR1}/ and "
        f"cta-caldb/ (tried, without it: {', '.join(FALLBACK_DIRS)})."
    )


def find_hess_dr1():
    """The H.E.S.S. DL3 DR1 data store, ``$GAMMAPY_DATA/hess-dl3-dr1``, or None when absent.

    The data folder is the one of `gammapy_data_dir`.

    Returns
    -------
    path : `~pathlib.Path` or None
        A folder holding ``hdu-index.fits.gz``; None when there is no data
        folder or no data store in it (examples skip themselves then).
    """
    try:
        path = gammapy_data_dir() / HESS_DR1
    except FileNotFoundError:
        return None
    return path if (path / "hdu-index.fits.gz").is_file() else None
