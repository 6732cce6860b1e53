"""The ``bfcl`` skill: BFCL simple_python, where every request brings its own one tool."""

from __future__ import annotations

from edge_agent.skills.skill import Skill

# No toolset of its own (each row has its tool); scored by BFCL's checker in `bfcl.evaluate`.
skill = Skill("bfcl", toolset=None, description="BFCL simple_python function calls")
