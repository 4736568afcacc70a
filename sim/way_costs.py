"""Measured costs of interchangeable ways of doing the same work: pick the cheaper one.

sim/ often has several exact ways to the same integers (a synapse path's float product, event
gather and int8 product; a split kernel's threads) whose speed depends on the machine, the
shapes, the firing and the load at the time. :class:`WayCosts` keeps, per way, the measured
seconds per unit of work and picks the way with the lower predicted time: ways not yet timed
first (in the order of their prior cost), then the cheapest, and every ``retime_every``
calls the other one, so a way that has become cheaper (the load changed) is seen again.
"""

from __future__ import annotations

from collections.abc import Mapping


class WayCosts:
    """Seconds per unit of work of each of ``ways`` (``prior``: the assumed cost of a way not
    yet timed; it only orders the first calls)."""

    def __init__(self, prior: Mapping[str, float], retime_every: int = 64) -> None:
        self.ways = list(prior)
        self.prior = dict(prior)
        self.retime_every = retime_every
        self.calls = 0
        self.cost: dict[str, float] = {}  # way -> seconds per unit of work (measured)
        self.warm: set[str] = set()

    def choose(self, units: Mapping[str, float]) -> str:
        """The way to run next for ``units`` of work (per way: the ways may count work
        differently). Each way is timed on first use, untried ways in the order of their prior
        cost, and again every ``retime_every`` calls."""
        self.calls += 1
        for way in sorted(self.ways, key=lambda w: self.prior[w] * units[w]):
            if way not in self.cost:
                return way
        if self.calls % self.retime_every == 0:
            return max(self.ways, key=lambda w: self.cost[w] * units[w])  # re-time the other
        return min(self.ways, key=lambda w: self.cost[w] * units[w])

    def record(self, way: str, units: float, seconds: float) -> None:
        """``way`` took ``seconds`` for ``units`` of work. Its first use is not a measurement
        (it may include compiling). A lower time is taken at once, a higher one only through
        the average and at most twice the estimate: on a shared machine a call that loses its
        core for a time slice measures 10-100x its cost, nothing measures less than the cost
        (one such call made a way look 20x dearer and shunned for ``retime_every`` calls)."""
        if way not in self.warm:
            self.warm.add(way)
            return
        if not units:
            return
        per_unit = seconds / units
        old = self.cost.get(way)
        if old is not None:
            per_unit = min(per_unit, 0.7 * old + 0.3 * min(per_unit, 2 * old))
        self.cost[way] = per_unit
