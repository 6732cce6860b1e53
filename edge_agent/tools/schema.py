"""Arguments models and JSON schemas for tools: from a typed function, from data, and back.

Fields get neutral names (``f0``, ``f1``…) with the argument's name as alias, so an argument
may be called ``schema`` or ``model_id`` without clashing with BaseModel's own attributes.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeAlias, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from edge_agent.backends import check_schema
from edge_agent.errors import ToolDefinitionError, UnsupportedSchemaError

JsonSchema: TypeAlias = dict[str, Any]


# --- function → model -------------------------------------------------------------------------

_ARGS_HEADERS = ("Args:", "Arguments:", "Parameters:")
_ARG_LINE = re.compile(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (first paragraph, one line) and the Google-style ``Args:`` entries."""
    lines = doc.strip().splitlines()
    summary_lines = []
    for line in lines:
        if not line.strip() or line.strip() in _ARGS_HEADERS:
            break
        summary_lines.append(line.strip())
    return " ".join(summary_lines), _parse_args_section(lines)


def _parse_args_section(lines: list[str]) -> dict[str, str]:
    docs: dict[str, str] = {}
    start = next((i for i, ln in enumerate(lines) if ln.strip() in _ARGS_HEADERS), None)
    if start is None:
        return docs
    current = None
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith((" ", "\t")):
            break  # the next section
        match = _ARG_LINE.match(line.strip())
        if match and (current is None or _indent(line) <= _indent_of_entries(lines, start)):
            current = match.group(1)
            docs[current] = match.group(2).strip()
        elif current and line.strip():
            docs[current] = f"{docs[current]} {line.strip()}".strip()
    return docs


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _indent_of_entries(lines: list[str], header: int) -> int:
    return next((_indent(ln) for ln in lines[header + 1 :] if ln.strip()), 0)


