"""Our batched, event-driven fixed-point simulator, bit-exact with the Lava fixed_pt models."""
from lmh_deploy.sim.simulator import simulate

__all__ = ["simulate"]
