"""Open the device runtime from settings: fit plan → model file → backend → toolset → agent.

What the CLI, the server and an embedding daemon share, so all three load a model the same
way. ``Runtime`` owns the backend; close it (or use ``with``) to free the model.

Adapters hot-swap: each skill's agent generates through a view of the backend that, under
the runtime's lock, switches to the skill's current adapter first. ``swap_adapter`` takes the
same lock, so it waits for the generation in flight and the next one runs the new adapter;
nothing reloads and no request fails. A turn of several generations may see the swap
between two of them.

The router's distance signal needs the clusters the skill's adapter was trained on: its
release (installed, or the ``release`` in a shipped adapter's JSON) names centroids and an
embedder; when that embedder's folder is on the device (``settings.embedders_dir / name``)
the router gets both, else the signal stays absent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.agent import Agent, AgentConfig, ConfirmFn
from edge_agent.backends.base import Backend, Chunk, GenerationRequest
from edge_agent.errors import AdapterError, ConfigError, EdgeAgentError
from edge_agent.models.catalog import CatalogEntry, load_catalog
from edge_agent.models.plan import ContextNeed, FitPlan, NeedFn, make_plan
from edge_agent.models.store import ModelStore
from edge_agent.policy import Policy
from edge_agent.settings import Settings, load_settings
from edge_agent.skills import keep_words
from edge_agent.tools import Toolset

if TYPE_CHECKING:
    from edge_agent.adapters.release import AdapterRelease
    from edge_agent.logstore import LogStore
    from edge_agent.models.gguf import BaseModelIdentity
    from edge_agent.routing.embed import Embedder
    from edge_agent.routing.router import Clusters, Router
    from edge_agent.skills.skill import Skill

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    plan: FitPlan
    backend: Backend
    _log: LogStore | None = None
    _loaded: set[str] = field(default_factory=set)
    # Held for each generation and each adapter change: a swap waits for the one in flight.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _current: dict[str, str | None] = field(default_factory=dict)  # skill -> adapter
    _agents: dict[str, weakref.WeakSet[Agent]] = field(default_factory=dict, repr=False)
    # adapter -> its clusters; None: its release has none (a release never changes)
    _clusters: dict[str, Clusters | None] = field(default_factory=dict, repr=False)
    # (name, mtime of its spec) -> the opened embedder, None if it would not open
    _embedders: dict[tuple[str, int], Embedder | None] = field(default_factory=dict, repr=False)
    _toolsets: dict[str, Toolset] = field(default_factory=dict, repr=False)  # skill -> built
    _toolsets_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model_name(self) -> str:
        return self.plan.entry.name

    def skill(self, name: str) -> Skill:
        """The skill by name as this device's settings define it (built in, installed,
        configured or registered)."""
        from edge_agent.skills.registry import get_skill

        return get_skill(name, self.settings)

    def toolset(self, name: str) -> Toolset:
        """The skill's toolset, built once per runtime (an MCP server is started once)."""
        with self._toolsets_lock:
            if name not in self._toolsets:
                built = self.skill(name).build_toolset(self.settings)
                built.name = name  # the skill's name files its turns, whatever the factory said
                self._toolsets[name] = built
            return self._toolsets[name]

    def agent(
        self,
        toolset: str | Toolset | None = None,
        *,
        confirm: ConfirmFn | None = None,
        config: AgentConfig | None = None,
        skill: Skill | None = None,
    ) -> Agent:
        """An agent of a skill: by name (default: the settings' `tools`), or a toolset built
        here (a client's), filed under ``skill`` when given, else under the toolset's name."""
        toolset = toolset or self.settings.tools
        tools = self.toolset(toolset) if isinstance(toolset, str) else toolset
        if skill is not None and tools.name != skill.name:  # turns are filed by toolset name
            tools = Toolset(skill.name, tools, tools.description, tools.prompt, tools.context,
                            split=tools.split)  # fmt: skip
        skill = skill or self._skill_or_none(tools.name)
        policy = Policy.from_toml(self.settings.policy_file) if self.settings.policy_file else None
        adapter = self.adapter_of(tools.name)
        # An adapter is trained on single commands: its call is the turn, the result its answer.
        default = AgentConfig(
            area=self.settings.area, stop_after_call=adapter is not None,
            turn_deadline_s=self.settings.turn_deadline_s,
        )  # fmt: skip
        agent = Agent(
            self.skill_backend(tools.name),
            tools,
            policy=policy,
            config=config or default,
            confirm=confirm,
            adapter=adapter,
            model_name=self.model_name,
            log=self.log(),
            router=self.router,
            route_mode=skill.route if skill else "local-first",
            teacher_labels_offline=skill.teacher_labels_offline if skill else True,
        )
        self._agents.setdefault(tools.name, weakref.WeakSet()).add(agent)
        return agent

    def _skill_or_none(self, name: str) -> Skill | None:
        try:
            return self.skill(name)
        except ConfigError:
            return None  # a toolset built by the caller, under a name no skill has

    def use_skill_adapter(self, skill: str) -> str | None:
        """Activate the skill's adapter: the one `edge-agent adapters` installed as active if
        it fits this base, else the one shipped for this toolset and base; a toolset without
        either runs on the bare base model with the full tool list prompt."""
        chosen = self._skill_choice(skill) if self.settings.adapters else None
        with self._lock:
            if chosen is not None:
                self._load(*chosen)
            name = chosen[0] if chosen else None
            self.backend.use_adapter(name)
            self._current[skill] = name
        return name

    def adapter_of(self, skill: str) -> str | None:
        """The adapter the skill's generations run now (None: the bare base model)."""
        if skill not in self._current:
            return self.use_skill_adapter(skill)
        return self._current[skill]

    def load_adapter(self, name: str, path: Path) -> None:
        """Load a LoRA GGUF into the live backend under ``name`` (once), between generations."""
        with self._lock:
            self._load(name, lambda: path)

    def swap_adapter(self, skill: str, adapter: str | Path | None) -> str | None:
        """Make ``adapter`` the skill's adapter on the live backend, without a restart: an
        installed or shipped adapter's name, a name already loaded, a LoRA GGUF path, or None
        (the bare base). Waits for the generation in flight; the next one uses it. The
        installed state is `InstalledAdapters`' to change, not this."""
        name, path = self._resolve(skill, adapter)
        with self._lock:
            if name is not None and path is not None:
                self._load(name, path)
            self.backend.use_adapter(name)
            self._current[skill] = name
        for agent in list(self._agents.get(skill, ())):
            agent.adapter = name  # its next turn's prompt and log record name the new one
        return name

    def skill_backend(self, skill: str) -> Backend:
        """The backend as the skill's agents use it: its current adapter, one at a time."""
        return _AdapterView(self, lambda: self._current.get(skill))

    def pinned_backend(self, adapter: str | None) -> Backend:
        """The backend running ``adapter`` (loaded already), one generation at a time."""
        return _AdapterView(self, lambda: adapter)

    def shared_backend(self) -> Backend:
        """The backend with whatever adapter is active, one generation at a time: what a
        server that swaps adapters in the background must hand its plain-chat route."""
        return _AdapterView(self, None)

    def _load(self, name: str, path: Callable[[], Path] | Path) -> None:
        if name not in self._loaded:
            self.backend.load_adapter(name, path() if callable(path) else path)
            self._loaded.add(name)

    def _skill_choice(self, skill: str) -> tuple[str, Callable[[], Path]] | None:
        from edge_agent.adapters.shipped import adapter_for

        installed = self._installed_choice(skill, self.backend.identity)
        if installed is not None:
            return installed
        shipped = adapter_for(skill, self.backend.identity)
        return (shipped.name, shipped.verified_path) if shipped else None

    def _installed_choice(
        self, skill: str, identity: BaseModelIdentity | None
    ) -> tuple[str, Callable[[], Path]] | None:
        """The installed active adapter, if it fits; a damaged one is skipped, not fatal."""
        from edge_agent.adapters.installed import InstalledAdapters

        installed = InstalledAdapters(self.settings.adapters_dir)
        entry = installed.active(skill)
        if entry is None or identity is None:
            return None
        if entry.release.base_identity != identity.as_dict():
            logger.info("installed adapter %s is for another base model; not used", entry.name)
            return None
        try:
            path = installed.verified_path(entry) if entry.name not in self._loaded else None
        except AdapterError as exc:
            logger.warning("%s; using the shipped adapter", exc)
            return None
        return entry.name, lambda: path or installed.path_of(entry)

    def _resolve(self, skill: str, adapter: str | Path | None) -> tuple[str | None, Path | None]:
        """A name and, when not loaded yet, the verified file to load it from."""
        from edge_agent.adapters.installed import InstalledAdapters
        from edge_agent.adapters.shipped import adapter_for

        if adapter is None or (isinstance(adapter, str) and adapter in self._loaded):
            return adapter, None
        if isinstance(adapter, Path):
            return adapter.stem, adapter
        shipped = adapter_for(skill, self.backend.identity)
        if shipped is not None and shipped.name == adapter:
            return adapter, shipped.verified_path()
        installed = InstalledAdapters(self.settings.adapters_dir)
        return adapter, installed.verified_path(installed.get(adapter))

    @cached_property
    def router(self) -> Router | None:
        """The router to the remote model the settings name (None without one); one per
        runtime, so every agent shares its circuit breaker."""
        if not self.settings.remote_url or not self.settings.remote_model:
            return None  # before importing the remote client and reading keep words: cold start
        from edge_agent.routing.router import open_router

        keep = keep_words(self.settings)
        return open_router(self.settings, clusters=self.clusters_for, keep=keep)

    def clusters_for(self, adapter: str | None) -> Clusters | None:
        """The clusters `adapter` was trained on, with the embedder that placed them, when
        its release has centroids and that embedder is on this device; else None."""
        if adapter is None:
            return None
        if adapter in self._clusters:
            return self._clusters[adapter]
        release = _release_of(self.settings, adapter)
        if release is None or not release.centroids or not release.embedder:
            self._clusters[adapter] = None
            return None
        embedder = self._embedder(release.embedder)
        if embedder is None:
            return None  # not fetched yet: asked again next turn
        from edge_agent.routing.router import Clusters

        centroids = np.asarray(release.centroids, dtype=np.float32)
        if centroids.ndim != 2 or centroids.shape[1] != embedder.dim:
            logger.warning("%s: centroids of width %s, embedder %s gives %d: no distance signal",
                           adapter, centroids.shape[-1], embedder.name, embedder.dim)  # fmt: skip
            self._clusters[adapter] = None
            return None
        self._clusters[adapter] = Clusters(embedder, centroids)
        return self._clusters[adapter]

    def _embedder(self, name: str) -> Embedder | None:
        """The embedder `name` from the device's embedders folder, opened once per version."""
        from edge_agent.routing.embed import SPEC_FILE, Embedder

        folder = self.settings.embedders_dir / name
        try:
            key = (name, (folder / SPEC_FILE).stat().st_mtime_ns)
        except OSError:
            return None
        if key not in self._embedders:
            try:
                self._embedders[key] = Embedder.open(folder, threads=1)
            except EdgeAgentError as exc:
                logger.warning("embedder %s not usable (%s): no distance signal", name, exc)
                self._embedders[key] = None
        return self._embedders[key]

    def log(self) -> LogStore | None:
        """The sealed interaction log, opened on first use (None when logging is off)."""
        if self._log is None and self.settings.log_enabled:
            from edge_agent.logstore import open_log

            self._log = open_log(self.settings)
        return self._log

    def close(self) -> None:
        for toolset in self._toolsets.values():
            closer = getattr(toolset, "close", None)  # an MCP toolset ends its session
            if callable(closer):
                closer()
        self.backend.close()
        if self._log is not None:
            self._log.close()
        router = self.__dict__.get("router")  # only if it was ever opened
        if router is not None:
            router.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _release_of(settings: Settings, adapter: str) -> AdapterRelease | None:
    """The signed release of an installed adapter, else the one a shipped adapter's JSON
    carries (``scripts/flywheel_fleet.py --ship`` writes it); None without either."""
    from edge_agent.adapters.installed import InstalledAdapters
    from edge_agent.adapters.release import AdapterRelease
    from edge_agent.adapters.shipped import shipped_adapters

    with contextlib.suppress(AdapterError):
        return InstalledAdapters(settings.adapters_dir).get(adapter).release
    shipped = next((a for a in shipped_adapters() if a.name == adapter), None)
    if shipped is None:
        return None
    try:
        raw = json.loads(shipped.path.with_suffix(".json").read_text(encoding="utf-8"))
        return AdapterRelease.model_validate(raw["release"]) if raw.get("release") else None
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        logger.warning("the shipped adapter %s has no usable release (%s)", adapter, exc)
        return None


