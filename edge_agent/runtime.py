"""Open the device runtime from settings: fit plan → model file → backend → toolset → agent.

What the CLI, the server and an embedding daemon share, so all three load a model the same
way. ``Runtime`` owns the backend; close it (or use ``with``) to free the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from edge_agent.agent import Agent, AgentConfig, ConfirmFn
from edge_agent.backends.base import Backend
from edge_agent.catalog import load_catalog
from edge_agent.plan import FitPlan, make_plan
from edge_agent.policy import Policy
from edge_agent.settings import Settings
from edge_agent.store import ModelStore
from edge_agent.tools import Toolset, get_toolset

if TYPE_CHECKING:
    from edge_agent.logstore import LogStore


@dataclass
class Runtime:
    settings: Settings
    plan: FitPlan
    backend: Backend
    _log: LogStore | None = None
    _loaded: set[str] = field(default_factory=set)

    @property
    def model_name(self) -> str:
        return self.plan.entry.name

    def toolset(self, name: str) -> Toolset:
        if name == "home":
            from edge_agent.toolsets.home import home_toolset

            return home_toolset(state_path=self.settings.data_dir / "home_state.json")
        return get_toolset(name)

    def agent(
        self,
        toolset: str | Toolset = "home",
        *,
        confirm: ConfirmFn | None = None,
        config: AgentConfig | None = None,
    ) -> Agent:
        tools = self.toolset(toolset) if isinstance(toolset, str) else toolset
        policy = Policy.from_toml(self.settings.policy_file) if self.settings.policy_file else None
        adapted = self.use_skill_adapter(tools.name) is not None
        # An adapter is trained on single commands: its call is the turn, the result its answer.
        default = AgentConfig(area=self.settings.area, stop_after_call=adapted)
        return Agent(
            self.backend,
            tools,
            policy=policy,
            config=config or default,
            confirm=confirm,
            adapter=self.backend.active_adapter,
            model_name=self.model_name,
            log=self.log(),
        )

    def use_skill_adapter(self, skill: str) -> str | None:
        """Activate the shipped adapter trained for this toolset on this base, if any; a
        toolset without one runs on the bare base model with the full tool list prompt."""
        from edge_agent.adapters.shipped import adapter_for

        shipped = adapter_for(skill, self.backend.identity) if self.settings.adapters else None
        if shipped is None:
            self.backend.use_adapter(None)
            return None
        if shipped.name not in self._loaded:
            self.backend.load_adapter(shipped.name, shipped.verified_path())
            self._loaded.add(shipped.name)
        self.backend.use_adapter(shipped.name)
        return shipped.name

    def log(self) -> LogStore | None:
        """The sealed interaction log, opened on first use (None when logging is off)."""
        if self._log is None and self.settings.log_enabled:
            from edge_agent.logstore import open_log

            self._log = open_log(self.settings)
        return self._log

    def close(self) -> None:
        self.backend.close()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_runtime(settings: Settings) -> Runtime:
    """Plan for this device, verify the model file, and load it into the profile's backend."""
    from edge_agent.backends import open_backend

    store = ModelStore(settings.models_dir, offline=settings.is_offline)
    plan = make_plan(settings, load_catalog(), store)
    entry = plan.entry
    path = Path(entry.source.path or "") if entry.source.kind == "path" else store.ensure(entry)
    backend = open_backend(plan.profile.backend, model_path=path, **plan.backend_options())
    return Runtime(settings, plan, backend)
