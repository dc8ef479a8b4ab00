"""The candidates table: its columns, sky coordinates, names and catalogue interface.

`CNNSourceFinder` returns an astropy `~astropy.table.Table` with the columns of
`COLUMNS` (photutils' finders and gammapy's ``find_peaks`` do the same);
`CandidateCatalog` gives it gammapy's `~gammapy.catalog.SourceCatalog`
interface, whose ``to_models()`` seeds a likelihood fit; `candidates_to_regions`
and `write_ds9` give regions.
"""

import functools

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table
from gammapy.catalog import SourceCatalog, SourceCatalogObject
from gammapy.modeling.models import (
    GaussianSpatialModel,
    Models,
    PointSpatialModel,
    PowerLawSpectralModel,
    ShellSpatialModel,
    SkyModel,
)
from regions import CircleSkyRegion, PointSkyRegion, Regions

__all__ = [
    "COLUMNS",
    "EXTENDED_TS",
    "CandidateCatalog",
    "CandidateObject",
    "candidates_to_regions",
    "empty_candidates_table",
    "write_ds9",
]

from .profiles import EXTENDED_TS

_R68_FACTOR = np.sqrt(-2 * np.log(1 - 0.68))  # 68% radius / sigma of a 2D Gaussian

COLUMNS = {
    "Source_Name": ("", "candidate name, gammapy catalogue style (CNN JHHMM.m+DDMM)"),
    "RA": ("deg", "right ascension (ICRS)"),
    "DEC": ("deg", "declination (ICRS)"),
    "GLON": ("deg", "Galactic longitude"),
    "GLAT": ("deg", "Galactic latitude"),
    "ra": ("deg", "same as RA (find_peaks spelling)"),
    "dec": ("deg", "same as DEC (find_peaks spelling)"),
    "x": ("", "sub-pixel x position in the input map (0 = centre of the first pixel)"),
    "y": ("", "sub-pixel y position in the input map"),
    "score": ("", "network detection score (heatmap peak, 0-1)"),
    "false_alarm_rate": ("", "expected false candidates per 5x5 deg field with a score this high "
                         "(for a candidate kept by the rescue rule: an upper bound)"),
    "significance": ("", "sqrt(TS) of the local Poisson fit of a source over the CNN background, "
                         "deflated by the background's systematic error measured in the map "
                         "(meta background_systematic)"),
    "excess": ("", "fitted source counts"),
    "pos_err": ("deg", "1-sigma position error per axis (the fit's Fisher error times the "
                "calibrated pos_err_scale)"),
    "pos_err_68": ("deg", "68% containment radius of the position error"),
    "extension": ("deg", "size: sigma of the Gaussian that, convolved with the PSF, fits the "
                  "candidate best (~0.6 r for a disk, ~0.8 r for a thin shell); ~0 for a point source"),
    "extension_err": ("deg", "1-sigma error of extension"),
    "ts_ext": ("", "TS of the extension: 2 dlogL of the fitted size over a point source "
               f"(>= {EXTENDED_TS:g}: extended, ~3 sigma; then also with the neighbouring "
               "candidates fitted as point sources)"),
    "shell_radius": ("deg", "inner radius of the shell (gammapy's ShellSpatialModel) that fits an extended "
                     "candidate better than the centrally peaked profile; its centre is then the candidate's "
                     "position. NaN when no shell fits better"),
    "shell_width": ("deg", "width of that shell (outer minus inner radius); NaN when no shell fits better"),
}


def _make_table(values=None, meta=None):
    """Candidates table with the documented columns, units and descriptions."""
    data = [np.zeros(0, dtype=_dtype(name)) if values is None else np.asarray(values[name], dtype=_dtype(name))
            for name in COLUMNS]
    return Table(data, names=list(COLUMNS), units={name: unit or None for name, (unit, _) in COLUMNS.items()},
                 descriptions={name: description for name, (_, description) in COLUMNS.items()},
                 meta=meta, copy=False)


def _dtype(name):
    return "U20" if name == "Source_Name" else float


def empty_candidates_table(meta=None):
    """A candidates table with no row: the columns, units and descriptions of `COLUMNS`."""
    return _make_table(meta=meta)


@functools.lru_cache
def _icrs_to_galactic():
    """Rotation matrix from ICRS to Galactic unit vectors (a fixed rotation in astropy)."""
    axes = SkyCoord(x=[1, 0, 0], y=[0, 1, 0], z=[0, 0, 1], representation_type="cartesian",
                    frame="icrs").galactic.cartesian.xyz.value
    return axes  # column j: ICRS axis j in Galactic coordinates


