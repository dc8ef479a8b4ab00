"""HDF5 files of simulated maps: chunked, compressed, written atomically.

Layout (all arrays chunked one map per chunk, LZF-compressed)::

    /counts      (n, n_energy, ny, nx) uint16   observed counts
    /signal      (n, n_energy, ny, nx) float32  true expected source counts
    /mask        (n, ny, nx) bool               field-of-view / exposure mask
    /maps        (n,) compound                  drawn parameters of each map
    /sources     (m,) compound                  one row per source, ``map_index`` column
    /templates/background (n_irf, n_energy, ny, nx) float64  background per second
    attrs: scenario (YAML), irf names, seed, package version, energy edges, binsz

The true expected background is not stored per map: it is the template of
the map's IRF scaled by the map's livetime, norm, tilt and gradient, and
`SimulationReader.background` rebuilds it exactly, with the same code the
simulator uses. This keeps files ~20x smaller.

The writer fills ``NAME.partial`` and renames it to ``NAME`` when complete, so a
crash never leaves a half-written file under the final name; a ``.partial``
file can be resumed.
"""

import os
from pathlib import Path

import h5py
import numpy as np

__all__ = ["SimulationReader", "SimulationWriter", "FORMAT_VERSION"]

#: Version 2 added the sources' morphology and width and the diffuse band,
#: version 3 the change of the radial acceptance; older files are still read
#: (their sources are points or Gaussians, their acceptance the IRF's).
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

MAP_FIELDS = [
    ("seed", "u8"), ("irf_index", "i4"), ("pointing_ra", "f8"), ("pointing_dec", "f8"),
    ("livetime", "f8"), ("background_norm", "f8"), ("background_tilt", "f8"),
    ("background_gradient", "f8"), ("gradient_angle", "f8"), ("n_sources", "i4"),
    ("npred_background", "f8"), ("npred_signal", "f8"), ("npred_diffuse", "f8"),
    ("acceptance_quadratic", "f8"), ("acceptance_quartic", "f8"),
]
#: The map fields (of `MAP_FIELDS` and of `~gammapy_cnn.simulation.scenario.MapParameters`) that
#: set a map's true background, in the order `background_model` takes them after the coordinates.
BACKGROUND_FIELDS = ("livetime", "background_norm", "background_tilt", "background_gradient", "gradient_angle",
                     "acceptance_quadratic", "acceptance_quartic")
SOURCE_FIELDS = [
    ("map_index", "i8"), ("x", "f8"), ("y", "f8"), ("ra", "f8"), ("dec", "f8"),
    ("flux", "f8"), ("index", "f8"), ("extension", "f8"), ("morphology", "i1"), ("width", "f8"),
    ("npred", "f8"),
]


def partial_path(path):
    path = Path(path)
    return path.with_name(path.name + ".partial")


class SimulationWriter:
    """Append simulated maps to an HDF5 file, atomically.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        Final file name.
    templates : list of `~gammapy_cnn.simulation.SimulationTemplate`
        One per IRF of the scenario, in the scenario's order.
    attrs : dict
        Metadata (scenario YAML, seed, version...).
    resume : bool
        Continue an existing ``.partial`` file instead of starting anew.
    """

    def __init__(self, path, templates, attrs, resume=False):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        if resume and self.partial.exists():
            self.file = h5py.File(self.partial, "a")
            stored = {k: self.file.attrs[k] for k in ("seed", "scenario")}
            for key, value in stored.items():
                if str(value) != str(attrs[key]):
                    self.file.close()
                    raise ValueError(
                        f"cannot resume {self.partial}: its {key} differs from the one asked for"
                    )
            self._truncate(int(self.file.attrs.get("n_complete", 0)))
            return
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.partial, "w")
        tpl = templates[0]
        n_e, npix = tpl.energy_axis.nbin, tpl.npix
        f = self.file
        f.create_dataset("counts", (0, n_e, npix, npix), maxshape=(None, n_e, npix, npix),
                         dtype="u2", chunks=(1, n_e, npix, npix), compression="lzf")
        f.create_dataset("signal", (0, n_e, npix, npix), maxshape=(None, n_e, npix, npix),
                         dtype="f4", chunks=(1, n_e, npix, npix), compression="lzf")
        f.create_dataset("mask", (0, npix, npix), maxshape=(None, npix, npix), dtype=bool,
                         chunks=(1, npix, npix), compression="lzf")
        f.create_dataset("maps", (0,), maxshape=(None,), dtype=np.dtype(MAP_FIELDS), chunks=(1024,))
        f.create_dataset("sources", (0,), maxshape=(None,), dtype=np.dtype(SOURCE_FIELDS),
                         chunks=(1024,))
        f.create_dataset("templates/background", data=np.array([t.background_rate for t in templates]))
        f.attrs.update(attrs)
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["irf_labels"] = [t.label for t in templates]
        f.attrs["energy_edges_tev"] = tpl.energy_axis.edges.to_value("TeV")
        f.attrs["binsz_deg"] = tpl.binsz.to_value("deg")
        f.attrs["npix"] = npix
        f.attrs["n_complete"] = 0

    @property
    def n_maps(self):
        """Maps completely written (a chunk counts once it is flushed)."""
        return int(self.file.attrs.get("n_complete", 0))

    def _truncate(self, n):
        """Drop what a crash left of a chunk that was being written."""
        for name in ("counts", "signal", "mask", "maps"):
            self.file[name].resize(n, axis=0)
        sources = self.file["sources"]
        sources.resize(int(np.sum(sources["map_index"][()] < n)), axis=0)

    def append(self, maps, sources, counts, signal, mask):
        """Append a chunk of maps and flush it to disk."""
        f = self.file
        n0, n = self.n_maps, len(maps)
        if np.max(counts, initial=0) > np.iinfo(np.uint16).max:
            raise OverflowError("a pixel holds more than 65535 counts; use smaller pixels or livetime")
        for name, data in (("counts", counts), ("signal", signal), ("mask", mask), ("maps", maps)):
            f[name].resize(n0 + n, axis=0)
            f[name][n0:] = data
        if len(sources):
            m0 = f["sources"].shape[0]
            f["sources"].resize(m0 + len(sources), axis=0)
            f["sources"][m0:] = sources
        f.flush()
        f.attrs["n_complete"] = n0 + n
        f.flush()

    def close(self, complete=True):
        """Close the file; when ``complete``, move it to its final name."""
        self.file.close()
        if complete:
            os.replace(self.partial, self.path)


