"""Fuzzing the GGUF check: mutated or truncated copies of a valid model never crash the process.

Each mutated file goes to one long-lived child process, which runs ``read_header`` and, for a
file that passes, loads it with llama.cpp and generates two tokens. The child answers with the
outcome; a signal (llama.cpp's aborts, a segfault), a hang or an error outside edge-agent's
tree fails the example. Bounded for CI: a fixed sequence of examples, about a minute.
"""

from __future__ import annotations

import select
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.models.gguf import read_header
from tests.tinymodel import TinyModel

ANSWER_SECONDS = 20  # one file: parse, load, two tokens; a hang past this is a failure
CHILD_MEMORY = 3 << 30

WORKER = f"""
import resource
import sys
resource.setrlimit(resource.RLIMIT_AS, ({CHILD_MEMORY}, {CHILD_MEMORY}))
from edge_agent.backends.base import GenerationRequest
from edge_agent.backends.llama_cpp import LlamaCppBackend
from edge_agent.errors import EdgeAgentError
from edge_agent.models.gguf import read_header
from edge_agent.types import Message

request = GenerationRequest(messages=[Message(role="user", content="hi")], max_tokens=2)
for line in sys.stdin:
    path = line.strip()
    try:
        read_header(path)
        backend = LlamaCppBackend(path, n_ctx=128, n_threads=1)
        try:
            backend.complete(request)
        finally:
            backend.close()
        outcome = "ok"
    except EdgeAgentError as exc:
        outcome = "typed " + type(exc).__name__
    except BaseException as exc:
        outcome = "UNTYPED " + type(exc).__name__ + ": " + str(exc)[:300].replace("\\n", " ")
    print(outcome, flush=True)
"""


class Worker:
    """The child that checks files; started again after one dies."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def check(self, path: Path) -> str:
        proc = self.proc if self.proc and self.proc.poll() is None else self._start()
        assert proc.stdin and proc.stdout
        proc.stdin.write(f"{path}\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], ANSWER_SECONDS)
        line = proc.stdout.readline() if ready else ""
        if line:
            return line.strip()
        self.close()
        return f"CRASHED (exit {proc.returncode}; negative: signal)" if ready else "HUNG"

    def _start(self) -> subprocess.Popen[str]:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # llama.cpp's own log; the outcome line is what counts
            text=True,
        )
        return self.proc

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.communicate()  # reaps it and closes its pipes
            self.proc = None


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    w = Worker()
    yield w
    w.close()


class Seed:
    """The tiny model's bytes, where its header ends (mutations aim there) and where each
    mutated copy is written."""

    def __init__(self, blob: bytes, header_end: int, out: Path) -> None:
        self.blob, self.header_end, self.out = blob, header_end, out

    def __repr__(self) -> str:  # a failing example prints the mutation, not the file
        return f"Seed(header_end={self.header_end})"


@pytest.fixture(scope="module")
def seed_file(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Seed:
    header_end = read_header(tiny_model.gguf_path).data_offset
    out = tmp_path_factory.mktemp("fuzz") / "mutated.gguf"
    return Seed(tiny_model.gguf_path.read_bytes(), header_end, out)


_LYING_NUMBERS = st.sampled_from([0, 1, 2, 3, 7, 8, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32 - 1])
_LYING_WIDE = st.sampled_from([0, 1, 2**32, 2**62, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1)
_SPOT = st.integers(0, 2**32)  # a position, taken modulo the header's length

# One mutation: byte flips, a lying 32/64-bit field, a cut, bytes added or removed, or header
# bytes copied over other header bytes (one token or template piece over another), all in the
# header, where lengths, counts, types, offsets, the vocabulary and the template live.
MUTATIONS = st.one_of(
    st.tuples(
        st.just("flip"), st.lists(st.tuples(_SPOT, st.integers(0, 255)), min_size=1, max_size=8)
    ),
    st.tuples(st.just("u32"), _SPOT, _LYING_NUMBERS),
    st.tuples(st.just("u64"), _SPOT, _LYING_WIDE),
    st.tuples(st.just("cut"), _SPOT),
    st.tuples(st.just("splice"), _SPOT, st.integers(0, 16), st.binary(max_size=16)),
    st.tuples(st.just("copy"), _SPOT, _SPOT, st.integers(1, 24)),
)


def mutate(blob: bytes, header_end: int, mutation: tuple[Any, ...]) -> bytes:
    out = bytearray(blob)
    kind, *args = mutation
    if kind == "flip":
        for spot, value in args[0]:
            out[spot % header_end] = value
        return bytes(out)
    at = args[0] % header_end
    if kind == "u32":
        out[at : at + 4] = struct.pack("<I", args[1])
    elif kind == "u64":
        out[at : at + 8] = struct.pack("<Q", args[1])
    elif kind == "cut":
        del out[args[0] % len(blob) :]
    elif kind == "splice":
        out[at : at + args[1]] = args[2]
    else:
        source = args[1] % header_end
        out[at : at + args[2]] = blob[source : min(source + args[2], header_end)]
    return bytes(out)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI does not flake on a new find
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutation=MUTATIONS)
def test_mutated_gguf_is_typed_error_or_loads(
    mutation: tuple[Any, ...],
    worker: Worker,
    seed_file: Seed,
) -> None:
    seed_file.out.write_bytes(mutate(seed_file.blob, seed_file.header_end, mutation))
    outcome = worker.check(seed_file.out)
    assert outcome == "ok" or outcome.startswith("typed "), f"{outcome} after {mutation!r}"
