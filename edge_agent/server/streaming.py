"""Real token streaming: a generation in the model thread, its chunks handed to the event loop.

Both APIs stream plain chat through this; each writes its own events from the chunks. The
first chunk is awaited before the response starts, so a request that fails early (too long,
backend error) still gets its HTTP error status.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from edge_agent.backends.base import Chunk
from edge_agent.server.chat import Chat, stream_chat
from edge_agent.server.state import State, until_gone

_END = object()


@dataclass
class TokenStream:
    """The chunks of one generation; ``cancel`` stops it (set it when the client is gone)."""

    first: Any
    queue: asyncio.Queue[Any]
    cancel: threading.Event

    async def chunks(self) -> AsyncIterator[Chunk | Exception]:
        """Each chunk in turn; an exception raised mid-stream comes last, as an item."""
        item = self.first
        while item is not _END:
            yield item
            if isinstance(item, Exception):
                return
            item = await self.queue.get()


async def open_stream(state: State, chat: Chat, request: Request) -> TokenStream:
    """Start generating behind whatever is queued; returns once the first chunk is there."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()

    def produce() -> None:
        try:
            for chunk in stream_chat(state.backend, chat, cancel):
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
        except Exception as exc:  # handed to the event loop, which reports it
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    state.start(produce)
    first = await until_gone(request, queue.get(), cancel)
    if isinstance(first, Exception):
        raise first
    return TokenStream(first, queue, cancel)
