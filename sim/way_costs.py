"""Measured costs of interchangeable ways of doing the same work: pick the cheaper one.

sim/ often has several exact ways to the same integers (a synapse path's float product, event
gather and int8 product; a split kernel's threads) whose speed depends on the machine, the
shapes, the firing and the load at the time. :class:`WayCosts` keeps, per way, its last few
measured seconds per unit of work and picks the way with the lower predicted time: ways not
yet timed first (in the order of their prior cost), then the cheapest, and now and then the
runner-up again, so a way that looked dearer than it is (or has become cheaper) is seen again.

On a shared machine a measurement is never below a way's cost, only above it (a call that
loses its core for a time slice measures 10-100x, page faults of a run's first calls 2-3x), so
a way's cost is the lowest of its last :data:`WINDOW` measurements, for every way alike. An
estimate that moves up by noise and down only by measuring shuns a way after one unlucky call:
the way not taken is not measured again, and its inflated estimate stays (VGG-13 at two
threads kept a convolution's int8 way at 5.7 ms after one 10 ms call of its 4.5 ms event
gather).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

#: measurements per way whose lowest is its cost: a way that has really become dearer (the
#: load or the firing changed) is seen so after this many calls
WINDOW = 4
#: calls after which the runner-up is timed again before the first ``retime_every``: a run's
#: first calls are slow (page faults, caches, compiles of other parts), and a way measured
#: only then would keep that cost until call ``retime_every``
EARLY_RETIMES = (8, 16, 32)


class WayCosts:
    """Seconds per unit of work of each of ``ways`` (``prior``: the assumed cost of a way not
    yet timed; it only orders the first calls). ``eager=False``: after the first way, a way
    not yet timed is first tried on a retime call, not on the calls right after (for a way
    that is rarely the cheaper one and slows its caller's first calls, which are being
    measured themselves). ``early``: the calls that time the runner-up (or try a way not yet
    timed) before the first ``retime_every``-th (default :data:`EARLY_RETIMES`)."""

    def __init__(
        self,
        prior: Mapping[str, float],
        retime_every: int = 64,
        *,
        eager: bool = True,
        early: tuple[int, ...] = EARLY_RETIMES,
    ) -> None:
        self.ways = list(prior)
        self.eager = eager
        self.early = early
        self.prior = dict(prior)
        self.retime_every = retime_every
        self.calls = 0
        self.cost: dict[str, float] = {}  # way -> seconds per unit of work (measured)
        self.samples: dict[str, deque[float]] = {}
        self.warm: set[str] = set()

    def choose(self, units: Mapping[str, float]) -> str:
        """The way to run next for ``units`` of work (per way: the ways may count work
        differently). Each way is timed on first use, untried ways in the order of their prior
        cost (where not ``eager``, the second and later ones on retime calls); then the
        cheapest, except on the ``early`` calls and every ``retime_every``-th, which time the
        runner-up (the other way likeliest to be the cheapest)."""
        self.calls += 1
        retime = self.calls in self.early or self.calls % self.retime_every == 0
        untimed = [w for w in sorted(self.ways, key=lambda w: self.prior[w] * units[w]) if w not in self.cost]
        ranked = sorted((w for w in self.ways if w in self.cost), key=lambda w: self.cost[w] * units[w])
        if untimed and (self.eager or retime or not ranked):
            return untimed[0]
        if len(ranked) > 1 and retime:
            return ranked[1]
        return ranked[0]

    def record(self, way: str, units: float, seconds: float) -> None:
        """``way`` took ``seconds`` for ``units`` of work. Its first use is not a measurement
        (it may include compiling); after it, the way's cost is the lowest seconds per unit of
        its last :data:`WINDOW` measurements (module docstring)."""
        if way not in self.warm:
            self.warm.add(way)
            return
        if not units:
            return
        window = self.samples.setdefault(way, deque(maxlen=WINDOW))
        window.append(seconds / units)
        self.cost[way] = min(window)