def model_from_signature(
    tool_name: str, fn: Callable[..., Any], arg_docs: dict[str, str]
) -> type[BaseModel]:
    fields: dict[str, tuple[Any, FieldInfo]] = {}
    hints = _type_hints(tool_name, fn)
    for i, param in enumerate(inspect.signature(fn).parameters.values()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ToolDefinitionError(f"{tool_name}: parameter {param.name!r} must be by keyword")
        if param.name not in hints:
            raise ToolDefinitionError(f"{tool_name}: parameter {param.name!r} has no type")
        default = ... if param.default is param.empty else param.default
        doc: dict[str, Any] = (
            {} if _described(hints[param.name]) else {"description": arg_docs.get(param.name)}
        )
        fields[f"f{i}"] = (hints[param.name], Field(default, alias=param.name, **doc))
    return _create_arguments_model(tool_name, fields)


def _described(hint: Any) -> bool:
    """Whether an ``Annotated[..., Field(description=...)]`` hint already says what it is."""
    metadata = get_args(hint)[1:] if get_origin(hint) is Annotated else ()
    return any(isinstance(m, FieldInfo) and m.description for m in metadata)


def _type_hints(tool_name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return inspect.get_annotations(fn, eval_str=True)
    except Exception as exc:
        raise ToolDefinitionError(f"{tool_name}: cannot read its type hints: {exc}") from exc


def _create_arguments_model(
    tool_name: str, fields: dict[str, tuple[Any, FieldInfo]]
) -> type[BaseModel]:
    config = ConfigDict(extra="forbid", populate_by_name=False)
    try:
        return create_model(f"{tool_name}Arguments", __config__=config, **fields)  # type: ignore[call-overload]
    except Exception as exc:
        raise ToolDefinitionError(f"{tool_name}: unsupported parameters: {exc}") from exc


# --- JSON schema → model ----------------------------------------------------------------------

_SCALARS: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}
_PROPERTY_KEYS = {
    "type", "description", "enum", "items", "default", "title", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems",
}  # fmt: skip
_BOUNDS = {
    "minimum": "ge", "maximum": "le", "exclusiveMinimum": "gt", "exclusiveMaximum": "lt",
    "minLength": "min_length", "maxLength": "max_length",
    "minItems": "min_length", "maxItems": "max_length",
}  # fmt: skip


def model_from_schema(tool_name: str, schema: Mapping[str, Any]) -> type[BaseModel]:
    check_tool_schema(tool_name, schema)  # well-formed and within limits from here on
    if schema.get("type", "object") != "object":
        raise ToolDefinitionError(f"{tool_name}: parameters schema must be an object")
    required = set(schema.get("required", []))
    props: Mapping[str, Any] = schema.get("properties", {})
    if missing := required - set(props):
        raise ToolDefinitionError(f"{tool_name}: required {sorted(missing)} not in properties")
    fields: dict[str, tuple[Any, FieldInfo]] = {}
    for i, (key, prop) in enumerate(props.items()):
        fields[f"f{i}"] = _field(f"{tool_name}.{key}", key, prop, required=key in required)
    return _create_arguments_model(tool_name, fields)


def check_tool_schema(tool_name: str, schema: Any) -> None:
    """The limits every schema the grammar sees is held to (`backends.check_schema`)."""
    try:
        check_schema(schema)
    except UnsupportedSchemaError as exc:
        raise ToolDefinitionError(f"{tool_name}: {exc}") from exc


def _field(
    where: str, key: str, prop: Mapping[str, Any], *, required: bool
) -> tuple[Any, FieldInfo]:
    default = ... if required else prop.get("default")
    bounds = {_BOUNDS[k]: v for k, v in prop.items() if k in _BOUNDS}
    try:
        info = Field(default, alias=key, description=prop.get("description"), **bounds)
        return _annotation(where, prop), info
    except (TypeError, ValueError) as exc:  # e.g. an enum value Literal cannot hold
        raise ToolDefinitionError(f"{where}: unsupported schema ({exc})") from exc


def _annotation(where: str, prop: Mapping[str, Any]) -> Any:
    if unknown := set(prop) - _PROPERTY_KEYS:
        raise ToolDefinitionError(f"{where}: unsupported schema keywords {sorted(unknown)}")
    if "enum" in prop:
        if not prop["enum"]:
            raise ToolDefinitionError(f"{where}: empty enum")
        return Literal[tuple(prop["enum"])]
    kind = prop.get("type")
    if kind == "array":
        if "items" not in prop:
            raise ToolDefinitionError(f"{where}: array needs 'items'")
        return list[_annotation(f"{where}[]", prop["items"])]  # type: ignore[misc]
    if kind not in _SCALARS:
        raise ToolDefinitionError(f"{where}: unsupported type {kind!r}")
    return _SCALARS[kind]


# --- model → the schema the grammar and prompt see --------------------------------------------


def clean_parameters(tool_name: str, model: type[BaseModel]) -> JsonSchema:
    schema = model.model_json_schema(by_alias=True)
    if "$defs" in schema:
        raise ToolDefinitionError(
            f"{tool_name}: nested models and Enum classes are not supported; use Literal[...]"
        )
    required = set(schema.get("required", []))
    props = {
        key: _clean_property(prop, optional=key not in required)
        for key, prop in schema.get("properties", {}).items()
    }
    cleaned: JsonSchema = {"type": "object", "properties": props}
    cleaned["required"] = [k for k in props if k in required]
    cleaned["additionalProperties"] = False
    check_tool_schema(tool_name, cleaned)
    return cleaned


def _clean_property(prop: JsonSchema, optional: bool) -> JsonSchema:
    prop = _strip_titles(prop)
    if optional and prop.get("default", 0) is None:
        # An optional argument is left out, not sent as null: the grammar never offers null.
        del prop["default"]
        alternatives = [a for a in prop.get("anyOf", []) if a != {"type": "null"}]
        if "anyOf" in prop and len(alternatives) == 1:
            del prop["anyOf"]
            prop = {**alternatives[0], **prop}
        elif "anyOf" in prop:
            prop["anyOf"] = alternatives
    return prop


def _strip_titles(value: Any) -> Any:
    if isinstance(value, dict):
        # A string "title" is pydantic's label; a dict under "title" is a property so named.
        return {
            k: _strip_titles(v) for k, v in value.items() if k != "title" or isinstance(v, dict)
        }
    if isinstance(value, list):
        return [_strip_titles(v) for v in value]
    return value


def render_type(prop: Mapping[str, Any]) -> str:
    if "enum" in prop:
        return "|".join(json.dumps(v) for v in prop["enum"])
    if "anyOf" in prop:
        return "|".join(render_type(alt) for alt in prop["anyOf"])
    kind = prop.get("type")
    if kind == "array":
        return f"list[{render_type(prop.get('items', {}))}]"
    base = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}
    rendered = base.get(str(kind), "null" if kind == "null" else "any")
    lo = prop.get("minimum", prop.get("exclusiveMinimum"))
    hi = prop.get("maximum", prop.get("exclusiveMaximum"))
    if lo is not None or hi is not None:
        rendered += f" {'' if lo is None else lo}..{'' if hi is None else hi}"
    return rendered
