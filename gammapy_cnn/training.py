"""Training and fine-tuning of the networks, streaming from simulation files.

A training run is described by a `TrainingConfig` (YAML, see
``gammapy_cnn/networks/recipes/``). Batches are read from the HDF5 file on
the fly (`MapBatches`), so memory does not grow with the file. Every epoch
writes a full checkpoint (weights and optimizer state) beside the output;
``resume=True`` continues from it. The final ``.keras`` file holds no
optimizer state and gets a model card (``.json``) with the recipe, the data,
the metrics and its SHA-256.
"""

import json
import logging
import time
from pathlib import Path
from typing import Literal

import astropy.units as u
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator

from . import __version__
from .networks import canonical_name, quiet_tensorflow, sha256
from .preprocessing import (
    FINDER_STRIDE,
    NATIVE_BINSZ,
    PREPROCESSING_VERSION,
    normalise,
    original_stretch,
    pad,
)
from .simulation.io import SimulationReader
from .utils import atomic_path, write_text_atomic

__all__ = ["TrainingConfig", "MapBatches", "train", "source_significance"]

log = logging.getLogger(__name__)
keras = quiet_tensorflow()
ops = keras.ops

#: Detectability cuts of the finder's labels: expected s / sqrt(b) in an aperture
#: of 0.1 deg widened by the source's size (`source_radius`).
POSITIVE_SIGNIFICANCE = 2.5
IGNORE_SIGNIFICANCE = 1.0
APERTURE_DEG = 0.1
HEATMAP_SIGMA_CELLS = 1.0


def source_radius(sources):
    """Radius (deg) that holds most of each source before the PSF.

    0 for points, 1.5 sigma for Gaussians, the radius of disks, the outer
    radius of shells. ``sources`` is a structured array of simulation rows.
    """
    sources = np.atleast_1d(sources)
    names = sources.dtype.names or ()
    extension = sources["extension"] if "extension" in names else np.zeros(len(sources))
    morphology = sources["morphology"] if "morphology" in names else (extension > 0).astype(int)
    width = sources["width"] if "width" in names else np.zeros(len(sources))
    # MORPHOLOGIES order: point, gaussian, disk, shell
    factor = np.array([0.0, 1.5, 1.0, 1.0])[np.asarray(morphology, int)]
    return factor * extension + np.where(np.asarray(morphology) == 3, width, 0.0)


