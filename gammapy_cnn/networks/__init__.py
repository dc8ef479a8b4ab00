"""The networks: architectures, shipped weights with model cards, safe loading.

This is the only package that imports TensorFlow, and only when a network is
first built or loaded, so ``import gammapy_cnn`` stays fast and quiet.

A network file ``NAME.keras`` always travels with its model card
``NAME.json`` (written by the training code): the architecture, the
preprocessing version and pixel size it was trained with, how it was trained
and how well it does, and the SHA-256 of the ``.keras`` file. Loading checks
all of them and loads with Keras safe mode (no Lambda layers, no pickles).
"""

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

__all__ = ["Network", "load_network", "shipped_networks", "sha256", "quiet_tensorflow"]

KINDS = ("cleaner", "finder")


def quiet_tensorflow():
    """Import TensorFlow/Keras without its start-up noise; returns keras."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # oneDNN prints a banner that no log level silences, and reorders float sums
    # (non-deterministic results); set TF_ENABLE_ONEDNN_OPTS=1 to trade both for speed.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import absl.logging  # noqa: F401  (TF logs through absl)
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

    def __init__(self, model, card, path=None):
        self.model = model
        self.card = card
        self.path = path
        self._predict = None

    @property
    def architecture(self):
        return self.card["architecture"]

    def predict(self, x, batch_size=64):
        """Run the network on a batch (numpy in, numpy out), deterministically."""
        import numpy as np
        import tensorflow as tf

        if self._predict is None:
            self._predict = tf.function(lambda t: self.model(t, training=False), reduce_retracing=True)
        outputs = []
        for start in range(0, len(x), batch_size):
            out = self._predict(tf.constant(x[start : start + batch_size]))
            outputs.append(tf.nest.map_structure(lambda t: t.numpy(), out))
        if isinstance(outputs[0], dict):
            return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
        return np.concatenate(outputs)


def _resolve(kind, network):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    name = str(network)
    if name.endswith(".keras") or os.sep in name or Path(name).exists():
        path = Path(name).expanduser()
        if path.suffix != ".keras":
            raise ValueError(f"network file {path} must be a .keras file")
        return path, False
    path = weights_dir() / f"{kind}_{name}.keras"
    if not path.is_file():
        raise ValueError(
            f"no shipped {kind} network named {name!r}; shipped: {shipped_networks(kind)} "
            "(or give the path of a .keras file)"
        )
    return path, True


def read_card(path):
    card_path = Path(path).with_suffix(".json")
    if not card_path.is_file():
        raise ValueError(
            f"network {path} has no model card {card_path.name} beside it; refusing a network "
            "whose preprocessing is unknown"
        )
    try:
        return json.loads(card_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"model card {card_path} is not valid JSON: {error}") from None


def load_network(kind, network="default", expect_architecture=None):
    """Load a shipped network by name, or a ``.keras`` file with its card.

    Parameters
    ----------
    kind : {"cleaner", "finder"}
    network : str or `~pathlib.Path`
        Shipped name (``"default"``, ``"seed"``) or path of a ``.keras`` file.
    expect_architecture : str, optional
        Refuse a network of another architecture.

    Returns
    -------
    network : `Network`
    """
    from ..preprocessing import NATIVE_BINSZ, PREPROCESSING_VERSION

    path, shipped = _resolve(kind, network)
    if not path.is_file():
        raise FileNotFoundError(f"network file {path} does not exist")
    card = read_card(path)
    if card.get("kind") != kind:
        raise ValueError(f"{path} is a {card.get('kind')!r} network, not a {kind!r} one")
    if expect_architecture and card.get("architecture") != expect_architecture:
        raise ValueError(f"{path} has architecture {card.get('architecture')!r}, "
                         f"expected {expect_architecture!r}")
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
    return Network(model, card, path)
