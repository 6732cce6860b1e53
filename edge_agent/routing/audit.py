"""The audit share: a small random share of the turns the router serves locally is also
labelled by the teacher, so a promoted adapter's confident turns keep yielding shadow pairs.

    confident local turn ─► served locally (the user's answer, nothing waits)
        └─ drawn with the skill's share ─► ``routing.queued`` + ``routing.audit_share``
           ─► the late-label queue (``routing.labels``) asks the teacher at its next round,
              through the same anonymizing client as an escalation; the teacher's call is
              logged as a label record beside the local call and never runs

Without audits, once the router trusts an adapter no teacher sees its confident turns: the
log's calibration and the host's next round starve exactly where the model may be wrong.
Never drawn: ``local-only`` skills, a request or tool rule that keeps the turn on the device,
no remote model (none configured, offline) or one the circuit breaker skips, turns that did
not end answered. Each audited pair weighs 1/share in calibration (``log_pairs``): it stands
for the confident turns that were not drawn.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_agent.settings import Settings

DEFAULT_SHARE = 0.02


@dataclass(frozen=True)
class AuditShare:
    """Each skill's audit share: its own where set, else the default; 0 never audits."""

    default: float = DEFAULT_SHARE
    skills: Mapping[str, float] = field(default_factory=dict)

    def of(self, skill: str) -> float:
        return self.skills.get(skill, self.default)

    def draw(self, skill: str, rng: random.Random) -> float | None:
        """The skill's share when this turn is drawn for an audit, else None."""
        share = self.of(skill)
        return share if share > 0 and rng.random() < share else None

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditShare:
        """``route_audit_share``, and ``[skills.NAME] route_audit_share`` where given."""
        own = {
            name: config.route_audit_share
            for name, config in settings.skills.items()
            if config.route_audit_share is not None
        }
        return cls(settings.route_audit_share, own)


NO_AUDIT = AuditShare(0.0)