def open_runtime(
    settings: Settings | None = None, *, size_to_skills: bool = True, **overrides: Any
) -> Runtime:
    """Plan for this device, verify the model file, and load it into the profile's backend.
    Without ``settings`` they are read as the CLI reads them (defaults < config.toml <
    ``EDGE_AGENT_*``), with ``overrides`` (e.g. ``threads=2``) on top, validated.
    Without a ``context_size`` the context is sized to the device's skills' longest turn
    (`skills_need`); ``size_to_skills=False`` keeps the profile's (a server's clients bring
    their own tools and conversations)."""
    from edge_agent.backends import open_backend

    if settings is None:
        settings = load_settings(**overrides)
    elif overrides:
        raise ConfigError("pass either settings or overrides to open_runtime, not both")

    store = ModelStore(settings.models_dir, offline=settings.is_offline)
    need = skills_need(settings) if size_to_skills else None
    plan = make_plan(settings, load_catalog(), store, need=need)
    entry = plan.entry
    path = Path(entry.source.path or "") if entry.source.kind == "path" else store.ensure(entry)
    options = plan.backend_options()
    if settings.draft_tokens is not None and "draft_tokens" in options:
        options["draft_tokens"] = settings.draft_tokens
    backend = open_backend(plan.backend, model_path=path, **options)
    return Runtime(settings, plan, backend)


