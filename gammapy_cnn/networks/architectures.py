"""Network architectures as small builder functions.

Two families:

- ``original``: the original CNN-Cleaner and CNN-Regressor exactly as described
  in the conference talk (see ``docs/design.rst``). They are kept as the
  baseline every claim is compared with. Their former name ``seed`` is an
  alias (`~gammapy_cnn.networks.canonical_name`).
- ``default``: our fully convolutional networks. They take any map whose
  sides are multiples of `PAD_MULTIPLE` pixels (the preprocessing pads), work
  on the counts scale (input divided by the mean counts per pixel, with that
  level given as a context channel) and predict physical quantities:

  * background network: the expected background counts relative to the
    level, estimated on 0.2 deg cells and interpolated (a background is
    smooth; sources are narrower than a cell and are ignored by learning);
  * finder network: a CenterNet-style heatmap of source probability on
    0.1 deg cells plus a sub-cell offset of the source position.
"""

from ..preprocessing import BACKGROUND_STRIDE, FINDER_STRIDE, PAD_MULTIPLE
from . import ALIASES, ORIGINAL, quiet_tensorflow

keras = quiet_tensorflow()
layers = keras.layers

__all__ = [
    "PAD_MULTIPLE",
    "FINDER_STRIDE",
    "build_background_network",
    "build_finder_network",
    "build_original_cleaner",
    "build_original_regressor",
]


def _conv(x, filters, name, kernel=3, activation="relu"):
    return layers.Conv2D(filters, kernel, padding="same", activation=activation, name=name)(x)


def build_original_cleaner(size=200):
    """The original CNN-Cleaner: a convolutional autoencoder on [0, 1] maps."""
    inp = keras.Input((size, size, 1), name="stretched_counts")
    x = layers.Conv2D(12, 2, padding="same", activation="relu", name="enc1")(inp)
    x = layers.AveragePooling2D(2, name="pool1")(x)
    x = layers.Conv2D(12, 2, padding="same", activation="relu", name="enc2")(x)
    x = layers.AveragePooling2D(2, name="pool2")(x)
    x = layers.Conv2D(12, 2, padding="same", activation="relu", name="dec1")(x)
    x = layers.UpSampling2D(2, name="up1")(x)
    x = layers.Conv2D(12, 2, padding="same", activation="relu", name="dec2")(x)
    x = layers.UpSampling2D(2, name="up2")(x)
    out = layers.Conv2D(1, 2, padding="same", activation="sigmoid", name="cleaned")(x)
    return keras.Model(inp, out, name="original_cleaner")


def build_original_regressor(size=200):
    """The original CNN-Regressor: one (x, y) in [0, 1] per map."""
    inp = keras.Input((size, size, 1), name="cleaned")
    x = layers.Conv2D(6, 4, padding="same", activation="relu", name="conv0")(inp)
    x = layers.MaxPooling2D(2, name="pool0")(x)
    for i in range(1, 5):
        x = layers.Conv2D(12, 2, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Dropout(0.2, name="drop1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(10000, activation="relu", name="dense")(x)
    x = layers.Dropout(0.2, name="drop2")(x)
    out = layers.Dense(2, activation="sigmoid", name="position")(x)
    return keras.Model(inp, out, name="original_regressor")


def _encoder(inp, widths, prefix):
    """Pool by 4, then conv blocks halving the resolution; returns the skips."""
    x = layers.AveragePooling2D(FINDER_STRIDE, name=f"{prefix}_pool_in")(inp)
    skips = []
    for i, width in enumerate(widths):
        if i:
            x = layers.AveragePooling2D(2, name=f"{prefix}_pool{i}")(x)
        x = _conv(x, width, f"{prefix}_enc{i}a")
        x = _conv(x, width, f"{prefix}_enc{i}b")
        skips.append(x)
    return skips


def _decoder(skips, widths, prefix, stop):
    """Upsample and merge skips until the skip of index ``stop``."""
    x = skips[-1]
    for i in range(len(skips) - 2, stop - 1, -1):
        x = layers.UpSampling2D(2, name=f"{prefix}_up{i}")(x)
        x = layers.Concatenate(name=f"{prefix}_cat{i}")([x, skips[i]])
        x = _conv(x, widths[i], f"{prefix}_dec{i}")
    return x


def build_background_network(widths=(8, 16, 32, 32), channels=3):
    """Background network: counts/level -> expected background / level.

    Input channels: counts divided by the mean counts per pixel, the
    validity mask, log10 of the level (constant). Output: one channel, the
    expected background per pixel divided by the level.
    """
    inp = keras.Input((None, None, channels), name="normalised_counts")
    skips = _encoder(inp, widths, "bkg")
    x = _decoder(skips, widths, "bkg", stop=1)  # 1/8 resolution: 0.2 deg cells
    log_ratio = layers.Conv2D(1, 1, name="bkg_log_ratio")(x)
    x = layers.UpSampling2D(BACKGROUND_STRIDE, interpolation="bilinear", name="bkg_upsample")(
        log_ratio
    )
    out = layers.Activation("exponential", name="background")(x)
    return keras.Model(inp, out, name="background_network")


def build_finder_network(widths=(12, 24, 32), channels=3):
    """Finder network: counts/level -> heatmap and sub-cell offsets.

    Outputs on cells of `FINDER_STRIDE` pixels: ``heatmap`` (probability that a
    source centre falls in the cell) and ``offset`` (x, y of the source inside
    the cell, in cells, relative to the cell centre).
    """
    inp = keras.Input((None, None, channels), name="normalised_counts")
    skips = _encoder(inp, widths, "find")
    x = _decoder(skips, widths, "find", stop=0)
    heat = _conv(x, 16, "heat_hidden")
    heatmap = layers.Conv2D(
        1, 1, activation="sigmoid", name="heatmap",
        bias_initializer=keras.initializers.Constant(-4.0),  # CenterNet prior: sources are rare
    )(heat)
    offset = layers.Conv2D(2, 1, name="offset")(_conv(x, 16, "offset_hidden"))
    return keras.Model(inp, {"heatmap": heatmap, "offset": offset}, name="finder_network")


ARCHITECTURES = {
    ("cleaner", ORIGINAL): build_original_cleaner,
    ("cleaner", "default"): build_background_network,
    ("finder", ORIGINAL): build_original_regressor,
    ("finder", "default"): build_finder_network,
}
# the former name of the original architecture (training recipes may still say ``seed``)
ARCHITECTURES.update({(kind, alias): ARCHITECTURES[(kind, name)]
                      for alias, name in ALIASES.items() for kind in ("cleaner", "finder")})
