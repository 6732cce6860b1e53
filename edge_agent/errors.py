"""Every error edge-agent raises on purpose.

    EdgeAgentError
    ├── ConfigError                 settings file, environment or flags are wrong
    │   ├── UnknownProfileError     no device profile by that name
    │   ├── UnknownToolsetError     no toolset registered by that name
    │   ├── InventoryError          a home inventory or state file cannot be read
    │   └── DatasetError            a benchmark data file (BFCL) is missing or malformed
    ├── ModelError
    │   ├── ModelNotFoundError      not in the catalog, not on disk, not pullable offline
    │   ├── InvalidModelFileError   corrupt / truncated GGUF or embedder folder, wrong hash
    │   ├── ModelDoesNotFitError    the model needs more memory than the profile allows
    │   └── BackendError            the inference engine failed to load or generate
    │       ├── ContextLengthError  the prompt does not fit the model's context window
    │       └── UnsupportedSchemaError  output cannot be held to this JSON schema: malformed,
    │                               unsupported, or past a limit (the message names it)
    ├── AdapterError
    │   ├── InvalidAdapterError     the adapter file itself is broken
    │   ├── AdapterMismatchError    the adapter belongs to another base model
    │   ├── AdapterRejectedError    a pulled adapter failed its canary on this device; the
    │   │                           last known good adapter stays
    │   └── AdapterVerificationError  a downloaded adapter or its TUF metadata failed
    │                               verification (signature, hash, length, rollback,
    │                               expiry, mix-and-match, oversize); nothing installed
    ├── ToolError                   a tool call could not be made, or the tool failed
    │   ├── ToolDefinitionError     a tool or toolset is defined wrongly (signature, schema, name)
    │   ├── UnknownToolError        the call names a tool the toolset does not have
    │   ├── ToolArgumentsError      the call's arguments fail the tool's schema
    │   ├── ToolTimeoutError        the tool ran past its timeout
    │   └── ToolExecutionError      the tool raised; the message is what the model is told
    │       ├── HomeTargetError     no entity, area, floor, timer or list matches the call
    │       └── HomeUnavailableError  Home Assistant did not answer in time (down, restarting,
    │           │                   unreachable): the next call tries again
    │           └── HomeAuthError   Home Assistant refused the access token (401/403)
    ├── PolicyError                 the permission policy stopped a call
    │   ├── PermissionDeniedError   denied: not enabled, a deny rule, or not asked for
    │   └── ConfirmationRequiredError  allowed only after the user confirms
    ├── AgentError
    │   ├── AgentFailedError        a turn ended without an answer (invalid call after
    │   │                           repair, step limit, cancelled): the router may escalate
    │   └── TurnTimeoutError        a turn ran past turn_deadline_s; it is logged, and a
    │                               call that already ran is neither undone nor repeated
    ├── LogError                    the interaction log cannot be opened, read or written
    │   ├── LogKeyError             wrong or missing master key / passphrase; nothing written
    │   ├── LogIntegrityError       a record or the database failed its checks (tampered,
    │   │   │                       truncated, damaged): `edge-agent log verify` lists them
    │   │   └── SealError           one sealed value failed to open (tampered, moved,
    │   │                           truncated, wrong key; Shredded: its key was deleted)
    │   └── LogFullError            the disk (or the log's page limit) is full: the record
    │                               was dropped and counted in `edge-agent log status`
    ├── SyncError                   sync is off, or a push to the host failed; nothing synced
    │   ├── EnrollmentError         not enrolled, enrollment refused (token used, expired or
    │   │                           wrong), or the host no longer accepts this device's
    │   │                           credential: run `edge-agent sync enroll` again
    │   ├── PinMismatchError        the host's certificate is not the one pinned at
    │   │                           enrollment: nothing was sent (a changed host, or a MITM)
    │   ├── HostUnreachableError    the host did not answer, or kept failing, within the
    │   │                           retries; records stay unsynced for the next run
    │   └── BatchRejectedError      the host refused a batch as a whole (4xx); its records
    │                               stay on the device
    ├── FlywheelError               a host-side flywheel turn cannot run (too little curated
    │   │                           data, a missing host extra); nothing is promoted
    │   ├── PublishError            the adapter repository refused a publish (not a
    │   │                           repository, name taken, key missing); nothing changed
    │   └── JobClusterError         the cluster for training jobs cannot be reached or
    │                               started (a wrong --ray address, ray not installed)
    ├── RemoteError                 the remote model gave no usable answer; the turn ran on
    │   │                           the local model instead (marked local_fallback)
    │   ├── RemoteUnavailableError  unreachable, timed out, 5xx, or skipped while its circuit
    │   │                           breaker is open after a failure: check remote_url
    │   ├── RemoteAuthError         the endpoint refused the API key (401/403): check
    │   │                           remote_api_key_env or the keyring entry
    │   ├── RemoteModelError        the endpoint does not serve remote_model
    │   └── RemoteResponseError     a malformed answer: not JSON, a broken tool call, an
    │                               unknown tool, or a tag the device never sent
    └── QuantizeError               a model variant could not be built or measured (an
                                    unsupported base, a failed quantize or ONNX build)

Each direct child of EdgeAgentError has its own CLI exit code, in the order drawn: 2 ConfigError,
3 ModelError, 4 AdapterError, 5 ToolError, 6 PolicyError, 7 AgentError, 8 LogError, 9 SyncError,
10 FlywheelError, 11 RemoteError, 12 QuantizeError; 1 for anything else edge-agent raises.

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


class UnknownToolsetError(ConfigError):
    pass


class InventoryError(ConfigError):
    pass


class DatasetError(ConfigError):
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


class ContextLengthError(BackendError):
    pass


class UnsupportedSchemaError(BackendError):
    pass


class AdapterError(EdgeAgentError):
    exit_code = 4


class InvalidAdapterError(AdapterError):
    pass


class AdapterMismatchError(AdapterError):
    pass


class AdapterVerificationError(AdapterError):
    pass


class AdapterRejectedError(AdapterError):
    pass


class ToolError(EdgeAgentError):
    exit_code = 5


class ToolDefinitionError(ToolError):
    pass


class UnknownToolError(ToolError):
    pass


class ToolArgumentsError(ToolError):
    pass


class ToolTimeoutError(ToolError):
    pass


class ToolExecutionError(ToolError):
    pass


class HomeTargetError(ToolExecutionError):
    pass


class HomeUnavailableError(ToolExecutionError):
    pass


class HomeAuthError(HomeUnavailableError):
    pass


class PolicyError(EdgeAgentError):
    exit_code = 6


class PermissionDeniedError(PolicyError):
    pass


class ConfirmationRequiredError(PolicyError):
    pass


class AgentError(EdgeAgentError):
    exit_code = 7


class AgentFailedError(AgentError):
    pass


class LogError(EdgeAgentError):
    exit_code = 8


class LogKeyError(LogError):
    pass


class LogIntegrityError(LogError):
    pass


class SealError(LogIntegrityError):
    """A sealed value failed to open (tampered, moved, truncated or the wrong key)."""


class LogFullError(LogError):
    pass


class SyncError(EdgeAgentError):
    exit_code = 9


class EnrollmentError(SyncError):
    pass


class PinMismatchError(SyncError):
    pass


class HostUnreachableError(SyncError):
    pass


class BatchRejectedError(SyncError):
    pass


class FlywheelError(EdgeAgentError):
    exit_code = 10


class PublishError(FlywheelError):
    pass


class JobClusterError(FlywheelError):
    pass


class RemoteError(EdgeAgentError):
    exit_code = 11


class RemoteUnavailableError(RemoteError):
    pass


class RemoteAuthError(RemoteError):
    pass


class RemoteModelError(RemoteError):
    pass


class RemoteResponseError(RemoteError):
    pass


class QuantizeError(EdgeAgentError):
    exit_code = 12


class TurnTimeoutError(AgentError):
    """A turn ran past its deadline; ``result`` is the turn as logged (outcome "timeout")."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result
