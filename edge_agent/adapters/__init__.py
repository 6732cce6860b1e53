"""LoRA adapters: export from peft to llama.cpp's GGUF format, and check which base they fit."""

from edge_agent.adapters.export import (
    adapter_identity,
    export_lora_gguf,
    load_peft_adapter,
    require_same_base,
)

__all__ = ["adapter_identity", "export_lora_gguf", "load_peft_adapter", "require_same_base"]
