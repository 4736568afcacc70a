"""WayCosts (sim/way_costs.py): which way runs next, and how a measurement moves its cost."""

from __future__ import annotations

from lmh_deploy.sim.way_costs import EARLY_RETIMES, WINDOW, WayCosts


def test_untimed_ways_first_by_prior_then_the_cheapest_and_the_runner_up_on_retime_calls() -> None:
    costs = WayCosts({"slow": 3.0, "fast": 1.0}, retime_every=64)
    units = {"slow": 1.0, "fast": 1.0}
    assert costs.choose(units) == "fast"  # the lower prior first
    costs.record("fast", 1.0, 9.0)  # first use: not a measurement
    assert costs.choose(units) == "fast" and costs.cost == {}
    costs.record("fast", 1.0, 2.0)
    assert costs.choose(units) == "slow"  # the untimed way before any timed one
    costs.record("slow", 1.0, 1.0)
    assert costs.choose(units) == "slow"
    costs.record("slow", 1.0, 1.0)
    assert costs.cost == {"fast": 2.0, "slow": 1.0}
    chosen = [costs.choose(units) for _ in range(128 - 4)]  # calls 5..128
    assert [i + 5 for i, way in enumerate(chosen) if way == "fast"] == [8, 16, 32, 64, 128]
    assert EARLY_RETIMES == (8, 16, 32)
    # units per way: work counted differently by each way weighs its cost
    assert costs.choose({"slow": 10.0, "fast": 1.0}) == "fast"


def test_the_retime_takes_the_runner_up_not_the_dearest() -> None:
    """With three ways the retime measures the one next to the cheapest by predicted time
    (cost x its own units), which is the one that may have been shunned by an unlucky
    measurement; the dearest is neither taken nor timed."""
    costs = WayCosts({"gemm": 1.0, "events": 1.0, "int8": 1.0})
    costs.cost = {"gemm": 4.0, "events": 0.5, "int8": 1.0}
    units = {"gemm": 1.0, "events": 3.0, "int8": 1.0}  # events: 1.5, int8: 1.0, gemm: 4.0
    chosen = [costs.choose(units) for _ in range(64)]
    assert {i + 1: way for i, way in enumerate(chosen) if way != "int8"} == {
        8: "events",
        16: "events",
        32: "events",
        64: "events",
    }


def test_the_cost_is_the_lowest_of_the_last_measurements() -> None:
    """Noise on a shared machine only adds time: one slow call does not move the cost (it
    used to raise it 30 %, enough to shun a way that was 20 % cheaper), a lower one is taken
    at once, and a way that has really become dearer is seen so after WINDOW calls."""
    costs = WayCosts({"a": 1.0})
    costs.record("a", 2.0, 1.0)  # untimed first use
    costs.record("a", 2.0, 4.0)
    assert costs.cost["a"] == 2.0
    costs.record("a", 2.0, 200.0)  # 100 per unit: one preempted call
    assert costs.cost["a"] == 2.0
    costs.record("a", 2.0, 2.0)  # 1.0 per unit: lower, taken at once
    assert costs.cost["a"] == 1.0
    costs.record("a", 0, 5.0)  # no work: nothing learnt
    assert costs.cost["a"] == 1.0
    for i in range(WINDOW):  # dearer for good: three per unit, seen once the window is past 1.0
        costs.record("a", 1.0, 3.0)
        assert costs.cost["a"] == (1.0 if i < WINDOW - 1 else 3.0)


def test_a_way_shunned_by_one_unlucky_call_is_taken_again_after_its_retime() -> None:
    """The case that made VGG-13 keep its slower way: the event gather (4.5 ms) measured once
    at 10 ms while the int8 way took 5.7 ms. The early retime measures it again, and the
    gather is taken from then on."""
    costs = WayCosts({"int8": 1.0, "events": 2.0})
    units = {"int8": 1.0, "events": 1.0}
    events_ms = iter([30.0, 10.0])  # its compile (not a measurement), the unlucky call; then 4.5

    def calls(n: int) -> list[str]:
        taken = []
        for _ in range(n):
            way = costs.choose(units)
            taken.append(way)
            costs.record(way, 1.0, 5.7 if way == "int8" else next(events_ms, 4.5))
        return taken

    assert calls(4) == ["int8", "int8", "events", "events"]
    assert costs.cost == {"int8": 5.7, "events": 10.0}
    assert calls(8) == ["int8"] * 3 + ["events"] * 5  # call 8: the retime
    assert costs.cost["events"] == 4.5


def test_a_way_not_eager_is_first_tried_on_a_retime_call() -> None:
    """``eager=False`` (run_in_threads' Python threads): after the first way, an untimed way
    waits for a retime call (8: untimed use, 16: its first measurement), so the first calls
    of whatever runs the parts are timed on the first way only; then the usual choice."""
    costs = WayCosts({"team": 1.0, "threads": 2.0}, eager=False)
    units = {"team": 1.0, "threads": 1.0}
    taken = []
    for _ in range(40):
        way = costs.choose(units)
        taken.append(way)
        costs.record(way, 1.0, 1.0 if way == "team" else 0.5)
    # threads cheaper from call 16 on; call 32 re-times the team
    assert [i + 1 for i, way in enumerate(taken) if way == "threads"] == [8, *range(16, 32), *range(33, 41)]
    assert costs.cost == {"team": 1.0, "threads": 0.5}
    # a way dropped from ``ways`` (an int8 way whose check failed) is never ranked again
    costs.ways = ["team"]
    assert costs.choose(units) == "team"
    # and where the only timed way is dropped, an untimed one runs even off the retime calls
    costs.ways, costs.cost = ["spare"], {"team": 1.0}
    costs.prior["spare"] = 3.0
    assert costs.calls == 41 and costs.choose({"spare": 1.0}) == "spare"
