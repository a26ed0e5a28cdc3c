"""Errors a user can cause. The CLI prints them as one line (no traceback) and exits with 2.

Every message names the offending file or key and says how to fix it.
"""


class FusionlabError(Exception):
    """Base class for user-facing errors."""


class ConfigError(FusionlabError):
    """A YAML file or override is wrong: unknown key, bad value, bad reference."""


class DataError(FusionlabError):
    """Input images are missing, unpaired, unreadable or inconsistent."""


class WeightsMissingError(FusionlabError):
    """Pretrained weights could not be found locally and cannot be downloaded."""


class PipelineError(FusionlabError):
    """The runner cannot proceed: missing upstream artifact, locked run dir, failed stage."""
