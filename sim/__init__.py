"""Our batched integer simulator, bit-exact with the Lava fixed_pt models.

``simulate`` runs one batch; ``simulate_batched`` runs any number of samples in mini-batches
under a memory budget (same record, bit for bit).
"""

from lmh_deploy.sim.batching import check_run_fits, default_batch_size, run_in_batches, simulate_batched
from lmh_deploy.sim.simulator import simulate
from lmh_deploy.sim import chain, kernel_cache

kernel_cache.refresh(chain._run)  # before any cached kernel loads: numba checks one file's stamp

__all__ = ["check_run_fits", "default_batch_size", "run_in_batches", "simulate", "simulate_batched"]
