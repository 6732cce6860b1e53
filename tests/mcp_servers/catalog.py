"""A low-level MCP server (the SDK's `Server`) over stdio: raw tool schemas, listed one tool
per page, so a client must follow the cursors. Among them: an optional argument typed
``integer | null``, a tool that answers with an image, and tools no device grammar can hold
(``--unusable-only`` lists just those).
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server

READ_ONLY = types.ToolAnnotations(read_only_hint=True)
USABLE = [
    types.Tool(
        name="echo",
        description="Repeats a text.",
        input_schema={
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "times": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            },
            "required": ["text"],
        },
        annotations=READ_ONLY,
    ),
    types.Tool(
        name="snapshot",
        description="A picture from the door camera.",
        input_schema={"type": "object", "properties": {}},
        annotations=READ_ONLY,
    ),
]
UNUSABLE = [
    types.Tool(
        name="bad name!",
        description="Its name is no tool name.",
        input_schema={"type": "object", "properties": {}},
    ),  # fmt: skip
    types.Tool(
        name="configure",
        description="Nested options.",
        input_schema={
            "type": "object",
            "properties": {"options": {"type": "object", "properties": {"a": {"type": "string"}}}},
        },
    ),
]
TOOLS = UNUSABLE if "--unusable-only" in sys.argv else USABLE + UNUSABLE


async def list_tools(_: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    page = int(params.cursor) if params and params.cursor else 0
    more = str(page + 1) if page + 1 < len(TOOLS) else None
    return types.ListToolsResult(tools=[TOOLS[page]], next_cursor=more)


async def call_tool(_: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    if params.name == "echo":
        text = " ".join([args["text"]] * int(args.get("times") or 1))
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])
    image = types.ImageContent(type="image", data="iVBORw0KGgo=", mime_type="image/png")
    note = types.TextContent(type="text", text="front door, 12:00")
    return types.CallToolResult(content=[note, image])


server = Server("catalog", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