def skills_need(settings: Settings) -> NeedFn | None:
    """What one turn of the device's skills takes on a model (`make_plan`'s ``need``): the
    largest of their bounds, each with or without the adapter it would run there. None for
    plain chat (a conversation has no bound); None for a model where any skill's is unknown."""
    if settings.tools == "none":
        return None
    from edge_agent.skills.registry import device_skills, get_skill

    skills = [get_skill(name, settings) for name in device_skills(settings)]
    known: dict[tuple[str, bool], int | None] = {}  # a bound is asked once per adapted or not

    def need(entry: CatalogEntry) -> ContextNeed | None:
        bounds = []
        for skill in skills:
            key = (skill.name, _adapted_on(settings, skill.name, entry))
            if key not in known:
                known[key] = skill.context_tokens(settings, adapted=key[1])
            bounds.append((known[key], skill.name))
        if not bounds or any(tokens is None for tokens, _ in bounds):
            return None
        tokens, name = max((t or 0, n) for t, n in bounds)
        return ContextNeed(tokens, f"skill {name}")

    return need


def _adapted_on(settings: Settings, skill: str, entry: CatalogEntry) -> bool:
    """Whether the skill would run an adapter on this model: a shipped or installed one for a
    base of its shape (the file's identity is read only when it loads)."""
    if not settings.adapters:
        return False
    from edge_agent.adapters.installed import InstalledAdapters
    from edge_agent.adapters.shipped import shipped_adapters

    a = entry.arch
    shape = {"n_layer": a.n_layer, "n_embd": a.n_embd, "n_ff": a.n_ff, "n_head": a.n_head,
             "n_head_kv": a.n_head_kv, "n_vocab": a.n_vocab}  # fmt: skip
    bases = [s.base_identity for s in shipped_adapters() if s.skill == skill]
    with contextlib.suppress(AdapterError):
        installed = InstalledAdapters(settings.adapters_dir).active(skill)
        bases += [installed.release.base_identity] if installed else []
    return any(all(base.get(k) == v for k, v in shape.items()) for base in bases)


class _AdapterView(Backend):
    """The runtime's backend, one generation at a time under the runtime's lock, switched
    first to the adapter ``pick`` names (``pick=None``: whatever is active)."""

    def __init__(self, runtime: Runtime, pick: Callable[[], str | None] | None) -> None:
        self._runtime = runtime
        self._pick = pick

    def generate(self, request: GenerationRequest) -> Iterator[Chunk]:
        # The lock is held while the stream is consumed; a consumer that stops early drops
        # the generator, and closing it releases the lock.
        with self._runtime._lock:
            if self._pick is not None:
                self._runtime.backend.use_adapter(self._pick())
            yield from self._runtime.backend.generate(request)

    @property
    def identity(self) -> BaseModelIdentity | None:
        return self._runtime.backend.identity

    @property
    def model_name(self) -> str:
        return self._runtime.backend.model_name

    @property
    def active_adapter(self) -> str | None:
        return self._pick() if self._pick is not None else self._runtime.backend.active_adapter
