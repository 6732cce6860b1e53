"""Render chat messages into a prompt with the model's own Jinja chat template.

The template comes from the GGUF (``tokenizer.chat_template``) and is rendered the way
Hugging Face ``apply_chat_template`` renders it (sandboxed, ``trim_blocks``/``lstrip_blocks``,
``raise_exception``, a non-escaping ``tojson``), so inference and fine-tuning format prompts
byte-identically. Guessing a format by name instead is what made SmolLM2 answer nonsense.

A template is code from whoever made the model file, so it runs within budgets. Jinja's
sandbox stops it reaching Python internals but not from hanging or filling memory (nested
``range`` loops, ``'A' * 500000000``, a value doubled in a loop, a runaway macro). Here every
loop iteration, call, filter and intercepted operator checks a wall-clock deadline; no value a
template builds may exceed ``MAX_CHARS``, nor the prompt, nor (4x) all the text it writes,
captured blocks and macro bodies included; and the operations that can multiply their input
(repetition, padding, ``replace``, ``join``, ``~``, format widths, powers) are sized before
they run. The compiled code is instrumented for this (``_Instrument``). Jinja also folds
constant expressions while compiling, and llama-cpp-python compiles every template in the file
on load, so the constant subexpressions are first evaluated here, under the same budgets.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

from edge_agent.errors import BackendError, EdgeAgentError, InvalidModelFileError

# Used only for models whose GGUF carries no template (e.g. tiny test models).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Gemma's turn format, for a Gemma GGUF without a template (the base Gemma 3 270M): its
# tokenizer has the turn tokens, and Gemma has no system role, so system text opens the next
# user turn.
GEMMA_TEMPLATE = (
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = ns.system + message['content']"
    " + '\n\n' %}"
    "{% else %}{% set user = message['role'] != 'assistant' %}"
    "{{ '<start_of_turn>' + ('user' if user else 'model') + '\n'"
    " + (ns.system if user else '') + message['content'] + '<end_of_turn>\n' }}"
    "{% if user %}{% set ns.system = '' %}{% endif %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
_FALLBACKS = {"gemma3": GEMMA_TEMPLATE}


def fallback_template(architecture: str) -> str:
    """The template for a GGUF of this architecture that carries none (ChatML by default)."""
    return _FALLBACKS.get(architecture, CHATML_TEMPLATE)


MAX_TEMPLATE_CHARS = 1 << 17  # all of one file's templates; real ones are under 20k
MAX_CHARS = 1 << 20  # any value a template builds, and the prompt: about 250k tokens
MAX_WRITTEN = 4 * MAX_CHARS  # all text written, captured blocks and macro bodies included
MAX_INT_BITS = 4096
MAX_RANGE = 100_000  # jinja's own sandbox limit
MAX_JSON_INDENT = 64
RENDER_SECONDS = 2.0  # real templates take milliseconds, even on a Raspberry Pi


@dataclass
class _Budget:
    """One render's: its deadline, the text written so far, and the weight of each value it
    was given (messages, tools and their items: alive for the whole render, so ids are
    stable), so checking a filter on ``messages`` inside a loop stays cheap."""

    deadline: float
    written: int = 0
    known: dict[int, int] = field(default_factory=dict)


# Unset while compiling (folding constants has no loops to time); per thread and task.
_budget: ContextVar[_Budget | None] = ContextVar("chat_template_budget", default=None)


class TemplateRejectedError(BackendError):
    """The template itself refused the conversation (``raise_exception``)."""


class _OverBudget(Exception):
    """A template went past a budget; ``render`` and ``_compile`` turn it into a typed error."""


def _raise_exception(message: str) -> NoReturn:
    raise TemplateRejectedError(f"the model's chat template rejected the messages: {message}")


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    # jinja2's own tojson HTML-escapes '<' and '&', which HF's does not.
    if indent is not None and indent > MAX_JSON_INDENT:
        raise _OverBudget(f"asked for a JSON indent of {indent}")
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise _OverBudget(f"asked for a range of {len(numbers)} numbers (at most {MAX_RANGE})")
    return numbers


# --- the budgets ------------------------------------------------------------------------------


def _tick() -> None:
    budget = _budget.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise _OverBudget("ran past its time budget")


def _limit(size: int, what: str = "a value") -> None:
    if size > MAX_CHARS:
        raise _OverBudget(f"built {what} of more than {MAX_CHARS} characters")


def _weight(value: Any, known: dict[int, int] | None = None) -> int:
    """Characters and items a value holds, nested containers included; stops past the budget.
    Containers count deeply: ``[s] * 1000`` is small as a list and huge once printed."""
    if isinstance(value, str):  # the common case, per operator: keep it quick
        return len(value)
    if known is None:
        budget = _budget.get()
        known = budget.known if budget is not None else {}
    total, todo = 0, [value]
    while todo and total <= MAX_CHARS:
        item = todo.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif id(item) in known:
            total += known[id(item)]
        elif isinstance(item, list | tuple | set | frozenset | dict):
            total += len(item)
            if total <= MAX_CHARS:
                todo.extend(item.items() if isinstance(item, dict) else item)
        elif isinstance(item, Namespace):  # prints all its attributes
            todo.append(object.__getattribute__(item, "__dict__"))
        else:
            total += 1
    return total


def _bounded(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise _OverBudget(f"built a number of more than {MAX_INT_BITS} bits")
    _limit(_weight(value))
    return value


def _materialized(items: Iterable[Any]) -> list[Any]:
    """An iterable as a list, refused as soon as it outgrows the budget."""
    out, size = [], 0
    for item in items:
        size += _weight(item) + 1
        _limit(size, "a sequence")
        out.append(item)
    return out


def _whole(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _brace_widths(fmt: str) -> int:
    """Characters the fields of a ``str.format`` string pad to; a computed width is refused."""
    total = 0
    for _, name, spec, _ in string.Formatter().parse(fmt):
        if name is not None and spec:
            if "{" in spec:
                raise _OverBudget("used a computed format width")
            total += sum(int(n) for n in re.findall(r"\d+", spec))
    return total


_PERCENT_FIELD = re.compile(r"%[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?")


def _percent_widths(fmt: str) -> int:
    """Characters the fields of a ``%`` format string pad to; a computed width is refused."""
    total = 0
    for match in _PERCENT_FIELD.finditer(fmt):
        if "*" in match.group(0):
            raise _OverBudget("used a computed format width")
        total += sum(int(n) for n in match.groups() if n)
    return total


# --- sizing operations before they run --------------------------------------------------------


def _repeat_size(left: Any, right: Any) -> int:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _OverBudget(f"built a number of more than {MAX_INT_BITS} bits")
        return 0
    seq, times = (left, right) if isinstance(right, int) else (right, left)
    return _weight(seq) * _whole(times) if isinstance(seq, str | bytes | list | tuple) else 0


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        _limit(_repeat_size(left, right))
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS:
            raise _OverBudget(f"built a number of more than {MAX_INT_BITS} bits")
    elif operator == "%" and isinstance(left, str):
        _limit(len(left) + _percent_widths(left) + _weight(right))


def _replace_size(s: Any, old: Any, new: Any) -> int:
    if not isinstance(s, str | bytes) or not isinstance(old, str | bytes):
        return 0
    hits = s.count(old) if old else len(s) + 1  # type: ignore[arg-type]
    return len(s) + hits * _weight(new)


def _sized_method(method: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Refuse a ``str`` method call whose result would be over budget, before it runs; returns
    the arguments to call it with (``join``'s iterable, read once into a list)."""
    s, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
    if not isinstance(s, str | bytes):
        return args
    if name == "join" and args:
        items = _materialized(args[0])
        _limit(_weight(items) + len(s) * len(items))
        return (items, *args[1:])
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _limit(_whole(args[0]))
    elif name == "expandtabs":
        tabs = s.count("\t") if isinstance(s, str) else s.count(b"\t")
        _limit(len(s) + tabs * _whole(args[0] if args else 8, 8))
    elif name == "replace" and len(args) >= 2:
        _limit(_replace_size(s, args[0], args[1]))
    elif name in ("format", "format_map") and isinstance(s, str):
        _limit(len(s) + _brace_widths(s) + _weight(args))
    return args


