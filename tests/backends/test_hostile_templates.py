"""Hostile model files: chat templates and shape fields that must end in a one-line model error.

A GGUF's chat template is code from whoever made the file. Rendering it must stay bounded in
time and memory, a template that renders nothing must not reach llama.cpp (which aborts on an
empty batch), and broken shape fields must not surface as a Python traceback. The CLI runs in a
subprocess with a time and memory limit, so a hang, an abort or an allocation spree fails the
test instead of the machine.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType, GGUFWriter

from edge_agent.backends._chat_template import CHATML_TEMPLATE, ChatTemplate
from edge_agent.errors import BackendError, InvalidModelFileError
from edge_agent.models.gguf import identity_of, read_header
from tests.tinymodel import TinyModel

MESSAGES = [{"role": "user", "content": "hi"}]
CLI_SECONDS = 30  # a generous ceiling for the child; each case is asserted under a few seconds
CHILD_MEMORY = 3 << 30  # address space for the child: a runaway allocation fails, not the host


def hostile_gguf(tiny: TinyModel, path: Path, **metadata: Any) -> Path:
    """The tiny model with some metadata replaced (same key type) or added (a string or a
    uint32)."""
    reader = GGUFReader(tiny.gguf_path)
    writer = GGUFWriter(path, arch=None)  # type: ignore[arg-type]  # the arch key is copied
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        vtype = GGUFValueType(field.types[0])
        sub = GGUFValueType(field.types[-1]) if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(name, metadata.pop(name, field.contents()), vtype, sub)
    for name, value in metadata.items():
        vtype = GGUFValueType.STRING if isinstance(value, str) else GGUFValueType.UINT32
        writer.add_key_value(name, value, vtype)
    for t in reader.tensors:
        shape = [int(d) for d in reversed(t.shape)]
        writer.add_tensor(t.name, np.array(t.data), raw_shape=shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def run_cli_child(model: Path) -> tuple[int, str, float]:
    """`edge-agent run --model FILE "hi" --tools none` in a child: exit code, stderr, seconds."""
    limit = f"({CHILD_MEMORY}, {CHILD_MEMORY})"
    code = f"import resource; resource.setrlimit(resource.RLIMIT_AS, {limit})\n" + (
        "from edge_agent.cli import main; main()"
    )
    argv = [sys.executable, "-c", code, "run", "--model", str(model), "hi", "--tools", "none"]
    start = time.monotonic()
    done = subprocess.run(
        argv,
        check=False,
        capture_output=True,
        text=True,
        timeout=CLI_SECONDS,
    )
    return done.returncode, done.stderr, time.monotonic() - start


def assert_model_error(code: int, err: str, seconds: float) -> None:
    """Exit 3 (a ModelError), one line on stderr, no traceback, promptly."""
    assert code == 3, f"exit {code} (negative: killed by signal {-code}); stderr: {err[-2000:]}"
    assert len(err.strip().splitlines()) == 1, err[-2000:]
    assert "Traceback" not in err
    assert seconds < 10


# --- templates that must end in a model error, through the CLI --------------------------------

HOSTILE_TEMPLATES = {
    "nested range, empty body": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "nested range, text body": (
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
    ),
    "string repetition": "{{ 'A' * 500000000 }}",
    "list repetition": "{{ ['A'] * 500000000 }}",
    "repetition of a folded constant": "{{ ('A' if true else 'B') * 500000000 }}",
    "doubling by concatenation": (
        "{% set ns = namespace(s='ab') %}"
        "{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
    ),
    "doubling by addition": (
        "{% set ns = namespace(s='ab') %}"
        "{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}"
    ),
    "padding method": "{{ 'a'.center(1000000000) }}",
    "padding filter": "{{ 'a' | center(1000000000) }}",
    "indent filter": "{{ ('a\\n' ~ 'a\\n' ~ 'a') | indent(400000000) }}",
    "replace amplification": "{{ ('x' * 60000).replace('', 'y' * 60000) }}",
    "join amplification": "{{ ('x' * 60000).join(['y'] * 60000) }}",
    "list of big strings printed": "{% set s = 'x' * 900000 %}{{ [s] * 1000 }}",
    "namespace of big strings printed": (
        "{% set s = 'x' * 900000 %}{{ namespace(a=s, b=s, c=s, d=s) }}"
    ),
    "captured block": (
        "{% set s = 'x' * 900000 %}"
        "{% set kept %}{% for i in range(3000) %}{{ s }}{% endfor %}{% endset %}{{ kept | length }}"
    ),
    "format width": "{{ '%0999999999d' % 1 }}",
    "format method width": "{{ '{:>999999999}'.format(1) }}",
    "huge power": "{{ 9 ** (9 ** 9) }}",
    "repeated squaring": (
        "{% set ns = namespace(n=3) %}"
        "{% for i in range(64) %}{% set ns.n = ns.n * ns.n %}{% endfor %}{{ ns.n > 0 }}"
    ),
    "exponential macro": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}"
    ),
    "recursive macro": "{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}",
    "syntax error": "{% for m in messages %}{{ m['content'] }",
    "include without a loader": "{% include 'other' %}",
    "division by zero": "{{ 1 // 0 }}",
    "type error": "{{ 1 + 'a' }}",
    "empty prompt": "{# renders nothing #}",
    "NUL byte": "{{ 'a' }}\x00{{ 'b' }}",
}


@pytest.mark.parametrize("label", list(HOSTILE_TEMPLATES))
def test_hostile_template_is_a_one_line_model_error(
    tiny_model: TinyModel, tmp_path: Path, label: str
) -> None:
    template = HOSTILE_TEMPLATES[label]
    model = hostile_gguf(tiny_model, tmp_path / "m.gguf", **{"tokenizer.chat_template": template})
    assert_model_error(*run_cli_child(model))


def test_hostile_named_template_is_refused_before_llama_cpp(
    tiny_model: TinyModel, tmp_path: Path
) -> None:
    # llama-cpp-python compiles every tokenizer.chat_template.* template on load, folding
    # constants with no bound: a template we never render must not blow up there either.
    extra = {"tokenizer.chat_template.tool_use": "{{ 'A' * 300000000 }}{{ 'B' * 300000000 }}"}
    model = hostile_gguf(tiny_model, tmp_path / "m.gguf", **extra)
    assert_model_error(*run_cli_child(model))


def test_harmless_template_still_answers(tiny_model: TinyModel, tmp_path: Path) -> None:
    model = hostile_gguf(
        tiny_model, tmp_path / "m.gguf", **{"tokenizer.chat_template": CHATML_TEMPLATE}
    )
    code, err, _ = run_cli_child(model)
    assert code == 0, err[-2000:]


# --- broken shape fields ----------------------------------------------------------------------

SHAPES = {
    "head_count 0": {"llama.attention.head_count": 0},
    "embedding_length 0": {"llama.embedding_length": 0},
    "block_count 0": {"llama.block_count": 0},
    "head_count_kv 0": {"llama.attention.head_count_kv": 0},
    # llama.cpp aborts past LLAMA_MAX_LAYERS (512) and LLAMA_MAX_EXPERTS (1024), and on experts
    # without experts used (or the reverse); llama-cpp-python fails tokenizing past 2**31.
    "block_count 513": {"llama.block_count": 513},
    "context_length 2**32-1": {"llama.context_length": 2**32 - 1},
    "expert_count 2048": {"llama.expert_count": 2048, "llama.expert_used_count": 2},
    "experts, none used": {"llama.expert_count": 4},
    "experts used, none there": {"llama.expert_used_count": 2},
    "more experts used than there are": {"llama.expert_count": 4, "llama.expert_used_count": 8},
}


@pytest.mark.parametrize("label", list(SHAPES))
def test_broken_shape_field_is_a_one_line_model_error(
    tiny_model: TinyModel, tmp_path: Path, label: str
) -> None:
    model = hostile_gguf(tiny_model, tmp_path / "m.gguf", **SHAPES[label])
    with pytest.raises(
        InvalidModelFileError, match=f"{re.escape(next(iter(SHAPES[label])))}|experts"
    ):
        identity_of(read_header(model))
    assert_model_error(*run_cli_child(model))


def test_fewer_embedding_dims_than_heads_is_a_model_error(
    tiny_model: TinyModel, tmp_path: Path
) -> None:
    # n_embd // n_head is the head width the memory estimate multiplies by: 0 is no model.
    model = hostile_gguf(tiny_model, tmp_path / "m.gguf", **{"llama.embedding_length": 2})
    assert_model_error(*run_cli_child(model))


# --- the renderer itself, in process ----------------------------------------------------------

RENDER_BUDGET = {
    label: HOSTILE_TEMPLATES[label]
    for label in (
        "nested range, empty body",
        "nested range, text body",
        "string repetition",
        "list repetition",
        "doubling by concatenation",
        "doubling by addition",
        "padding method",
        "padding filter",
        "indent filter",
        "replace amplification",
        "join amplification",
        "list of big strings printed",
        "namespace of big strings printed",
        "captured block",
        "format width",
        "format method width",
        "huge power",
        "repeated squaring",
        "exponential macro",
        "recursive macro",
    )
}


@pytest.mark.parametrize("label", list(RENDER_BUDGET))
def test_render_is_bounded(label: str) -> None:
    start = time.monotonic()
    with pytest.raises((BackendError, InvalidModelFileError)):
        ChatTemplate(RENDER_BUDGET[label]).render(MESSAGES)
    assert time.monotonic() - start < 5


def test_render_errors_are_backend_errors() -> None:
    for source in ("{{ 1 // 0 }}", "{{ 1 + 'a' }}", "{% include 'other' %}", "{{ range(10**9) }}"):
        with pytest.raises(BackendError):
            ChatTemplate(source).render(MESSAGES)


def test_a_slow_template_stops_at_the_time_budget() -> None:
    slow = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    start = time.monotonic()
    with pytest.raises(BackendError, match="time"):
        ChatTemplate(slow, time_limit=0.2).render(MESSAGES)
    assert time.monotonic() - start < 2


def test_long_output_stops_at_the_size_budget() -> None:
    # 100k iterations of 20 characters: 2M characters, past the prompt budget, in no time.
    many = "{% for i in range(100000) %}{{ 'twenty characters...' }}{% endfor %}"
    with pytest.raises(BackendError, match="characters"):
        ChatTemplate(many).render(MESSAGES)


def test_huge_template_source_is_an_invalid_model_file() -> None:
    with pytest.raises(InvalidModelFileError, match="characters"):
        ChatTemplate("x" * (4 << 20))


def test_deeply_nested_template_is_an_invalid_model_file() -> None:
    with pytest.raises(InvalidModelFileError):
        ChatTemplate("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")


def test_real_templates_render_within_budget() -> None:
    # A long conversation with tools through HF-style constructs: no false alarms.
    source = (
        "{{ bos_token }}{% for m in messages %}{% if loop.first and tools %}"
        "{{ tools | tojson(indent=2) }}\n{% endif %}"
        "{{ '<|' ~ m['role'] ~ '|>\\n' + m['content'] | trim + '\\n' }}"
        "{% for c in m.get('tool_calls', []) %}{{ '%s(%s)' % (c.name, c.args) }}{% endfor %}"
        "{% endfor %}{{ '-' * 80 }}{{ 'end'.center(20) }}"
    )
    messages = [{"role": "user", "content": f"message {i} " + "word " * 50} for i in range(300)]
    tools = [{"name": f"t{i}", "parameters": {"type": "object"}} for i in range(50)]
    prompt = ChatTemplate(source, bos_token="<s>").render(messages, tools=tools)
    assert prompt.count("<|user|>") == 300 and prompt.endswith("-" * 80 + "end".center(20))


def test_filters_on_the_messages_in_a_loop_stay_cheap() -> None:
    # Qwen-style templates ask `messages | length` once per message: the budget checks on
    # the messages must not make that quadratic.
    source = (
        "{% for m in messages %}{% set i = (messages | length - 1) - loop.index0 %}"
        "{{ i }}:{{ m['content'] }}\n{% endfor %}"
    )
    messages = [{"role": "user", "content": f"message {i}"} for i in range(3000)]
    start = time.monotonic()
    prompt = ChatTemplate(source).render(messages)
    assert prompt.startswith("2999:message 0\n") and time.monotonic() - start < 1
