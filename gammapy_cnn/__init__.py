"""gammapy-cnn: deep-learning background estimation and source finding for gammapy."""

__version__ = "0.1.0"
