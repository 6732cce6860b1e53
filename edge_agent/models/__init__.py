"""Which model a device runs: device profiles, the model catalog, the fit plan, the verified model
store, and GGUF file validation."""
