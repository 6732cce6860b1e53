"""LoRA adapter formats: export from peft to GGUF (llama.cpp) and ONNX, and which base they fit."""

from edge_agent.lora.gguf import (
    adapter_identity,
    export_lora_gguf,
    load_peft_adapter,
    require_same_base,
)

__all__ = ["adapter_identity", "export_lora_gguf", "load_peft_adapter", "require_same_base"]