class SimulationReader:
    """Read a simulation file in slices, without loading it whole.

    Parameters
    ----------
    path : str or `~pathlib.Path`

    Examples
    --------
    >>> with SimulationReader("train.h5") as reader:  # doctest: +SKIP
    ...     counts = reader.counts(slice(0, 64)).sum(axis=1)  # 2D counts
    ...     background = reader.background(slice(0, 64))
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            hint = " (an unfinished run left a .partial file: use --resume)" if partial_path(
                self.path).exists() else ""
            raise FileNotFoundError(f"simulation file {self.path} does not exist{hint}")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as error:
            raise ValueError(f"{self.path} is not a readable HDF5 file: {error}") from None
        missing = {"counts", "signal", "maps", "sources", "templates"} - set(self.file)
        version = self.file.attrs.get("format_version")
        if missing or version not in READABLE_VERSIONS:
            self.file.close()
            raise ValueError(
                f"{self.path} is not a gammapy-cnn simulation file (format version {version}, "
                f"missing {sorted(missing)})"
            )
        self._templates = self.file["templates/background"][()]
        self.maps = _with_fields(self.file["maps"][()], MAP_FIELDS)
        self._sources = _with_fields(self.file["sources"][()], SOURCE_FIELDS)
        if version == 1:
            # version 1 had points and Gaussians only: index 1 of MORPHOLOGIES
            self._sources["morphology"] = (self._sources["extension"] > 0).astype("i1")
        order = np.argsort(self._sources["map_index"], kind="stable")
        self._sources = self._sources[order]
        self._source_start = np.searchsorted(self._sources["map_index"], np.arange(len(self) + 1))

    def __len__(self):
        return self.file["counts"].shape[0]

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()

    def close(self):
        self.file.close()

    @property
    def attrs(self):
        return dict(self.file.attrs)

    @property
    def energy_edges(self):
        """Reconstructed energy bin edges in TeV."""
        return np.asarray(self.file.attrs["energy_edges_tev"])

    @property
    def binsz(self):
        """Pixel size in deg."""
        return float(self.file.attrs["binsz_deg"])

    def counts(self, index):
        """Observed counts, (n, n_energy, ny, nx)."""
        return self.file["counts"][index]

    def signal(self, index):
        """True expected source counts, (n, n_energy, ny, nx)."""
        return self.file["signal"][index]

    def mask(self, index):
        return self.file["mask"][index]

    def background(self, index):
        """True expected background counts, (n, n_energy, ny, nx), rebuilt from the templates."""
        rows = np.atleast_1d(self.maps[index])
        energy = np.sqrt(self.energy_edges[:-1] * self.energy_edges[1:])
        npix = self._templates.shape[-1]
        coord = (np.arange(npix) - (npix - 1) / 2) * self.binsz
        out = np.empty((len(rows),) + self._templates.shape[1:], dtype=np.float32)
        for i, row in enumerate(rows):
            out[i] = background_model(self._templates[row["irf_index"]], energy, coord,
                                      *(row[name] for name in BACKGROUND_FIELDS))
        return out if np.ndim(self.maps[index]) else out[0]

    def sources(self, index):
        """Source table rows (structured array) of map ``index``."""
        return self._sources[self._source_start[index] : self._source_start[index + 1]]


def _with_fields(array, fields):
    """``array`` with the columns of ``fields`` it lacks (older files) added as zeros."""
    names = array.dtype.names
    if all(name in names for name, _ in fields):
        return array
    out = np.zeros(array.shape, dtype=fields)
    for name in names:
        out[name] = array[name]
    return out


#: Offset (deg) at which the acceptance change's coefficients are the change of its log.
ACCEPTANCE_REFERENCE_OFFSET = 2.5


def background_model(rate, energy_tev, coord_deg, livetime, norm, tilt, gradient, angle,
                     quadratic=0.0, quartic=0.0):
    """Expected background counts from a per-second template.

    ``tilt`` follows gammapy's `~gammapy.modeling.models.FoVBackgroundModel`
    (spectral factor ``(E / 1 TeV)^-tilt``); ``gradient`` is the fractional
    change 1 deg from the centre along ``angle`` (rad), clipped at zero;
    ``quadratic`` and ``quartic`` change the radial acceptance by
    ``exp(quadratic s^2 + quartic s^4)``, ``s`` the offset from the centre in
    units of `ACCEPTANCE_REFERENCE_OFFSET`.
    """
    spectral = norm * energy_tev ** (-tilt)
    x, y = coord_deg[None, :], coord_deg[:, None]
    spatial = np.clip(1 + gradient * (np.cos(angle) * x + np.sin(angle) * y), 0, None)
    if quadratic or quartic:
        s2 = (x**2 + y**2) / ACCEPTANCE_REFERENCE_OFFSET**2
        spatial = spatial * np.exp(quadratic * s2 + quartic * s2**2)
    return livetime * rate * spectral[:, None, None] * spatial[None]
