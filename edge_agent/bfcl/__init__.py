"""BFCL simple_python as an edge-agent skill: its rows as one-tool toolsets, BFCL's scoring."""

from edge_agent.bfcl.dataset import Row, Split, load, make_split
from edge_agent.bfcl.evaluate import Evaluation, evaluate
from edge_agent.bfcl.score import Report, Verdict, check, score

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
