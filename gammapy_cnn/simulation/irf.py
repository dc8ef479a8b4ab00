"""Instrument responses for the simulations.

The embedded default is a CTAO-North-like response built in memory, so the
package simulates with no file and no download. Its numbers are smooth
interpolations of the public CTAO performance figures for the "alpha"
configuration of CTAO-North (4 LSTs + 9 MSTs, prod5 v0.1, 20 deg zenith,
average azimuth, 50 h cuts; CTAO Observatory & Consortium 2021,
Zenodo 5499840, https://www.ctao.org/for-scientists/performance/):

- effective area after gamma/hadron cuts: ~1e4 m2 at 30 GeV, ~1e5 m2 at
  100 GeV, ~4e5 m2 at 1 TeV, ~9e5 m2 above 10 TeV;
- PSF 68% containment radius: ~0.25 deg at 30 GeV, 0.13 deg at 100 GeV,
  0.06 deg at 1 TeV, 0.03 deg at 30 TeV;
- energy resolution: ~30% at 30 GeV, 8% at 1 TeV, 6% at 10 TeV;
- residual background rate after cuts: ~1.1e4 events s-1 sr-1 at the camera
  centre above ~30 GeV, falling to ~70% at 2 deg and ~30% at 3 deg offset.

Other zenith angles are obtained with the usual approximate scalings (the
energy threshold grows as cos(zenith)^-2.7, the collection area at high
energy as 1/cos(zenith), the PSF as cos(zenith)^-0.5). These are documented
approximations, good to ~30%, meant to give the networks realistic variety;
for science, pass a real GADF file (``load_irf``).
"""

from pathlib import Path

import astropy.units as u
import numpy as np
from gammapy.irf import (
    PSF3D,
    Background2D,
    EffectiveAreaTable2D,
    EnergyDispersion2D,
    load_irf_dict_from_file,
)
from gammapy.maps import MapAxis

__all__ = ["DEFAULT_IRF_NAMES", "default_irf", "load_irf"]

DEFAULT_IRF_NAMES = ("default-z20", "default-z40", "default-z60")

# Tabulated public figures (see module docstring); log-log interpolated.
_ENERGY_TEV = np.array([0.012, 0.02, 0.03, 0.05, 0.1, 0.3, 1, 3, 10, 30, 100, 300])
_AEFF_M2 = np.array([1e2, 3e3, 1.3e4, 4.2e4, 1.1e5, 2.3e5, 4.2e5, 7e5, 9e5, 9.2e5, 9e5, 8.5e5])
_R68_DEG = np.array([0.40, 0.30, 0.25, 0.19, 0.13, 0.08, 0.058, 0.05, 0.041, 0.032, 0.03, 0.03])
_ERES = np.array([0.45, 0.35, 0.30, 0.22, 0.15, 0.10, 0.08, 0.07, 0.06, 0.06, 0.07, 0.08])
_BKG_RATE_CENTRE = 1.1e4  # s-1 sr-1, integrated above the threshold
_BKG_OFFSET_SIGMA_DEG = 1.9  # Gaussian fall-off of the background with offset
_GAUSS_R68_TO_SIGMA = 1 / np.sqrt(-2 * np.log(1 - 0.68))


def _loglog(x, xp, fp):
    return np.exp(np.interp(np.log(x), np.log(xp), np.log(fp)))


def _aeff_offset_sigma(energy_tev):
    """Offset scale of the effective area: the FoV is narrower at low energy."""
    return np.clip(1.8 + 0.9 * np.log10(energy_tev / 0.03), 1.5, 4.0)