class TrainingConfig(BaseModel):
    """A training recipe.

    ``kind`` and ``architecture`` choose the network (``architecture: seed``,
    the former name of ``original``, is read as ``original``); ``base`` starts
    from an existing network (fine-tuning) and ``freeze`` keeps layers whose
    names start with one of the given prefixes fixed.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["cleaner", "finder"]
    architecture: Literal["default", "original"] = "default"
    data: str | None = None
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 32
    steps_per_epoch: PositiveInt | None = None
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    learning_rate: PositiveFloat = 2e-3
    seed: int = 0
    augment: bool = True
    base: str | None = None
    freeze: list[str] = []
    cleaner: str = "original"  # original regressor only: the cleaner whose output it reads
    widths: list[int] | None = None
    #: Cleaner only: the fraction of training maps whose input has random
    #: masked holes (`with_random_holes`), while the loss still covers them.
    mask_holes: float = Field(0.0, ge=0, le=1)
    #: ``mirrored``: data-parallel over the local GPUs (or CPU) with
    #: ``tf.distribute.MirroredStrategy``; ``multi-worker``: over several
    #: machines with ``MultiWorkerMirroredStrategy`` (set ``TF_CONFIG`` on each).
    distribute: Literal["none", "mirrored", "multi-worker"] = "none"

    @field_validator("architecture", mode="before")
    @classmethod
    def _former_names(cls, value):
        return canonical_name(value) if isinstance(value, str) else value

    @classmethod
    def read(cls, path):
        data = yaml.safe_load(Path(path).read_text()) or {}
        try:
            return cls(**data)
        except ValidationError as error:
            raise ValueError(f"invalid training config {path}: {error}") from None


# --- losses ---------------------------------------------------------------


@keras.saving.register_keras_serializable(package="gammapy_cnn")
def background_loss(y_true, y_pred):
    """Squared log ratio of predicted to true background on 0.2 deg cells.

    ``y_true`` holds (true background / level, mask). The log makes it a
    relative error, equally weighted for faint and bright maps.
    """
    mask = y_true[..., 1:2]
    pool = keras.layers.AveragePooling2D(8)
    true = pool(y_true[..., 0:1] * mask)
    pred = pool(y_pred * mask)
    weight = ops.cast(pool(mask) > 0.5, "float32")
    err = ops.square(ops.log(pred + 1e-4) - ops.log(true + 1e-4)) * weight
    return ops.sum(err) / ops.maximum(ops.sum(weight), 1.0)


@keras.saving.register_keras_serializable(package="gammapy_cnn")
def heatmap_focal_loss(y_true, y_pred):
    """CenterNet focal loss with an ignore weight (channel 1 of ``y_true``)."""
    target, weight = y_true[..., 0:1], y_true[..., 1:2]
    p = ops.clip(y_pred, 1e-6, 1 - 1e-6)
    positive = ops.cast(target >= 0.999, "float32")
    pos_loss = -ops.log(p) * ops.square(1 - p) * positive
    neg_loss = -ops.log(1 - p) * ops.square(p) * ops.power(1 - target, 4) * (1 - positive)
    n_pos = ops.maximum(ops.sum(positive), 1.0)
    return ops.sum((pos_loss + neg_loss) * weight) / n_pos


@keras.saving.register_keras_serializable(package="gammapy_cnn")
def offset_loss(y_true, y_pred):
    """L1 loss of the sub-cell offset at source cells (channel 2 is the cell mask)."""
    mask = y_true[..., 2:3]
    err = ops.abs(y_pred - y_true[..., 0:2]) * mask
    return ops.sum(err) / ops.maximum(ops.sum(mask), 1.0)


# --- targets ----------------------------------------------------------------


def source_significance(signal, background, sources, binsz):
    """Expected s / sqrt(b) of each source in its aperture (truth-based detectability).

    The aperture is 0.1 deg for a point source, widened in quadrature by the
    source's `source_radius` (``radius`` key of each source, deg, default 0).
    """
    if len(sources) == 0:
        return np.zeros(0)
    ny, nx = signal.shape
    out = []
    for src in sources:
        aperture = np.hypot(APERTURE_DEG, src.get("radius", 0.0))
        radius = int(np.ceil(aperture / binsz)) + 1
        ix, iy = int(np.rint(src["x"])), int(np.rint(src["y"]))
        ys = slice(max(iy - radius, 0), min(iy + radius + 1, ny))
        xs = slice(max(ix - radius, 0), min(ix + radius + 1, nx))
        yy, xx = np.mgrid[ys, xs]
        inside = np.hypot(xx - src["x"], yy - src["y"]) * binsz <= aperture
        s = signal[ys, xs][inside].sum()
        b = background[ys, xs][inside].sum()
        out.append(s / np.sqrt(b + 1.0))
    return np.array(out)


def finder_targets(xs, ys, significance, shape, offset=(0, 0), radii_cells=None):
    """Heatmap (target, weight) and offset (dx, dy, mask) arrays on the cell grid.

    ``xs``, ``ys`` are pixel positions in the padded image (``offset`` added).
    ``radii_cells`` are the sources' sizes in cells: an extended source gets
    one peak at its centre, with a heatmap blob widened by half its size
    (CenterNet scales the blob with the object) and a wider ignore zone.
    """
    if radii_cells is None:
        radii_cells = np.zeros(len(xs))
    h, w = shape[0] // FINDER_STRIDE, shape[1] // FINDER_STRIDE
    heat = np.zeros((h, w, 2), np.float32)
    heat[..., 1] = 1
    off = np.zeros((h, w, 3), np.float32)
    cy, cx = np.mgrid[:h, :w]
    for x, y, sig, size in zip(xs, ys, significance, radii_cells):
        # Cell i spans pixels [4i, 4i + 4): centre at pixel 4i + 1.5.
        gx = (x + offset[1] - (FINDER_STRIDE - 1) / 2) / FINDER_STRIDE
        gy = (y + offset[0] - (FINDER_STRIDE - 1) / 2) / FINDER_STRIDE
        d2 = (cx - gx) ** 2 + (cy - gy) ** 2
        if sig >= POSITIVE_SIGNIFICANCE:
            sigma2 = HEATMAP_SIGMA_CELLS**2 + (size / 2) ** 2
            heat[..., 0] = np.maximum(heat[..., 0], np.exp(-0.5 * d2 / sigma2))
            ix, iy = int(np.clip(np.rint(gx), 0, w - 1)), int(np.clip(np.rint(gy), 0, h - 1))
            heat[iy, ix, 0] = 1.0
            off[iy, ix] = (gx - ix, gy - iy, 1.0)
        elif sig >= IGNORE_SIGNIFICANCE:
            heat[..., 1] = np.where(d2 <= (2 + size) ** 2, 0.0, heat[..., 1])
    return heat, off


def _augment_coords(x, y, n, k, flip):
    """Pixel coordinates after ``np.flip(axis=x)`` (if ``flip``) then ``np.rot90(k)``."""
    if flip:
        x = n - 1 - x
    for _ in range(k):
        x, y = y, n - 1 - x
    return x, y


def _augment_images(images, k, flip):
    """Same transform on (B, ny, nx, ...) arrays."""
    if flip:
        images = images[:, :, ::-1]
    return np.rot90(images, k, axes=(1, 2)).copy()


#: Radii of the random holes (deg), and the distances from the centre at which
#: a random straight edge cuts the map (deg): excluded regions and maps that
#: do not cover the whole training field.
HOLE_RADIUS = (0.2, 1.2)
EDGE_DISTANCE = (1.0, 2.3)


def with_random_holes(mask, rng, fraction):
    """Masks with random holes: the network learns to fill in what it cannot see.

    A ``fraction`` of the (n, ny, nx) ``mask`` gets either one or two discs
    (radius in `HOLE_RADIUS`, anywhere in the map) or, one time in three, a
    straight edge beyond which nothing is seen (at a distance in
    `EDGE_DISTANCE` from the centre): what a user's exclusion mask and a map
    off its pointing look like to the network. Maps always keep at least a
    third of their pixels.
    """
    mask = np.array(mask, bool)
    n, ny, nx = mask.shape
    binsz = NATIVE_BINSZ.to_value("deg")
    yy, xx = np.mgrid[:ny, :nx]
    x, y = (xx - (nx - 1) / 2) * binsz, (yy - (ny - 1) / 2) * binsz
    for i in np.nonzero(rng.random(n) < fraction)[0]:
        if rng.random() < 1 / 3:
            angle = rng.uniform(0, 2 * np.pi)
            hole = x * np.cos(angle) + y * np.sin(angle) > rng.uniform(*EDGE_DISTANCE)
        else:
            hole = np.zeros((ny, nx), bool)
            for _ in range(rng.integers(1, 3)):
                cx, cy = rng.uniform(-2.3, 2.3, size=2)
                hole |= np.hypot(x - cx, y - cy) < rng.uniform(*HOLE_RADIUS)
        if (mask[i] & ~hole).sum() >= mask[i].sum() / 3:
            mask[i] &= ~hole
    return mask


class MapBatches(keras.utils.PyDataset):
    """Batches of network inputs and targets streamed from a simulation file.

    Parameters
    ----------
    reader : `~gammapy_cnn.simulation.io.SimulationReader`
    config : `TrainingConfig`
    indices : `~numpy.ndarray`
        Map indices (sorted) this sequence draws from.
    augment : bool
        Random flips and rotations by 90 deg (the sky has no preferred direction).
    cleaner : `~gammapy_cnn.networks.Network`, optional
        Original regressor only: the cleaner that makes its input.
    """

    def __init__(self, reader, config, indices, augment, cleaner=None, epoch_seed=0, steps=None):
        super().__init__()
        self.reader, self.config, self.indices = reader, config, np.asarray(indices)
        self.augment, self.cleaner = augment, cleaner
        self.batch_size = config.batch_size
        self.n_blocks = max(len(self.indices) // self.batch_size, 1)
        # An epoch of `steps` batches takes the first blocks of a fresh shuffle.
        self.steps = int(steps) if steps else self.n_blocks
        self.rng = np.random.default_rng([config.seed, epoch_seed])
        self.order = np.arange(self.n_blocks)
        self.on_epoch_end()

    def __len__(self):
        return self.steps

    def on_epoch_end(self):
        if self.augment:
            self.rng.shuffle(self.order)

    def read(self, batch):
        """Raw arrays of one batch: 2D counts, background, signal, mask, sources."""
        start = self.order[batch % self.n_blocks] * self.batch_size
        idx = self.indices[start : start + self.batch_size]
        sl = slice(int(idx[0]), int(idx[-1]) + 1)  # contiguous blocks read fast from HDF5
        counts = self.reader.counts(sl).sum(axis=1, dtype=np.float32)
        mask = self.reader.mask(sl)
        background = self.reader.background(sl).sum(axis=1)
        signal = self.reader.signal(sl).sum(axis=1) if self.config.kind == "finder" else None
        sources = [self.reader.sources(i) for i in range(sl.start, sl.stop)]
        return counts, background, signal, mask, sources

    def __getitem__(self, batch):
        counts, background, signal, mask, sources = self.read(batch)
        k, flip = (int(self.rng.integers(4)), bool(self.rng.integers(2))) if self.augment else (0, False)
        n = counts.shape[-1]
        counts, background, mask = (
            _augment_images(a[..., None], k, flip)[..., 0] for a in (counts, background, mask)
        )
        if signal is not None:
            signal = _augment_images(signal[..., None], k, flip)[..., 0]
        arch = self.config.architecture
        if self.config.kind == "cleaner" and arch == "original":
            x, _, _ = original_stretch(counts)
            y, _, _ = original_stretch(counts - background)
            return x[..., None], y[..., None]
        if self.config.kind == "finder" and arch == "original":
            x, _, _ = original_stretch(counts)
            cleaned = self.cleaner.predict(x[..., None])
            target = np.zeros((len(counts), 2), np.float32)
            for i, src in enumerate(sources):
                if len(src):
                    b = np.argmax(src["npred"])
                    sx, sy = _augment_coords(src["x"][b], src["y"][b], n, k, flip)
                    target[i] = (sx / n, sy / n)
            return cleaned, target
        seen = mask
        if self.config.kind == "cleaner" and self.augment and self.config.mask_holes:
            seen = with_random_holes(mask, self.rng, self.config.mask_holes)
        x, level = normalise(counts, seen)
        x, window = pad(x)
        if self.config.kind == "cleaner":
            y = np.stack([background / level[:, None, None], mask.astype(np.float32)], axis=-1)
            y, _ = pad(y.astype(np.float32))
            return x, y
        offset = (window[0].start, window[1].start)
        heat, off = [], []
        for i, src in enumerate(sources):
            sig = source_significance(signal[i], background[i], _transformed(src, n, k, flip),
                                      self.reader.binsz)
            sx, sy = _augment_coords(src["x"], src["y"], n, k, flip)
            radii = source_radius(src) / self.reader.binsz / FINDER_STRIDE
            h, o = finder_targets(sx, sy, sig, x.shape[1:3], offset, radii)
            heat.append(h)
            off.append(o)
        return x, {"heatmap": np.array(heat), "offset": np.array(off)}


def _transformed(sources, n, k, flip):
    x, y = _augment_coords(sources["x"], sources["y"], n, k, flip)
    return [dict(x=a, y=b, radius=r) for a, b, r in zip(x, y, source_radius(sources))]


# --- training ---------------------------------------------------------------


def _build(config):
    from .networks.architectures import ARCHITECTURES

    builder = ARCHITECTURES[(config.kind, config.architecture)]
    if config.widths and config.architecture == "default":
        return builder(widths=tuple(config.widths))
    return builder()


def _strategy(name):
    """The `tf.distribute` strategy of a recipe (the default one for ``none``)."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _compile(model, config):
    if config.architecture == "original":
        loss = "mse"
    elif config.kind == "cleaner":
        loss = background_loss
    else:
        loss = {"heatmap": heatmap_focal_loss, "offset": offset_loss}
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=loss)


