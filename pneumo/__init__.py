"""pneumo: pneumonia detection on chest X-rays with a Keras ResNet-50, explained by heatmaps."""

__version__ = "0.1.0"

from .errors import BundleError, ConfigError, DataError, ImageError, PneumoError, WeightsError

__all__ = [
    "__version__", "BundleError", "ConfigError", "DataError", "ImageError", "PneumoError",
    "WeightsError", "Predictor", "PredictionResult",
]


def __getattr__(name):
    # Lazy: `import pneumo` must not pull in TensorFlow (the dashboard's metric pages don't).
    if name in ("Predictor", "PredictionResult"):
        from . import predict

        return getattr(predict, name)
    raise AttributeError(name)