def default_irf(zenith=20 * u.deg):
    """Build the embedded CTAO-North-like response for a zenith angle.

    Parameters
    ----------
    zenith : `~astropy.units.Quantity`
        Zenith angle, between 0 and 70 deg. Default is 20 deg.

    Returns
    -------
    irfs : dict
        ``aeff``, ``psf``, ``edisp`` and ``bkg`` entries, as
        `gammapy.irf.load_irf_dict_from_file` returns them.
    """
    zenith = u.Quantity(zenith, "deg")
    if not 0 <= zenith.value <= 70:
        raise ValueError(f"zenith must be within 0-70 deg, got {zenith}")
    ratio = np.cos(np.deg2rad(20)) / np.cos(zenith.to_value("rad"))
    threshold_shift = ratio**2.7

    energy_true = MapAxis.from_energy_bounds(
        0.01, 300, nbin=8, per_decade=True, unit="TeV", name="energy_true"
    )
    offset = MapAxis.from_edges(np.linspace(0, 6, 13), unit="deg", name="offset")
    e_true = energy_true.center.to_value("TeV")
    off = offset.center.to_value("deg")

    area = _loglog(e_true / threshold_shift, _ENERGY_TEV, _AEFF_M2) * ratio
    off_sigma = _aeff_offset_sigma(e_true / threshold_shift)
    aeff_data = area[:, None] * np.exp(-0.5 * (off[None, :] / off_sigma[:, None]) ** 2)
    aeff = EffectiveAreaTable2D(axes=[energy_true, offset], data=aeff_data, unit="m2")

    rad = MapAxis.from_edges(np.linspace(0, 1.0, 201), unit="deg", name="rad")
    sigma = (
        _loglog(e_true, _ENERGY_TEV, _R68_DEG) * _GAUSS_R68_TO_SIGMA * np.sqrt(ratio)
    )[:, None] * (1 + 0.03 * off[None, :] ** 2)
    r = rad.center.to_value("deg")
    sigma_rad = np.deg2rad(sigma)[..., None]
    psf_data = np.exp(-0.5 * (np.deg2rad(r) / sigma_rad) ** 2) / (2 * np.pi * sigma_rad**2)
    psf = PSF3D(axes=[energy_true, offset, rad], data=psf_data, unit="sr-1")

    migra = MapAxis.from_edges(np.linspace(0.2, 5, 241), name="migra")
    eres = _loglog(e_true, _ENERGY_TEV, _ERES)
    edisp = EnergyDispersion2D.from_gauss(
        energy_axis_true=energy_true,
        migra_axis=migra,
        offset_axis=offset,
        bias=0,
        sigma=eres,
    )

    energy = MapAxis.from_energy_bounds(
        0.01, 300, nbin=8, per_decade=True, unit="TeV", name="energy"
    )
    e = energy.center.to_value("TeV") / threshold_shift
    # Power law E^-2.7 of the residual cosmic-ray background, rolled over
    # below the trigger threshold (~40 GeV at 20 deg).
    spectrum = (e / 0.1) ** -2.7 / (1 + (e / 0.04) ** -4)
    integral = np.sum(spectrum * energy.bin_width.to_value("MeV") / threshold_shift)
    spectrum = spectrum / integral * _BKG_RATE_CENTRE / threshold_shift
    radial = np.exp(-0.5 * (off / _BKG_OFFSET_SIGMA_DEG) ** 2)
    bkg = Background2D(
        axes=[energy, offset], data=spectrum[:, None] * radial[None, :], unit="s-1 MeV-1 sr-1"
    )
    return {"aeff": aeff, "psf": psf, "edisp": edisp, "bkg": bkg}


def load_irf(name_or_path):
    """Load a response by name (``default-z20``...) or from a GADF FITS file.

    Parameters
    ----------
    name_or_path : str or `~pathlib.Path`
        ``"default"`` or one of ``DEFAULT_IRF_NAMES``, or a path to a GADF
        IRF file holding effective area, PSF, energy dispersion and background.

    Returns
    -------
    irfs : dict
        ``aeff``, ``psf``, ``edisp``, ``bkg``.
    """
    name = str(name_or_path)
    if name == "default":
        name = "default-z20"
    if name in DEFAULT_IRF_NAMES:
        return default_irf(zenith=float(name.split("-z")[1]) * u.deg)
    path = Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"IRF {name!r} is neither a built-in name {DEFAULT_IRF_NAMES} nor an existing file"
        )
    try:
        irfs = load_irf_dict_from_file(path)
    except (OSError, KeyError, ValueError) as error:  # astropy/gammapy say "not FITS" without the name
        raise ValueError(f"IRF file {path} is not a readable GADF IRF file: {error}") from None
    missing = {"aeff", "psf", "edisp", "bkg"} - set(irfs)
    if missing:
        raise ValueError(f"IRF file {path} lacks {sorted(missing)}; simulations need all four")
    return irfs


def irf_label(name_or_path):
    """Short label of a response for file metadata."""
    name = str(name_or_path)
    return "default-z20" if name == "default" else (name if name in DEFAULT_IRF_NAMES else Path(name).name)
