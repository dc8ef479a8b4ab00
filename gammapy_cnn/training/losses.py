"""Losses of the networks, registered so that saved ``.keras`` files name them."""

from ..networks import quiet_tensorflow

__all__ = ["background_loss", "heatmap_focal_loss", "offset_loss"]

keras = quiet_tensorflow()
ops = keras.ops


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
