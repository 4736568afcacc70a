"""Exchange formats: NIR (read and write) and lava-dl netx HDF5 (write).

* :mod:`lmh_deploy.interop.nir_export` -- float IR -> NIR graphs (``graph_to_nir``,
  ``write_nir``), convolutions included, and the measured error of the LIF
  approximation. The import side is a frontend: :mod:`lmh_deploy.frontends.nir`.
* :mod:`lmh_deploy.interop.netx_io` -- the netx HDF5 layout (``write_netx_layers``);
  :mod:`lmh_deploy.interop.netx_artifact` -- a compiled loihi-lif artifact -> netx HDF5,
  and its free run in Lava.

``docs/interop.md`` gives every discretisation and the known differences.
Nothing here imports Lava at module level; only ``netx_artifact.run_netx_artifact`` does.
"""

from __future__ import annotations

from lmh_deploy.errors import InteropError  # defined with the other user errors; frontends raise it too


def leaky_readout_refusal(name: str, fmt: str) -> str:
    """The one line that refuses exporting a leaky-integrator readout."""
    return (
        f"{name}: a leaky-integrator readout (norse LICell) cannot be exported to {fmt} yet; "
        f"deploy the artifact itself (sim/, Lava)"
    )


__all__ = ["InteropError", "leaky_readout_refusal"]
