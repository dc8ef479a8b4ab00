"""One map at a time through LiteRT: TensorFlow's per-call overhead, removed.

A real-time system runs the networks on one map per call. TensorFlow spends
most of such a call in its own machinery: the default cleaner takes ~1.9 ms
on a 224 x 224 map on a 2-core CPU, for 18 M multiply-adds. LiteRT (the
TensorFlow Lite interpreter, package ``ai-edge-litert``) runs the same graph,
its weights frozen into constants, in ~0.6 ms; the finder network 1.1 ms
against 2.5 ms. The outputs agree with TensorFlow's to float32 rounding
(largest difference 3e-7 on outputs of order 1) and are the same, to the
last bit, from one call to the next and for any number of threads.

`~gammapy_cnn.networks.Network.predict` uses it for a single map of at most
`MAX_PIXELS` pixels. Batches stay with TensorFlow, which is as fast there
per map (and uses a GPU where there is one), and so do large maps, whose
interpreter would keep its activation memory for as long as it is cached.
Each network keeps `~gammapy_cnn.networks.Network.max_lite_runners`
interpreters, one per input shape (~25-30 MB each for a 224 x 224 or a
512 x 512 map). Without the package (it has no Windows wheels), or for a graph LiteRT cannot
convert (the network is then run by TensorFlow, with a warning), nothing else
changes.
"""

import os
import threading
import warnings

__all__ = ["MAX_PIXELS", "LiteRunner", "lite_runner"]

#: Largest single map (input pixels, padding included) run through LiteRT.
MAX_PIXELS = 512 * 512


class LiteRunner:
    """A Keras model frozen and converted for one input shape, callable like the model.

    Parameters
    ----------
    model : `keras.Model`
    shape : tuple of int
        The input shape (batch axis included) it is converted for.
    """

    def __init__(self, model, shape):
        import tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        from . import _native_stderr_silenced

        traced = tf.function(lambda t: model(t, training=False)).get_concrete_function(
            tf.TensorSpec(shape, tf.float32))
        # frozen: the converter otherwise keeps some models' weights as variables, read
        # (and transposed) at every call
        frozen = convert_variables_to_constants_v2(traced)
        content = tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert()
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        with _native_stderr_silenced():  # the delegate's banner
            # every core, as TensorFlow uses them (LiteRT's default is one thread)
            self._interpreter = Interpreter(model_content=content, num_threads=threads)
            self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = {detail["name"]: detail["index"] for detail in self._interpreter.get_output_details()}
        # the converted outputs keep the names of the graph's output tensors (the frozen
        # function flattens a dict of outputs: the structure comes from the traced one)
        self._structure = traced.structured_outputs
        self._outputs = [outputs[t.name.split(":")[0]] for t in tf.nest.flatten(self._structure)]
        self._lock = threading.Lock()  # an interpreter is not thread-safe

    def __call__(self, x):
        import tensorflow as tf

        with self._lock:
            self._interpreter.set_tensor(self._input, x)
            self._interpreter.invoke()
            flat = [self._interpreter.get_tensor(index) for index in self._outputs]  # copies
        return tf.nest.pack_sequence_as(self._structure, flat)


def lite_runner(model, shape):
    """A `LiteRunner`, or None where LiteRT is not installed or cannot convert the model."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return None
    try:
        return LiteRunner(model, shape)
    except Exception as error:  # the converter raises many types
        warnings.warn(f"LiteRT cannot run this network ({type(error).__name__}: {error}); "
                      "TensorFlow runs it instead", RuntimeWarning, stacklevel=3)
        return None
