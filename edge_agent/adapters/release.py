"""What the host says about a published adapter: the custom metadata of its TUF target.

The host signs this record inside the TUF ``targets`` metadata, next to the file's hashes and
length, so a device knows, before it downloads a byte, which base model the adapter belongs to,
which skill (toolset) it serves, which device profiles it was gated for, which cluster
centroids its training traffic formed (the router's in-distribution signal) and a small
labelled canary set it must pass on the device before it replaces the current adapter.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.types import ToolCall


class CanaryCall(BaseModel):
    """One labelled request of the canary set: the words, the context block, the call."""

    model_config = ConfigDict(frozen=True)

    text: str
    name: str  # the expected tool
    arguments: dict[str, Any] = Field(default_factory=dict)
    context: str | None = None  # the context block the request was asked with, if any

    @property
    def call(self) -> ToolCall:
        """The expected call, as a skill's scorer compares it."""
        return ToolCall(name=self.name, arguments=dict(self.arguments))


class AdapterRelease(BaseModel):
    """One adapter version as published: the custom metadata of its TUF target."""

    model_config = ConfigDict(frozen=True)

    name: str  # e.g. "home-v3": skill and version, unique in the repository
    skill: str  # the skill it was trained for: devices running that skill pull it
    version: int = Field(ge=1)
    base_identity: dict[str, Any]  # BaseModelIdentity.as_dict() of the base it was trained on
    target_profiles: list[str] = Field(default_factory=list)
    embedder: str | None = None  # which embedder produced the centroids
    centroids: list[list[float]] = Field(default_factory=list)
    cluster_names: list[str] = Field(default_factory=list)
    canary: list[CanaryCall] = Field(default_factory=list)
    gate: dict[str, Any] = Field(default_factory=dict)  # the host gate's summary, for `list`

    @property
    def target_path(self) -> str:
        """Where the file lives in the TUF repository's targets."""
        return f"adapters/{self.skill}/{self.name}.gguf"
