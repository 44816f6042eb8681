"""The gateway autoscaling policy: a pure function from what was observed to how many
gateways there should be. The controller actor applies it in a loop."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Decision", "Observation", "ScalingPolicy"]


@dataclass(frozen=True, slots=True)
class Observation:
    gateways: int
    requests_per_s: float  # over all gateways, since the last observation
    inflight: int  # orders in flight over all gateways, now


@dataclass(frozen=True, slots=True)
class Decision:
    gateways: int
    below_for: int  # consecutive observations that asked for fewer gateways


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    gateways_min: int
    gateways_max: int
    # Load one gateway should carry; above it, add gateways.
    requests_per_s_per_gateway: float
    inflight_per_gateway: int
    # Scale in only after this many observations in a row asked for it (no flapping).
    scale_in_after: int

    def decide(self, seen: Observation, below_for: int) -> Decision:
        wanted = max(math.ceil(seen.requests_per_s / self.requests_per_s_per_gateway),
                     math.ceil(seen.inflight / self.inflight_per_gateway), 1)
        wanted = min(max(wanted, self.gateways_min), self.gateways_max)
        if wanted >= seen.gateways:
            return Decision(wanted, 0)
        if below_for + 1 >= self.scale_in_after:
            return Decision(max(wanted, seen.gateways - 1), 0)  # one at a time, drained
        return Decision(seen.gateways, below_for + 1)