def _filter_size(name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """The same sizing for the filters that can outgrow their input."""
    if any(_whole(a) > MAX_CHARS for a in (*args, *kwargs.values())):
        raise _OverBudget(f"passed a number over {MAX_CHARS} to the {name} filter")
    text = value if isinstance(value, str) else ""
    if name == "indent":
        width = kwargs.get("width", args[0] if args else 4)
        step = len(width) if isinstance(width, str) else _whole(width)
        _limit(len(text) + (text.count("\n") + 1) * step)
    elif name == "replace" and len(args) >= 2:
        _limit(_replace_size(value, args[0], args[1]))
    elif name == "format":
        _limit(len(text) + _percent_widths(text) + _weight(args) + _weight(kwargs))
    elif name == "wordwrap":
        wrap = kwargs.get("wrapstring", args[2] if len(args) > 2 else None)
        _limit(len(text) + (len(text) + 1) * len(wrap or "\n"))


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # A filter marked pass_context/eval_context/environment gets that first, then the value.
    lead = 2 if hasattr(func, "jinja_pass_arg") else 1

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if len(args) >= lead:
            _limit(_weight(args[lead - 1]))  # e.g. a list of references to one long string
            if name == "join":
                args = _join_args(args, kwargs, lead - 1)
            _filter_size(name, args[lead - 1], args[lead:], kwargs)
        return _bounded(func(*args, **kwargs))

    return bounded


def _join_args(args: tuple[Any, ...], kwargs: dict[str, Any], at: int) -> tuple[Any, ...]:
    """The join filter's iterable (maybe a generator) read once into a list, and sized."""
    items = _materialized(args[at])
    separator = kwargs.get("d", args[at + 1] if len(args) > at + 1 else "")
    _limit(_weight(items) + len(str(separator)) * len(items))
    return (*args[:at], items, *args[at + 1 :])


def _concat(parts: tuple[Any, ...]) -> str:
    """``a ~ b ~ ...``, sized part by part before the join."""
    texts, size = [], 0
    for part in parts:
        _limit(size + _weight(part))  # before str(), which would build it
        texts.append(str(part))
        size += len(texts[-1])
        _limit(size)
    return "".join(texts)


@jinja2.pass_context  # never folded at compile time: it counts one render's text
def _written(_context: Any, value: Any) -> str:
    _limit(_weight(value))  # before str(), which would build it
    text = str(value)
    budget = _budget.get()
    if budget is not None:
        budget.written += len(text)
        if budget.written > MAX_WRITTEN:
            raise _OverBudget(f"wrote more than {MAX_WRITTEN} characters")
    return text


def _bounded_iter(items: Iterable[Any]) -> Iterator[Any]:
    for item in items:
        _tick()
        yield item


# --- the environment --------------------------------------------------------------------------

_LOOP, _VALUE, _CONCAT, _WRITE = (f"_edge_agent_{n}" for n in ("loop", "value", "concat", "write"))


def _wrap(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with every call and the operators that can blow up checked."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])  # intercepted ones are never folded

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        _check_binop(operator, left, right)
        return _bounded(super().call_binop(context, operator, left, right))

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _tick()
        args = _sized_method(getattr(obj, "__wrapped__", obj), args)  # format: sandbox-wrapped
        return _bounded(super().call(context, obj, *args, **kwargs))


class _Instrument(NodeTransformer):
    """Routes what the environment cannot intercept through budgeted filters: loop
    iterations, ``~``, list/tuple/dict literals and every piece of written text."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _wrap(node.iter, _LOOP)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _wrap(nodes.Tuple(node.nodes, "load", lineno=node.lineno), _CONCAT)

    def visit_List(self, node: nodes.List) -> nodes.Node:
        self.generic_visit(node)
        return _wrap(node, _VALUE)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        return _wrap(node, _VALUE)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        return _wrap(node, _VALUE) if node.ctx == "load" else node  # not a `for a, b` target

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [_wrap(child, _WRITE) for child in node.nodes]
        return node


def _environment() -> _BudgetedEnvironment:
    env = _BudgetedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    env.filters |= {_LOOP: _bounded_iter, _VALUE: _bounded, _CONCAT: _concat, _WRITE: _written}
    env.globals.pop("lipsum", None)  # paragraphs of filler on demand: no template needs it
    env.globals["range"] = _range
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


# --- compiling, with the constant folding checked first ---------------------------------------

# What jinja's optimizer folds at compile time when every leaf is a literal (calls never are).
_FOLDABLE = (
    nodes.Const, nodes.TemplateData, nodes.Tuple, nodes.List, nodes.Dict, nodes.Pair,
    nodes.Keyword, nodes.BinExpr, nodes.UnaryExpr, nodes.CondExpr, nodes.Filter, nodes.Test,
    nodes.Getitem, nodes.Getattr, nodes.Slice, nodes.Concat, nodes.Compare, nodes.Operand,
    nodes.MarkSafe, nodes.MarkSafeIfAutoescape,
)  # fmt: skip


def _foldable(node: nodes.Node) -> bool:
    return all(
        isinstance(n, _FOLDABLE) and not (isinstance(n, nodes.Filter) and n.node is None)
        for n in (node, *node.find_all(nodes.Node))
    )


def _fold_roots(node: nodes.Node) -> Iterator[nodes.Expr]:
    """The largest constant subexpressions that compute something (not bare literals)."""
    for child in node.iter_child_nodes():
        literal = isinstance(child, nodes.Const | nodes.TemplateData)
        if isinstance(child, nodes.Expr) and not literal and _foldable(child):
            yield child
        else:
            yield from _fold_roots(child)


def _check_constants(env: _BudgetedEnvironment, tree: nodes.Template) -> None:
    """Evaluate, under the budgets, what jinja would fold: all of it together must fit too,
    since a compiler without our checks writes each folded value into its generated code."""
    deadline, total = time.monotonic() + RENDER_SECONDS, 0
    for root in _fold_roots(tree):
        probe = nodes.Template([nodes.Output([copy.deepcopy(root)])], lineno=root.lineno)
        try:
            text = _render(_from_tree(env, probe), {}, deadline)
        except _OverBudget:
            raise
        except Exception:  # noqa: BLE001 - jinja does not fold what raises; neither do we
            continue
        total += len(text)
        _limit(total, "constants")


def _from_tree(env: _BudgetedEnvironment, tree: nodes.Template) -> jinja2.Template:
    tree = _Instrument().visit(tree)
    tree.set_environment(env)
    return env.template_class.from_code(env, env.compile(tree), env.make_globals(None), None)


@functools.lru_cache(maxsize=16)  # a model's template is compiled for the check and for use
def _compile(source: str) -> jinja2.Template:
    if len(source) > MAX_TEMPLATE_CHARS:
        raise _invalid(f"is {len(source)} characters, more than the {MAX_TEMPLATE_CHARS} allowed")
    if "\0" in source:  # llama.cpp would see it cut at the NUL: another template than ours
        raise _invalid("holds a NUL character")
    env = _environment()
    try:
        tree = env.parse(source)
        _check_constants(env, tree)
        return _from_tree(env, tree)
    except jinja2.TemplateSyntaxError as exc:
        raise _invalid(f"does not compile ({exc.message}, line {exc.lineno})") from exc
    except _OverBudget as exc:
        raise _invalid(f"{exc} while compiling") from exc
    except (RecursionError, MemoryError) as exc:
        raise _invalid("is nested too deeply to compile") from exc


def _invalid(what: str) -> InvalidModelFileError:
    return InvalidModelFileError(
        f"the model's chat template {what}; re-download or re-export the model"
    )


def check_templates(sources: Sequence[str]) -> None:
    """Compile every template a model file carries, before llama-cpp-python does: it compiles
    them all on load, folding constants with no budget and raising untyped errors."""
    total = sum(len(s) for s in sources)
    if total > MAX_TEMPLATE_CHARS:
        raise _invalid(f"texts total {total} characters, over the {MAX_TEMPLATE_CHARS} allowed")
    for source in sources:
        _compile(source)


def _render(template: jinja2.Template, context: dict[str, Any], deadline: float) -> str:
    token = _budget.set(_Budget(deadline, known=_input_weights(context)))
    try:
        parts, size = [], 0
        for chunk in template.generate(context):
            size += len(chunk)
            _limit(size, "a prompt")
            _tick()
            parts.append(chunk)
        return "".join(parts)
    finally:
        _budget.reset(token)


def _input_weights(context: dict[str, Any]) -> dict[int, int]:
    """The weight of each message and tool, then of their lists: each walked once."""
    known: dict[int, int] = {}
    for value in context.values():
        for item in value if isinstance(value, list | tuple) else ():
            if isinstance(item, list | tuple | dict):
                known[id(item)] = _weight(item, known)
        if isinstance(value, list | tuple | dict):
            known[id(value)] = _weight(value, known)
    return known


class ChatTemplate:
    """A compiled chat template plus the special-token strings it may reference."""

    def __init__(
        self,
        source: str,
        *,
        bos_token: str = "",
        eos_token: str = "",
        time_limit: float = RENDER_SECONDS,
    ) -> None:
        self._template = _compile(source)
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.time_limit = time_limit

    def render(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> str:
        """The prompt text; ``add_generation_prompt`` appends the assistant turn opener."""
        context = {
            "messages": list(messages),
            "add_generation_prompt": add_generation_prompt,
            "tools": tools,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            **extra,
        }
        try:
            return _render(self._template, context, time.monotonic() + self.time_limit)
        except EdgeAgentError:
            raise
        except _OverBudget as exc:
            raise BackendError(
                f"the model's chat template {exc} (budget: {self.time_limit:g} s, "
                f"{MAX_CHARS} characters); its template is broken or hostile"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - the template is the model file's code
            raise BackendError(f"the model's chat template failed to render: {exc!r}") from exc
