"""The exceptions pneumo raises on purpose.

Every input a user can get wrong ends in one of these, with a message that says what was
received and what to do. Anything else escaping the library is a bug.
"""


class PneumoError(Exception):
    """Base class of every error pneumo raises deliberately."""


class ImageError(PneumoError, ValueError):
    """The input is not an image pneumo can read (empty, truncated, unsupported, too large...)."""


class DataError(PneumoError, ValueError):
    """A dataset path or manifest is missing, malformed or has no usable images."""


class BundleError(PneumoError):
    """A model bundle is missing, corrupt, tampered with or from an incompatible version."""


class ConfigError(PneumoError, ValueError):
    """A config file has an unknown key, a wrong type or an invalid value."""


class WeightsError(PneumoError):
    """Backbone weights could not be obtained (no internet for `imagenet`, missing file)."""
