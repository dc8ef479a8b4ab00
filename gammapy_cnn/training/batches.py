"""Batches of network inputs and targets, streamed from a simulation file and augmented."""

import numpy as np

from ..networks import quiet_tensorflow
from ..preprocessing import FINDER_STRIDE, NATIVE_BINSZ, normalise, original_stretch, pad
from .targets import finder_targets, source_radius, source_significance

__all__ = ["MapBatches", "with_random_holes"]

keras = quiet_tensorflow()


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
