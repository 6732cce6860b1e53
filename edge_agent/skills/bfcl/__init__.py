"""BFCL simple_python as an edge-agent skill: its rows as one-tool toolsets, BFCL's scoring."""

from edge_agent.skills.bfcl.dataset import Row, Split, load, make_split
from edge_agent.skills.bfcl.evaluate import Evaluation, evaluate
from edge_agent.skills.bfcl.score import Report, Verdict, check, score

__all__ = [
    "Evaluation",
    "Report",
    "Row",
    "Split",
    "Verdict",
    "check",
    "evaluate",
    "load",
    "make_split",
    "score",
]
