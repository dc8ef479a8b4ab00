"""The networks: architectures, shipped weights with model cards, safe loading.

This is the only package that imports TensorFlow, and only when a network is
first built or loaded, so ``import gammapy_cnn`` stays fast and quiet.

A network file ``NAME.keras`` always travels with its model card
``NAME.json`` (written by the training code): the architecture, the
preprocessing version and pixel size it was trained with, how it was trained
and how well it does, and the SHA-256 of the ``.keras`` file. Loading checks
all of them and loads with Keras safe mode (no Lambda layers, no pickles).

Names: ``default`` is our architecture and shipped network; ``original`` is
the original CNN-Cleaner/CNN-Regressor of the talk, kept as the baseline. Its
former name ``seed`` is still accepted, without a warning, wherever a network
or an architecture name is read (`load_network`, ``expect_architecture``, a
card written by older code); `canonical_name` maps it. It will go after one
release, once no caller uses it.

A loaded network is cached per file (resolved path, size and modification
time), so a new maker or finder neither re-hashes nor reloads it. The cached
`Network` is shared: nobody may train, compile or change it; code that does
(fine-tuning, evaluation with a loss) works on `Network.clone_model`.
"""

import contextlib
import functools
import hashlib
import json
import os
import sys
import threading
from importlib import resources
from pathlib import Path

__all__ = ["Network", "canonical_name", "load_network", "shipped_networks", "sha256", "quiet_tensorflow"]

KINDS = ("cleaner", "finder")
#: Architecture (and shipped network) of the original CNN-Cleaner/Regressor.
ORIGINAL = "original"
#: Former names still accepted for a network or an architecture.
ALIASES = {"seed": ORIGINAL}