class _Checkpoint(keras.callbacks.Callback):
    """Full checkpoint (with optimizer) and progress file after every epoch."""

    def __init__(self, directory, history):
        super().__init__()
        self.directory, self.history = Path(directory), history

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({k: float(v) for k, v in (logs or {}).items()})
        with atomic_path(self.directory / "checkpoint.keras") as tmp:  # keeps the .keras suffix
            self.model.save(tmp)
        state = {"epoch": epoch + 1, "history": self.history}
        write_text_atomic(self.directory / "state.json", json.dumps(state))


def train(config, output, data=None, resume=False, verbose=2):
    """Train a network following a recipe and write it with its model card.

    Parameters
    ----------
    config : `TrainingConfig` or str
        The recipe, or the path of its YAML file.
    output : str or `~pathlib.Path`
        The ``.keras`` file to write; checkpoints go to ``OUTPUT.ckpt/``.
    data : str, optional
        Simulation file; overrides ``config.data``.
    resume : bool
        Continue from the last checkpoint.
    verbose : int
        Keras verbosity (progress output).

    Returns
    -------
    card : dict
        The model card written beside the network.
    """
    if not isinstance(config, TrainingConfig):
        config = TrainingConfig.read(config)
    data = data or config.data
    if data is None:
        raise ValueError("no training data: give data= or set `data` in the recipe")
    output = Path(output)
    if output.suffix != ".keras":
        raise ValueError(f"output {output} must end in .keras")
    keras.utils.set_random_seed(config.seed)
    reader = SimulationReader(data)
    n = len(reader)
    n_val = max(int(n * config.validation_fraction), config.batch_size)
    if n - n_val < config.batch_size:
        raise ValueError(f"{data} holds {n} maps: too few for batches of {config.batch_size}")
    train_idx, val_idx = np.arange(n - n_val), np.arange(n - n_val, n)
    cleaner = None
    if config.kind == "finder" and config.architecture == "original":
        from .networks import load_network

        cleaner = load_network("cleaner", config.cleaner, expect_architecture="original")

    ckpt_dir = output.with_name(output.name + ".ckpt")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state_file = ckpt_dir / "state.json"
    history, initial_epoch = [], 0
    with _strategy(config.distribute).scope():
        if resume and state_file.exists():
            state = json.loads(state_file.read_text())
            initial_epoch, history = state["epoch"], state["history"]
            model = keras.saving.load_model(ckpt_dir / "checkpoint.keras", safe_mode=True)
            log.info(f"resuming from epoch {initial_epoch}")
        else:
            if config.base:
                from .networks import load_network

                # a copy: the loaded network is cached and shared, it must not be trained
                model = load_network(config.kind, config.base,
                                     expect_architecture=config.architecture).clone_model()
            else:
                model = _build(config)
            for layer in model.layers:
                layer.trainable = not any(layer.name.startswith(p) for p in config.freeze)
            _compile(model, config)

    train_seq = MapBatches(reader, config, train_idx, augment=config.augment, cleaner=cleaner,
                           epoch_seed=initial_epoch, steps=config.steps_per_epoch)
    val_seq = MapBatches(reader, config, val_idx, augment=False, cleaner=cleaner)
    start = time.perf_counter()
    if initial_epoch < config.epochs:
        model.fit(
            train_seq, validation_data=val_seq, epochs=config.epochs, initial_epoch=initial_epoch,
            verbose=verbose,
            callbacks=[_Checkpoint(ckpt_dir, history)],
        )
    elapsed = time.perf_counter() - start

    # Ship weights only: a fresh, uncompiled copy has no optimizer state.
    final = _build(config) if not config.base else keras.models.clone_model(model)
    final.set_weights(model.get_weights())
    with atomic_path(output) as tmp:  # a .keras temporary file, as Keras requires
        final.save(tmp)
    card = {
        "kind": config.kind,
        "architecture": config.architecture,
        "preprocessing_version": PREPROCESSING_VERSION,
        "native_binsz_deg": NATIVE_BINSZ.to_value("deg"),
        "package_version": __version__,
        "recipe": config.model_dump(mode="json"),
        "training_data": {
            "file": Path(data).name,
            "n_maps": int(n),
            "n_train": int(len(train_idx)),
            "n_validation": int(len(val_idx)),
            "seed": int(reader.attrs["seed"]),
            "irfs": [str(i) for i in reader.attrs["irfs"]],
            "scenario": str(reader.attrs["scenario"]),
        },
        "history": history,
        "training_seconds_this_run": round(elapsed, 1),
        "parameters": int(final.count_params()),
        "sha256": sha256(output),
    }
    reader.close()
    write_card(output, card)
    return card


