"""WayCosts (sim/way_costs.py): which way runs next, and how a measurement moves its cost."""

from __future__ import annotations

from lmh_deploy.sim.way_costs import WayCosts


def test_untimed_ways_first_by_prior_then_the_cheapest_and_the_other_every_nth_call() -> None:
    costs = WayCosts({"slow": 3.0, "fast": 1.0}, retime_every=4)
    units = {"slow": 1.0, "fast": 1.0}
    assert costs.choose(units) == "fast"  # the lower prior first
    costs.record("fast", 1.0, 9.0)  # first use: not a measurement
    assert costs.choose(units) == "fast" and costs.cost == {}
    costs.record("fast", 1.0, 2.0)
    assert costs.choose(units) == "slow"  # the untimed way before any timed one
    costs.record("slow", 1.0, 1.0)
    assert costs.choose(units) == "slow"  # call 4: retime the dearer way
    costs.record("slow", 1.0, 1.0)
    assert costs.cost == {"fast": 2.0, "slow": 1.0}
    assert [costs.choose(units) for _ in range(4)] == ["slow", "slow", "slow", "fast"]
    # units per way: work counted differently by each way weighs its cost
    assert costs.choose({"slow": 10.0, "fast": 1.0}) == "fast"


def test_a_lower_time_is_taken_at_once_a_higher_one_averaged_and_capped() -> None:
    costs = WayCosts({"a": 1.0})
    costs.record("a", 2.0, 1.0)  # untimed first use
    costs.record("a", 2.0, 4.0)
    assert costs.cost["a"] == 2.0
    costs.record("a", 2.0, 2.0)  # 1.0 per unit: lower, taken at once
    assert costs.cost["a"] == 1.0
    costs.record("a", 2.0, 200.0)  # 100x: through the average, capped at twice the estimate
    assert abs(costs.cost["a"] - (0.7 * 1.0 + 0.3 * 2.0)) < 1e-12
    costs.record("a", 0, 5.0)  # no work: nothing learnt
    assert abs(costs.cost["a"] - 1.3) < 1e-12