def _icrs_and_galactic(image, x, y):
    """(ra, dec), (glon, glat) in deg of pixel positions of a 2D `~gammapy.maps.WcsGeom`.

    The candidates table needs both frames at every call of the real-time
    path; one matrix product replaces astropy's frame machinery (0.5 ms).
    """
    if image.frame not in ("icrs", "galactic"):
        coord = SkyCoord.from_pixel(x, y, image.wcs, origin=0)
        return ((coord.icrs.ra.deg, coord.icrs.dec.deg),
                (coord.galactic.l.deg, coord.galactic.b.deg))
    lon, lat = np.radians(image.wcs.wcs_pix2world(x, y, 0))
    vector = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    matrix = _icrs_to_galactic()
    other = matrix @ vector if image.frame == "icrs" else matrix.T @ vector
    other_lon = np.degrees(np.arctan2(other[1], other[0])) % 360
    other_lat = np.degrees(np.arcsin(np.clip(other[2], -1, 1)))
    this = (np.degrees(lon) % 360, np.degrees(lat))
    return (this, (other_lon, other_lat)) if image.frame == "icrs" else ((other_lon, other_lat), this)


def _source_name(ra, dec):
    """gammapy-style name from RA, Dec in deg: CNN JHHMM.m+DDMM."""
    ra_h = (ra % 360) / 15
    h = int(ra_h)
    m10 = int((ra_h - h) * 600)  # tenths of minutes
    sign = "+" if dec >= 0 else "-"
    d = int(abs(dec))
    dm = int((abs(dec) - d) * 60)
    return f"CNN J{h:02d}{m10 // 10:02d}.{m10 % 10}{sign}{d:02d}{dm:02d}"


class CandidateObject(SourceCatalogObject):
    """One candidate, with the `SourceCatalogObject` interface.

    ``spatial_model()`` is a point source at the candidate, a Gaussian of
    sigma ``extension`` for an extended one (``ts_ext >= EXTENDED_TS``), or a
    shell of ``shell_radius`` and ``shell_width`` where the finder found a
    shell to fit better; ``spectral_model()`` a power law of index 2.5 whose
    amplitude is a placeholder to be fitted.
    """

    @property
    def is_extended(self):
        """Whether the candidate's size is significant (``ts_ext >= EXTENDED_TS``)."""
        ts_ext = u.Quantity(self.data.get("ts_ext", np.nan)).value
        extension = u.Quantity(self.data.get("extension", 0), "deg").value
        return bool(np.isfinite(ts_ext) and ts_ext >= EXTENDED_TS and extension > 0)

    def spatial_model(self):
        ra = u.Quantity(self.data["RA"], "deg")
        dec = u.Quantity(self.data["DEC"], "deg")
        shell_radius = u.Quantity(self.data.get("shell_radius", np.nan), "deg")
        if self.is_extended and np.isfinite(shell_radius):
            model = ShellSpatialModel(lon_0=ra, lat_0=dec, radius=shell_radius,
                                      width=u.Quantity(self.data["shell_width"], "deg"), frame="icrs")
        elif self.is_extended:
            model = GaussianSpatialModel(lon_0=ra, lat_0=dec, sigma=u.Quantity(self.data["extension"], "deg"),
                                         frame="icrs")
            err = u.Quantity(self.data.get("extension_err", np.nan), "deg").value
            if np.isfinite(err):
                model.sigma.error = err
        else:
            model = PointSpatialModel(lon_0=ra, lat_0=dec, frame="icrs")
        err = u.Quantity(self.data.get("pos_err", np.nan), "deg").value
        if np.isfinite(err):
            model.lon_0.error = err / max(np.cos(dec.to_value("rad")), 1e-3)
            model.lat_0.error = err
        return model

    def spectral_model(self):
        return PowerLawSpectralModel(index=2.5, amplitude="1e-12 cm-2 s-1 TeV-1", reference="1 TeV")

    def sky_model(self, name=None):
        name = name or self.name.replace(" ", "_").replace("+", "p").replace("-", "m").replace(".", "_")
        return SkyModel(spatial_model=self.spatial_model(), spectral_model=self.spectral_model(),
                        name=name)


class CandidateCatalog(SourceCatalog):
    """CNN candidates with gammapy's catalogue interface.

    Index by row number or ``Source_Name``; ``.positions``; ``.to_models()``
    gives `~gammapy.modeling.models.SkyModel` seeds for a fit: point sources,
    and Gaussians for extended candidates.
    """

    tag = "cnn-candidates"
    description = "Source candidates found by gammapy-cnn's CNNSourceFinder"
    source_object_class = CandidateObject

    def __init__(self, table):
        super().__init__(table, source_name_key="Source_Name")

    def to_models(self, **kwargs):
        return Models([source.sky_model(**kwargs) for source in self])

    def to_regions(self, **kwargs):
        return candidates_to_regions(self.table, **kwargs)


def candidates_to_regions(table, circle=True):
    """Candidates as `regions` objects: circles of radius ``pos_err_68``, or points.

    Returns
    -------
    regions : `~regions.Regions`
    """
    out = []
    for row in table:
        center = SkyCoord(row["RA"], row["DEC"], unit="deg", frame="icrs")
        radius = row["pos_err_68"]
        meta = {"text": str(row["Source_Name"])}
        if circle and np.isfinite(radius):
            out.append(CircleSkyRegion(center, radius * u.deg, meta=meta))
        else:
            out.append(PointSkyRegion(center, meta=meta))
    return Regions(out)


def write_ds9(table, path, overwrite=True):
    """Write candidates as a DS9 region file (circles of radius ``pos_err_68``)."""
    candidates_to_regions(table).write(str(path), format="ds9", overwrite=overwrite)


