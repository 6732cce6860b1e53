"""The OpenAI-compatible HTTP API (`edge-agent serve`): app, chat, responses, schemas."""