def canonical_name(name):
    """The current name of a shipped network or architecture (``"seed"`` -> ``"original"``)."""
    return ALIASES.get(name, name)


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null: C++ start-up banners bypass Python's stderr."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow():
    """Import TensorFlow/Keras without its start-up noise; returns keras.

    TensorFlow's oneDNN CPU kernels stay on (2-3x faster inference here) and
    their banner, which no log level silences, is swallowed during the import.
    Set ``TF_ENABLE_ONEDNN_OPTS=0`` for bit-reproducible training across machines.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if "tensorflow" not in sys.modules:
        with _native_stderr_silenced():
            import tensorflow  # noqa: F401
    import absl.logging  # TF logs through absl
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    absl.logging.set_verbosity("error")
    return keras


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_dir():
    return Path(str(resources.files("gammapy_cnn.networks") / "weights"))


def shipped_networks(kind):
    """Names of the shipped networks of one kind (``cleaner`` or ``finder``)."""
    return sorted(p.stem.split("_", 1)[1] for p in weights_dir().glob(f"{kind}_*.keras"))


class Network:
    """A loaded network and its model card.

    Attributes
    ----------
    model : `keras.Model`
    card : dict
        The model card.
    path : `~pathlib.Path`
    """

    #: Images with a side longer than ``tile_size + 2 * tile_margin`` pixels run
    #: in tiles, so memory does not grow with the map (the default networks are
    #: fully convolutional).
    tile_size = 1024
    #: Overlap of the tiles on each side, in pixels: more than the radius of the
    #: default networks' receptive field (~170 pixels), so tiling changes nothing.
    tile_margin = 192
    #: Pixels per network call at most (batch size times image pixels).
    max_batch_pixels = 64 * 256**2
    #: Run single maps through LiteRT where it is installed (`~gammapy_cnn.networks.litert`).
    use_litert = True
    #: LiteRT interpreters kept per network (one per input shape; each holds its activations).
    max_lite_runners = 4

    def __init__(self, model, card, path=None):
        self.model = model
        self.card = card
        self.path = path
        self._traced = {}  # (shape, dtype, partner networks) of a call -> its traced graph
        self._lite = {}  # input shape -> LiteRunner (None: LiteRT cannot run it), oldest first
        self._lite_lock = threading.Lock()

    def clone_model(self):
        """A new Keras model with the same architecture and weights, free to train or compile.

        `model` itself is shared by every user of the cached network (see
        `load_network`) and must stay unchanged.
        """
        keras = quiet_tensorflow()
        model = keras.models.clone_model(self.model)
        model.set_weights(self.model.get_weights())
        return model

    @property
    def architecture(self):
        """``"default"`` or ``"original"`` (a card saying ``"seed"`` reads as ``"original"``)."""
        return canonical_name(self.card["architecture"])

    def predict(self, x, batch_size=64, together_with=()):
        """Run the network on a batch (numpy in, numpy out), deterministically.

        ``x`` is (n, ny, nx, channels). Large images (sides multiple of
        `~gammapy_cnn.preprocessing.PAD_MULTIPLE`) are run tile by tile with
        an overlap wider than the receptive field, so the result is that of a
        single call and memory stays bounded.

        A single map of at most `~gammapy_cnn.networks.litert.MAX_PIXELS`
        runs through LiteRT (`use_litert`; `~gammapy_cnn.networks.litert`),
        2-4x faster than a TensorFlow call, its output within float32
        rounding of TensorFlow's.

        ``together_with``: other networks that take the same input; the
        result is then a list, one output per network, this one first, each
        equal to the last bit to its own call. A single map goes through
        LiteRT network by network; otherwise they run in one TensorFlow graph
        call, where their independent graphs run side by side (for one
        200 x 200 map the default cleaner and finder take ~2.2 ms together
        against ~1.9 + 2.1 ms one after the other on 2 cores).
        """
        from ..preprocessing import PAD_MULTIPLE

        if together_with and self._lite_runner(x) is not None:
            # LiteRT runs one map through each network faster than TensorFlow runs them together
            return [network.predict(x) for network in (self, *together_with)]
        ny, nx = x.shape[1:3]
        if (self.architecture != ORIGINAL and max(ny, nx) > self.tile_size + 2 * self.tile_margin
                and ny % PAD_MULTIPLE == 0 and nx % PAD_MULTIPLE == 0
                and self.tile_size % PAD_MULTIPLE == 0 and self.tile_margin % PAD_MULTIPLE == 0):
            outputs = [self._predict_tiled(x)] + [network.predict(x) for network in together_with]
        else:
            outputs = self._predict_batches(x, batch_size, tuple(together_with))
        return outputs if together_with else outputs[0]

    def _predict_tiled(self, x):
        import numpy as np

        n, ny, nx = x.shape[:3]
        core, margin = self.tile_size, self.tile_margin
        full = None
        for y0 in range(0, ny, core):
            for x0 in range(0, nx, core):
                y1, x1 = min(y0 + core, ny), min(x0 + core, nx)
                ys = slice(max(y0 - margin, 0), min(y1 + margin, ny))
                xs = slice(max(x0 - margin, 0), min(x1 + margin, nx))
                out = self._predict_batches(x[:, ys, xs], batch_size=1)[0]
                parts = out if isinstance(out, dict) else {"": out}
                if full is None:
                    # input pixels per output pixel, per output (the finder's heatmap is coarser)
                    stride = {k: (ys.stop - ys.start) // v.shape[1] for k, v in parts.items()}
                    full = {k: np.empty((n, ny // stride[k], nx // stride[k]) + v.shape[3:], v.dtype)
                            for k, v in parts.items()}
                for k, v in parts.items():
                    s = stride[k]
                    full[k][:, y0 // s : y1 // s, x0 // s : x1 // s] = v[
                        :, (y0 - ys.start) // s : (y1 - ys.start) // s,
                        (x0 - xs.start) // s : (x1 - xs.start) // s]
        return full if not isinstance(out, np.ndarray) else full[""]

    def _predict_batches(self, x, batch_size, partners=()):
        """The outputs of this network and of ``partners`` (a list, this one first), batch by batch."""
        import numpy as np
        import tensorflow as tf

        networks = (self,) + partners
        batch_size = max(1, min(int(batch_size), self.max_batch_pixels // max(x.shape[1] * x.shape[2], 1)))
        batches = []
        for start in range(0, len(x), batch_size):
            runner = None if partners else self._lite_runner(x[start : start + batch_size])
            if runner is not None:
                batches.append([runner(x[start : start + batch_size])])
                continue
            tensor = tf.constant(x[start : start + batch_size])
            key = (tuple(tensor.shape), tensor.dtype, partners)
            if key not in self._traced:
                # One trace per input shape: a shape-generic trace fails in the bilinear
                # UpSampling2D of Keras 3 (symbolic sizes), i.e. on the second map size.
                call = tf.function(lambda t: [network.model(t, training=False) for network in networks])
                self._traced[key] = call.get_concrete_function(tf.TensorSpec.from_tensor(tensor))
            # the traced graph called directly: a fifth of a millisecond less per call than the tf.function
            batches.append(tf.nest.map_structure(lambda t: t.numpy(), self._traced[key](tensor)))

        def joined(parts):
            if isinstance(parts[0], dict):
                return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
            return np.concatenate(parts)

        return [joined([batch[i] for batch in batches]) for i in range(len(networks))]

    def _lite_runner(self, x):
        """The `~gammapy_cnn.networks.litert.LiteRunner` for the input ``x``, or None: it is
        not one float32 map of at most `~gammapy_cnn.networks.litert.MAX_PIXELS`, or LiteRT is
        not installed (or cannot run this network), or `use_litert` is off."""
        from . import litert

        if not self.use_litert or len(x) != 1 or x.dtype != "float32" or x.shape[1] * x.shape[2] > litert.MAX_PIXELS:
            return None
        with self._lite_lock:
            if x.shape not in self._lite:
                if len(self._lite) >= self.max_lite_runners:
                    del self._lite[next(iter(self._lite))]
                self._lite[x.shape] = litert.lite_runner(self.model, x.shape)
            return self._lite[x.shape]


def _resolve(kind, network):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    name = str(network)
    if name.endswith(".keras") or os.sep in name or Path(name).exists():
        path = Path(name).expanduser()
        if path.suffix != ".keras":
            raise ValueError(f"network file {path} must be a .keras file")
        return path, False
    path = weights_dir() / f"{kind}_{canonical_name(name)}.keras"
    if not path.is_file():
        raise ValueError(
            f"no shipped {kind} network named {name!r}; shipped: {shipped_networks(kind)} "
            "(or give the path of a .keras file)"
        )
    return path, True


def read_card(path, text=None):
    """The model card (a dict) of a ``.keras`` file; ``text``: its JSON text, if already read."""
    card_path = Path(path).with_suffix(".json")
    if text is None and not card_path.is_file():
        raise ValueError(
            f"network {path} has no model card {card_path.name} beside it; refusing a network "
            "whose preprocessing is unknown"
        )
    try:
        return json.loads(card_path.read_text() if text is None else text)
    except json.JSONDecodeError as error:
        raise ValueError(f"model card {card_path} is not valid JSON: {error}") from None


def load_network(kind, network="default", expect_architecture=None):
    """Load a shipped network by name, or a ``.keras`` file with its card.

    Parameters
    ----------
    kind : {"cleaner", "finder"}
    network : str or `~pathlib.Path`
        Shipped name (``"default"``, ``"original"``; ``"seed"`` is an alias of
        ``"original"``) or path of a ``.keras`` file.
    expect_architecture : str, optional
        Refuse a network of another architecture.

    Returns
    -------
    network : `Network`
        Cached per file: loading the same unchanged file again returns the
        same object, without hashing or loading it again. It is shared, so
        treat it as read-only: train or compile `Network.clone_model`.
    """
    path, _ = _resolve(kind, network)
    if not path.is_file():
        raise FileNotFoundError(f"network file {path} does not exist")
    path = path.resolve()
    stat = path.stat()
    # the card is small: its text is part of the key; the .keras file is known by its stat
    card_path = path.with_suffix(".json")
    card_text = card_path.read_text() if card_path.is_file() else None
    loaded = _load_checked(kind, path, (stat.st_ino, stat.st_size, stat.st_mtime_ns), card_text)
    if expect_architecture and loaded.architecture != canonical_name(expect_architecture):
        raise ValueError(f"{path} has architecture {loaded.card.get('architecture')!r}, "
                         f"expected {expect_architecture!r}")
    return loaded


@functools.lru_cache(maxsize=16)
def _load_checked(kind, path, file_stat, card_text):
    """Load and check one file; ``file_stat`` (inode, size, mtime) is part of the cache key only."""
    from ..preprocessing import PREPROCESSING_VERSION
    from ..utils import NATIVE_BINSZ

    card = read_card(path, card_text)
    if card.get("kind") != kind:
        raise ValueError(f"{path} is a {card.get('kind')!r} network, not a {kind!r} one")
    if card.get("preprocessing_version") != PREPROCESSING_VERSION:
        raise ValueError(
            f"{path} was trained with preprocessing version {card.get('preprocessing_version')}, "
            f"this code uses {PREPROCESSING_VERSION}: retrain or fine-tune it"
        )
    if abs(card.get("native_binsz_deg", -1) - NATIVE_BINSZ.to_value("deg")) > 1e-9:
        raise ValueError(f"{path} was trained on {card.get('native_binsz_deg')} deg pixels, "
                         f"this code resamples to {NATIVE_BINSZ}")
    digest = sha256(path)
    if card.get("sha256") != digest:
        raise ValueError(
            f"{path} does not match the SHA-256 in its model card (file corrupted or replaced)"
        )
    keras = quiet_tensorflow()
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # keras raises many types for a bad archive
        raise ValueError(f"cannot load network file {path}: {error}") from None
    _check_structure(model, kind, canonical_name(card.get("architecture")), path)
    return Network(model, card, path)


#: One probe input per architecture and the output shapes (without batch axis) it must give.
_PROBES = {
    ("cleaner", "default"): ((64, 64, 3), (64, 64, 1)),
    ("cleaner", ORIGINAL): ((200, 200, 1), (200, 200, 1)),
    ("finder", "default"): ((64, 64, 3), {"heatmap": (16, 16, 1), "offset": (16, 16, 2)}),
    ("finder", ORIGINAL): ((200, 200, 1), (2,)),
}


def _check_structure(model, kind, architecture, path):
    """Refuse a model that is not what its card says (e.g. a finder given a cleaner's card)."""
    import numpy as np

    if (kind, architecture) not in _PROBES:
        raise ValueError(f"{path}: unknown architecture {architecture!r} for a {kind} network")
    shape, expected = _PROBES[(kind, architecture)]
    try:
        out = model(np.zeros((1,) + shape, np.float32), training=False)
    except Exception as error:  # noqa: BLE001  (any failure means: not this architecture)
        raise ValueError(f"{path} does not take the input of a {architecture!r} {kind} network: "
                         f"{error}") from None
    if isinstance(out, dict):
        got = {k: tuple(v.shape[1:]) for k, v in out.items()}
    elif isinstance(out, (list, tuple)):
        got = [tuple(v.shape[1:]) for v in out]
    else:
        got = tuple(out.shape[1:])
    if got != expected:
        raise ValueError(f"{path} is not a {architecture!r} {kind} network: for an input of "
                         f"{shape} its outputs are {got}, expected {expected}")
