"""The compiled network as a Lava building block, built from an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmh_deploy.pipeline.compile import Artifact, load_artifact


def lava_process(
    art: Artifact, *, precision: str = "fixed_pt", samples: int = 0, lava_conv: str = "auto"
) -> Any:
    """An :class:`~lmh_deploy.backends.lava.network.LMHNetwork` of a compiled artifact.

    ``fixed_pt`` uses the integer graph (bit-exact with ``run --backend lava`` and sim/),
    ``floating_pt`` the float graph. Connect your own source to its ``inp`` port and your own
    sink to ``out``; run it with ``Loihi2SimCfg(select_tag=precision)``. ``samples > 0``
    freezes the layers after that many samples (their final states are the last sample's).
    ``lava_conv`` (``fixed_pt``): which convolutions run on Lava's own Conv (``auto``,
    ``always``, ``never``; :func:`~lmh_deploy.backends.lava.plan.plan_lowering`);
    ``floating_pt`` keeps every convolution on Sparse.
    """
    from lmh_deploy.backends.lava.network import LMHNetwork
    from lmh_deploy.options import LAVA_CONV

    lava_conv = LAVA_CONV.check(lava_conv)

    if precision not in ("fixed_pt", "floating_pt"):
        raise ValueError(f"unknown precision {precision!r}; supported: fixed_pt, floating_pt")
    graph = art.quant_graph if precision == "fixed_pt" else art.float_graph
    return LMHNetwork(
        graph=graph,
        timesteps=art.timesteps,
        precision="fixed_pt" if precision == "fixed_pt" else "floating_pt",
        samples=samples,
        lava_conv=lava_conv,
    )


def lava_network(
    artifact: str | Path, *, precision: str = "fixed_pt", samples: int = 0, lava_conv: str = "auto"
) -> Any:
    """:func:`lava_process` of an artifact directory."""
    return lava_process(load_artifact(artifact), precision=precision, samples=samples, lava_conv=lava_conv)
