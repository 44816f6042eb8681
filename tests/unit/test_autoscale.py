from hypothesis import given
from hypothesis import strategies as st

from flashtx.engine.autoscale import Observation, ScalingPolicy

POLICY = ScalingPolicy(gateways_min=1, gateways_max=4, requests_per_s_per_gateway=1000,
                       inflight_per_gateway=500, scale_in_after=3)


def test_scales_out_at_once_and_in_slowly() -> None:
    assert POLICY.decide(Observation(1, 2500, 0), 0).gateways == 3
    assert POLICY.decide(Observation(1, 10, 1800), 0).gateways == 4  # in-flight counts too
    quiet = Observation(3, 100, 0)
    first = POLICY.decide(quiet, 0)
    second = POLICY.decide(quiet, first.below_for)
    third = POLICY.decide(quiet, second.below_for)
    assert (first.gateways, second.gateways, third.gateways) == (3, 3, 2)
    assert POLICY.decide(Observation(3, 2900, 0), 2).below_for == 0  # load back: reset


@given(st.integers(1, 4), st.floats(0, 1e6), st.integers(0, 10**6), st.integers(0, 10))
def test_decisions_stay_within_bounds_and_move_one_step_in(gateways: int, rate: float,
                                                          inflight: int, below: int) -> None:
    decision = POLICY.decide(Observation(gateways, rate, inflight), below)
    assert POLICY.gateways_min <= decision.gateways <= POLICY.gateways_max
    assert decision.gateways >= gateways - 1
