"""Typed errors of the contract layer.

Every problem a user can cause has its own class with a message that names the
file, field or input at fault. `serve.errors` maps these to HTTP status codes in
one place; the CLI turns them into a message and a non-zero exit.
"""


class KidsArtError(Exception):
    """Base class for every error this project raises on purpose."""

    kind = "error"


class ConfigError(KidsArtError):
    """A rubric, profile, manifest or deployment set is missing or invalid."""

    kind = "config_error"


class InputError(KidsArtError):
    """Something a caller sent is not acceptable (maps to HTTP 4xx)."""

    kind = "invalid_input"


class ImageDecodeError(InputError):
    """The bytes are not a decodable image (empty, truncated, not an image)."""

    kind = "invalid_image"


class ImageTooLargeError(InputError):
    """The image exceeds the configured byte or pixel limit."""

    kind = "image_too_large"


class UnknownDimensionError(InputError):
    """A requested dimension is not part of the rubric."""

    kind = "unknown_dimension"


class FeedbackNotDeployedError(InputError):
    """Feedback was asked of a deployment that has no feedback adapter."""

    kind = "feedback_not_deployed"


class ScoreDistributionError(KidsArtError):
    """The engine returned logprobs from which no valid score can be read."""

    kind = "invalid_distribution"


class DatasetError(InputError):
    """A training or evaluation dataset is malformed (missing images, bad or missing scores)."""

    kind = "invalid_dataset"
