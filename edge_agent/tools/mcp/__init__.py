"""Tools from an MCP server as a `Toolset`, with the official `mcp` SDK as the client.

``mcp_toolset(name, command=[...])`` starts the server as a subprocess and talks to it over
stdio; ``mcp_toolset(name, url="http://…/mcp")`` connects over streamable HTTP. Either way it
connects once, lists the tools (every page) and makes one `Tool` per MCP tool: its
``inputSchema`` becomes the parameters the grammar holds the model to, its annotations the
call's effect, so the permission policy applies as to any other tool:

    ==========================================  ==================  ========================
    annotations                                 effect              default policy
    ==========================================  ==================  ========================
    ``readOnlyHint: true``                      ``READ_ONLY``       runs
    ``destructiveHint: false`` (not read-only)  ``ACTUATING``       runs, if the request asks
    ``destructiveHint: true`` or unset          ``DANGEROUS``       the user confirms first
    none at all (the spec: not read-only,       ``DANGEROUS``       the user confirms first
    destructive)
    ==========================================  ==================  ========================

The spec calls annotations hints a client must not trust from an untrusted server; here the
user configured the server, and a ``[tools]`` rule of the policy overrides any one tool.

A tool whose schema the device cannot constrain output to (nested objects, ``$ref``, past the
limits of ``backends.check_schema``) or whose name no grammar may hold is skipped with a
logged warning, so one odd tool does not take the others down; a server with no usable tool
at all is a `ToolDefinitionError`. The server cannot be reached or started: `ConfigError`.

A call returns the result's ``structuredContent`` when there is one (an SDK server's
``{"result": x}`` wrapper of a plain return value unwrapped), else its text joined and read as
JSON when it is JSON. ``isError`` results raise `ToolExecutionError` with the server's text,
which the model is shown; no answer within the timeout is a `ToolTimeoutError`.

The MCP session is asynchronous and the agent is not: it lives on a thread of its own with its
own event loop, and every tool handler (the agent runs each in a worker thread) submits its
call to that loop. Calls from several threads at once are fine, and the toolset serves turn
after turn until `close()` (``with mcp_toolset(...) as tools:`` closes it too; a `Runtime`
closes the toolsets it built). Closing ends a stdio server: its stdin is closed, and it is
terminated if it has not exited 2 s later (the SDK's grace).

A server that dies or restarts does not take the toolset with it (`session`): the next call
re-spawns the stdio server or reconnects over HTTP, re-lists the tools, then runs. A call is
sent again on a new connection only when it provably never reached the server; one cut off on
its way fails with `ToolExecutionError` and is never repeated (an actuation must not run twice).
Failed reconnects back off (0.5 s doubling to 30 s; calls in between fail at once); every call
ends within its timeout. If the reconnected server lists other tools, the toolset takes them
with a logged warning (`McpToolset`).
"""

from edge_agent.tools.mcp.toolset import McpTool, McpToolset, effect_of, mcp_toolset

__all__ = ["McpTool", "McpToolset", "effect_of", "mcp_toolset"]
