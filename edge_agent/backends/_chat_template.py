"""Render chat messages into a prompt with the model's own Jinja chat template.

The template comes from the GGUF (``tokenizer.chat_template``) and is rendered the way
Hugging Face ``apply_chat_template`` renders it (sandboxed, ``trim_blocks``/``lstrip_blocks``,
``raise_exception``, a non-escaping ``tojson``), so inference and fine-tuning format prompts
byte-identically. Guessing a format by name instead is what made SmolLM2 answer nonsense.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edge_agent.errors import BackendError, InvalidModelFileError

# Used only for models whose GGUF carries no template (e.g. tiny test models).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TemplateRejectedError(BackendError):
    """The template itself refused the conversation (``raise_exception``)."""


def _raise_exception(message: str) -> NoReturn:
    raise TemplateRejectedError(f"the model's chat template rejected the messages: {message}")


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    # jinja2's own tojson HTML-escapes '<' and '&', which HF's does not.
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    """A compiled chat template plus the special-token strings it may reference."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise InvalidModelFileError(
                f"the model's chat template does not compile ({exc.message}, line {exc.lineno});"
                " re-download or re-export the model"
            ) from exc
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> str:
        """The prompt text; ``add_generation_prompt`` appends the assistant turn opener."""
        try:
            return self._template.render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                tools=tools,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except TemplateRejectedError:
            raise
        except jinja2.TemplateError as exc:
            raise BackendError(f"the model's chat template failed to render: {exc}") from exc
