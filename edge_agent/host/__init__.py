"""The host side of the flywheel: ingest device logs, curate, fine-tune a LoRA, export, gate.

The ingest service (``ingest``, ``store``, ``tls``, ``metrics``) needs only the base install;
training (``curate``, ``examples``, ``finetune``, ``gate``) needs the ``[host]`` extra (torch,
transformers, peft). The device package never imports this
package; this package reuses the device's prompt, backends and exporter so that what is trained
is exactly what the device runs.
"""
