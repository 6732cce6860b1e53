"""edge-agent: small language models that run agent tool calls on the device and get better."""

__version__ = "0.1.0"
