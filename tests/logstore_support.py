"""Helpers for the log tests and scripts/bench/bench_logstore.py: records, configs, a fake
keyring and the SIGKILL crash loop."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_agent.logstore import LogConfig, LogStore
from edge_agent.types import AgentResult, Effect, Message, ToolCall, ToolOutcome, Usage

T0 = 1_750_000_000.0  # a fixed "now" (June 2025) so periods are predictable


def make_result(i: int = 0, *, request: str | None = None) -> AgentResult:
    """A realistic turn: one actuating call, an answer, usage and timings."""
    call = ToolCall(name="HassTurnOn", arguments={"name": "kitchen light", "area": "Kitchen"})
    outcome = ToolOutcome(
        call=call,
        effect=Effect.ACTUATING,
        status="ok",
        result={"success": True, "targets": ["light.kitchen"]},
        duration_ms=1.5,
    )
    return AgentResult(
        request=request or f"turn on the kitchen light, please ({i})",
        answer="Done: the kitchen light is on.",
        tool_calls=[outcome],
        model="smollm2-135m",
        steps=2,
        latency_ms=312.5 + i,
        usage=Usage(prompt_tokens=420, completion_tokens=31),
    )


def make_messages(result: AgentResult) -> list[Message]:
    return [
        Message(role="system", content="You control a home. Tools: HassTurnOn, HassTurnOff."),
        Message(role="user", content=result.request),
        Message(role="assistant", content='{"name":"HassTurnOn","arguments":{"area":"Kitchen"}}'),
        Message(role="tool", content='{"success": true}'),
    ]


def make_config(root: Path, **overrides: Any) -> LogConfig:
    """A log under ``root`` with the key in a separate dir and a cheap scrypt."""
    base = LogConfig(
        path=root / "data" / "log" / "interactions.db",
        key_dir=root / "config" / "keys",
        key_source="file",
        scrypt_n=2**10,
        retention_days=None,
        budget_bytes=None,
    )
    return replace(base, **overrides)


@dataclass
class Clock:
    """A settable clock for retention and period tests."""

    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, days: float) -> None:
        self.now += days * 86_400


def memory_keyring() -> Any:
    """A python-keyring backend that keeps passwords in a dict (stands in for the OS's)."""
    import keyring.backend
    import keyring.errors

    class MemoryKeyring(keyring.backend.KeyringBackend):
        priority = 1

        def __init__(self) -> None:
            super().__init__()
            self.items: dict[tuple[str, str], str] = {}

        def get_password(self, service: str, username: str) -> str | None:
            return self.items.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.items[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            if self.items.pop((service, username), None) is None:
                raise keyring.errors.PasswordDeleteError(username)

    return MemoryKeyring()


def flip_byte(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


def raw(config: LogConfig) -> sqlite3.Connection:
    """A plain connection that bypasses the store, for tampering."""
    return sqlite3.connect(config.path, isolation_level=None)


# -- the SIGKILL crash loop -------------------------------------------------------------------
@dataclass
class CrashStats:
    runs: int = 0
    acked: int = 0
    stored: int = 0
    kill_ms: list[float] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def crash_loop(
    config: LogConfig, runs: int, *, seed: int = 0, max_delay_s: float = 0.04
) -> CrashStats:
    """``runs`` times: fork a writer, SIGKILL it after a random delay, then check that the
    database is intact and every id it acknowledged (printed after commit) is stored."""
    rng, stats, acked = random.Random(seed), CrashStats(), set[str]()
    for run in range(runs):
        acked |= _one_kill(config, run, rng.uniform(0.002, max_delay_s), stats, seed)
        _check(config, acked, stats)
        stats.runs += 1
    stats.acked = len(acked)
    return stats


def _one_kill(config: LogConfig, run: int, delay: float, stats: CrashStats, seed: int) -> set[str]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_fd)
        try:
            _writer(config, write_fd, random.Random(seed * 100_003 + run), run)
        finally:
            os._exit(0)
    os.close(write_fd)
    started = time.perf_counter()
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    stats.kill_ms.append((time.perf_counter() - started) * 1000)
    with os.fdopen(read_fd, "rb") as pipe:
        out = pipe.read().decode()
    lines = out.split("\n")[:-1]  # a torn last line was never acknowledged
    return {line for line in lines if line}


def _writer(config: LogConfig, fd: int, rng: random.Random, run: int) -> None:
    """Write forever: single commits, batches, sync marks; print ids once committed. The
    clock moves an hour per record so periods (and new data keys) turn over often."""
    clock = Clock(T0 + run * 5 * 86_400)
    store = LogStore(config, clock=clock)
    i = 0
    while True:
        n = 1 if rng.random() < 0.6 else rng.randint(2, 40)
        results = [make_result(run * 1_000_000 + i + k) for k in range(n)]
        ids = store.record_many((r, make_messages(r)) for r in results)
        os.write(fd, ("\n".join(ids) + "\n").encode())
        if rng.random() < 0.1:
            store.mark_synced(ids[: n // 2 + 1])
        i += n
        clock.advance(n / 24)


def _check(config: LogConfig, acked: set[str], stats: CrashStats) -> None:
    with LogStore(config) as store:
        found = store.integrity_check()
        if found != ["ok"]:
            stats.problems.append(f"run {stats.runs}: {found}")
        stored = {r[0] for r in store.conn.execute("SELECT id FROM interactions")}
        stats.stored = len(stored)
        lost = acked - stored
        stats.missing = sorted(lost)  # acked is cumulative, so this is the whole picture
        kept = sorted(acked & stored)
        for record_id in random.sample(kept, min(3, len(kept))):
            store.get(record_id)  # decrypts: raises if a committed record is damaged
