"""On-device anonymization: find personal data in text and JSON-like records and replace it
with keyed tags before anything leaves the device.

One module per detector family (``people``, ``places``, ``numbers``, ``network``,
``credentials``); each detector is a function from text to findings. ``Anonymizer`` runs them
all, drops what the home's allowlist covers, settles overlaps by priority and tags the rest.
"""

from __future__ import annotations

from edge_agent.anonymize.anonymizer import Anonymizer, normalize
from edge_agent.anonymize.base import Detector, Finding
from edge_agent.anonymize.secret import device_secret

__all__ = ["Anonymizer", "Detector", "Finding", "device_secret", "normalize"]
