"""Every error edge-agent raises on purpose.

    EdgeAgentError
    ├── ConfigError                 settings file, environment or flags are wrong
    │   └── UnknownProfileError     no device profile by that name
    ├── ModelError
    │   ├── ModelNotFoundError      not in the catalog, not on disk, not pullable offline
    │   ├── InvalidModelFileError   corrupt / truncated GGUF, wrong hash
    │   ├── ModelDoesNotFitError    the model needs more memory than the profile allows
    │   └── BackendError            the inference engine failed to load or generate
    └── AdapterError
        ├── InvalidAdapterError     the adapter file itself is broken
        └── AdapterMismatchError    the adapter belongs to another base model

Messages say what went wrong *and what to do next*; the CLI prints them as one line.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base class: catch this to handle anything edge-agent raises deliberately."""

    exit_code = 1


class ConfigError(EdgeAgentError):
    exit_code = 2


class UnknownProfileError(ConfigError):
    pass


class ModelError(EdgeAgentError):
    exit_code = 3


class ModelNotFoundError(ModelError):
    pass


class InvalidModelFileError(ModelError):
    pass


class ModelDoesNotFitError(ModelError):
    pass


class BackendError(ModelError):
    pass


class AdapterError(EdgeAgentError):
    exit_code = 4


class InvalidAdapterError(AdapterError):
    pass


class AdapterMismatchError(AdapterError):
    pass
