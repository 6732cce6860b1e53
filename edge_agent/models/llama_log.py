"""llama.cpp's log, routed into `logging` at DEBUG so the CLI stays clean; the last errors
are kept to explain a failed load or quantization. Importing this module installs the route
(once per process); every module that calls llama.cpp imports it first."""

from __future__ import annotations

import ctypes
import logging
from collections import deque

import llama_cpp

logger = logging.getLogger("edge_agent.llama_cpp")

recent_errors: deque[str] = deque(maxlen=8)
_GGML_LOG_LEVEL_ERROR = 3


@llama_cpp.llama_log_callback
def _on_llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    line = text.decode("utf-8", errors="replace").rstrip()
    if level == _GGML_LOG_LEVEL_ERROR and line:
        recent_errors.append(line)
    logger.debug("%s", line)


llama_cpp.llama_log_set(_on_llama_log, ctypes.c_void_p(0))


def last_errors() -> str:
    return " / ".join(recent_errors)
