"""Fixtures of the client-tools server tests (see client_support)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.runtime import Runtime
from tests.server.client_support import CONTEXT, open_device, weather_teacher
from tests.teacher_support import StandInTeacher, stand_in_teacher
from tests.tinymodel import make_tiny_llama


@pytest.fixture(scope="session")
def tiny_long(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random llama with a context that holds an untrained tool prompt."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-long"), context=CONTEXT).gguf_path


@pytest.fixture
def teacher() -> Iterator[StandInTeacher]:
    with stand_in_teacher(weather_teacher) as t:
        yield t


@pytest.fixture
def device(tiny_long: Path, teacher: StandInTeacher) -> Iterator[Runtime]:
    with open_device(tiny_long, teacher) as rt:
        yield rt