def recipe_path(kind, architecture="default"):
    """Path of the shipped recipe of a network (``"seed"`` is read as ``"original"``)."""
    from importlib import resources

    name = f"{kind}_{canonical_name(architecture)}.yaml"
    return Path(str(resources.files("gammapy_cnn.networks") / "recipes" / name))


def fine_tune(kind, data, output, base="default", epochs=5, learning_rate=3e-4, freeze=(),
              batch_size=16, seed=0, resume=False, verbose=2):
    """Start from a network and train it further on a (small) simulation file.

    Parameters
    ----------
    kind : {"cleaner", "finder"}
    data : str or `~pathlib.Path`
        Simulation file, e.g. a few hundred maps simulated with your IRF.
    output : str or `~pathlib.Path`
        The new ``.keras`` file.
    base : str
        Shipped network name or ``.keras`` file to start from.
    freeze : list of str
        Layer-name prefixes to keep fixed (e.g. ``["bkg_enc"]``, ``["find_enc"]``).

    Returns
    -------
    card : dict
    """
    from .networks import load_network

    architecture = load_network(kind, base).architecture
    config = TrainingConfig(kind=kind, architecture=architecture, base=str(base), epochs=epochs,
                            learning_rate=learning_rate, freeze=list(freeze),
                            batch_size=batch_size, seed=seed)
    return train(config, output, data=data, resume=resume, verbose=verbose)


