"""Shipped device profiles: one TOML file per device class, read by `edge_agent.models.profile`.

This is a package only so the TOML files travel as package data and can be found with
`importlib.resources.files("device_profiles")`; it holds no code.
"""