def point_source_width(reader, n, min_counts=300):
    """Median King width (deg) of the bright point sources of a simulation file.

    Each point source with at least ``min_counts`` expected counts, alone
    within 1 deg, is fitted (`~gammapy_cnn.profiles.fit_source`) over the true
    background: the width of a point source in energy-integrated counts of the
    file's responses, the reference of the finder's ``extension``.
    """
    from .profiles import fit_source

    widths = []
    for i in range(n):
        truth = reader.sources(i)
        if len(truth) == 0:
            continue
        for k, src in enumerate(truth):
            others = np.delete(np.arange(len(truth)), k)
            alone = all(np.hypot(src["x"] - truth["x"][j], src["y"] - truth["y"][j]) * reader.binsz > 1.0
                        for j in others)
            if src["morphology"] == 0 and src["npred"] >= min_counts and alone:
                counts = reader.counts(i).sum(axis=0)
                background = reader.background(i).sum(axis=0)
                fit = fit_source(counts, background, src["x"], src["y"], 0.2 / reader.binsz)
                widths.append(fit["sigma"] * reader.binsz)
    return float(np.median(widths)) if widths else 0.06


def calibrate_finder(network, data, background="default", match_radius=0.15, target_rate=0.02,
                     max_maps=None, progress=True, rescue_score=0.3, rescue_significance=5.0):
    """Measure the false-alarm rate of a finder network's scores and store it in its card.

    Runs `~gammapy_cnn.CNNSourceFinder` at a low threshold on simulated maps
    held out from training; a candidate farther than ``match_radius`` (deg),
    widened in quadrature by the source's size (`source_radius`), from every
    true source is false. The card gets ``calibration``: scores and
    false candidates per field with at least that score, and
    ``default_threshold``, the lowest score at which that rate is at most
    ``target_rate``; and ``pos_err_scale``, the factor that makes the
    position errors of the matched candidates above that threshold cover
    their true errors (68% of them within ``pos_err_68``): the Fisher error
    of the fit is too small (by 30% for the shipped finder), since the
    fitted profile is not the true PSF and the background is estimated;
    and ``psf_sigma_deg``, the width of a point source (`point_source_width`),
    the reference of the finder's ``extension`` and ``ts_ext``.

    The scores are calibrated alone (``min_significance=0``); the card then
    records what the trials floor (`CNNSourceFinder.min_significance`, from
    ``target_rate``) removes above the threshold: ``floor_false_per_field``
    and ``n_true_candidates_below_floor``.

    It also measures the second detection rule (`CNNSourceFinder.rescue_rule`):
    peaks with a score between ``rescue_score`` and the threshold whose local
    fit gives sqrt(TS) >= ``rescue_significance``. The card records the rule
    and its false (``rescue_false_per_field``) and true candidates; pass
    ``rescue_significance=None`` to ship a network without it.

    Returns
    -------
    calibration : dict
    """
    from astropy.coordinates import SkyCoord
    from gammapy.datasets import MapDataset
    from gammapy.maps import Map, MapAxis, WcsGeom
    from scipy.stats import norm
    from tqdm.auto import tqdm

    from .finders import POSITIONS_PER_FIELD, CNNSourceFinder

    reader = SimulationReader(data)
    n = len(reader) if max_maps is None else min(len(reader), max_maps)
    psf_sigma = point_source_width(reader, n)
    finder = CNNSourceFinder(network=network, background_network=background, threshold=0.05,
                             max_candidates=100, pos_err_scale=1.0, rescue=False, min_significance=0,
                             psf_sigma=psf_sigma * u.deg)
    energy = MapAxis.from_energy_edges(reader.energy_edges, unit="TeV", name="energy")
    npix = reader.counts(0).shape[-1]
    false_scores, true_scores, true_error_ratio = [], [], []
    false_significance, true_significance = [], []
    for i in tqdm(range(n), disable=not progress, desc="calibrate"):
        row = reader.maps[i]
        geom = WcsGeom.create(skydir=(row["pointing_ra"], row["pointing_dec"]), npix=npix,
                              binsz=reader.binsz, frame="icrs", proj="TAN", axes=[energy])
        dataset = MapDataset(counts=Map.from_geom(geom, data=reader.counts(i).astype(float)))
        table = finder.run(dataset)
        truth = reader.sources(i)
        if len(table) == 0:
            continue
        cand = SkyCoord(table["RA"], table["DEC"], unit="deg")
        if len(truth):
            sep = cand[:, None].separation(SkyCoord(truth["ra"], truth["dec"], unit="deg")[None, :])
            # a candidate within an extended source's extent belongs to it
            radius = np.hypot(match_radius, source_radius(truth))
            matched = (sep.deg < radius[None, :]).any(axis=1)
            true_error_ratio.extend(sep.deg.min(axis=1)[matched] / table["pos_err_68"][matched])
        else:
            matched = np.zeros(len(table), bool)
        false_scores.extend(table["score"][~matched])
        true_scores.extend(table["score"][matched])
        false_significance.extend(table["significance"][~matched])
        true_significance.extend(table["significance"][matched])
    reader.close()
    scores = np.linspace(0.05, 1.0, 96)
    false_scores = np.asarray(false_scores)
    rate = np.array([(false_scores >= s).sum() / n for s in scores])
    ok = np.nonzero(rate <= target_rate)[0]
    threshold = float(scores[ok[0]]) if len(ok) else 1.0
    above = np.asarray(true_scores) >= threshold
    ratio = np.asarray(true_error_ratio)[above]
    floor = float(norm.isf(target_rate / POSITIONS_PER_FIELD))
    false_above = false_scores >= threshold
    calibration = dict(
        score=scores.round(4).tolist(), false_per_field=rate.round(5).tolist(),
        default_threshold=threshold, target_false_per_field=target_rate, n_fields=int(n),
        match_radius_deg=match_radius, data=Path(data).name,
        n_true_candidates_above_threshold=int(above.sum()),
        pos_err_scale=float(np.percentile(ratio, 68)) if len(ratio) else 1.0,
        psf_sigma_deg=psf_sigma,
        min_significance=floor,
        floor_false_per_field=float((false_above & (np.asarray(false_significance) < floor)).sum() / n),
        n_true_candidates_below_floor=int((above & (np.asarray(true_significance) < floor)).sum()),
        # significances (and so the rescue rule) include the background's systematic error
        systematics=finder.systematics,
    )
    if rescue_significance is not None:
        def in_rescue_zone(scores, significance):
            scores, significance = np.asarray(scores), np.asarray(significance)
            return ((scores >= rescue_score) & (scores < threshold)
                    & (significance >= rescue_significance))

        calibration.update(
            rescue_score=float(rescue_score), rescue_significance=float(rescue_significance),
            rescue_false_per_field=float(in_rescue_zone(false_scores, false_significance).sum() / n),
            n_true_candidates_rescued=int(in_rescue_zone(true_scores, true_significance).sum()),
        )
    path = finder.network_.path
    card = dict(finder.network_.card, calibration=calibration)
    write_card(path, card)
    return calibration


def write_card(network_path, card):
    """Write (atomically) the model card ``.json`` beside a network."""
    path = Path(network_path).with_suffix(".json")
    write_text_atomic(path, json.dumps(card, indent=1, default=float))
