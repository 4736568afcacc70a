"""Hybrid training, stage 1: convert a QCFS ANN into an LM-H SNN (Sec. 4.4, Algorithm 1).

The paper's recipe, as implemented by :func:`convert_qcfs_to_lmh`:

* weights, biases and norm layers (with their running statistics) are copied;
* ``theta`` of each LM-H neuron <- the learned ``theta`` of the QCFS activation at the
  same position (it stays a frozen scalar in the SNN, as in the paper);
* ``mu_D = 0, lambda_D = 1`` (the dendrite is transparent: ``vD[t] = I[t]``) and
  ``mu_S + lambda_S = 1`` with the choice ``mu_S = 0, lambda_S = 1``: the LM-H neuron is
  then exactly the IF neuron with reset by subtraction that QCFS models.
  The factors are ``h(x) = sigmoid(x) + b`` with open ranges ``mu in (-0.5, 0.5)``,
  ``lambda in (0.5, 1.5)``; the values 0 and 1 are the centres of those ranges (logit
  ``x = 0``, the paper's own initialisation), so they are represented exactly and no
  "just inside" value is needed;
* ``vD[0] = 0``, ``vS[0] = theta / 2`` (the neuron's own initial state; QCFS's shift 1/2);
* ``T = L`` steps by default (the QCFS level), as the paper trains.

Stage 2 (fine-tuning the factors and weights with STBP, few epochs, small lr) is an
ordinary :func:`models.train.train` run on the converted network; see
:func:`models.training_job.run_training_job` with ``hybrid_from``.

Why ``T = L``: an IF neuron from ``v = theta/2`` driven by a constant current ``x`` for
``L`` steps emits ``clip(floor(x L / theta + 1/2), 0, L)`` spikes of size ``theta``:
the first spiking layer reproduces the QCFS activation exactly; deeper layers see
uneven spike trains, so the network output matches the ANN approximately.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lmh_deploy.errors import InputError
from lmh_deploy.models.architectures import SpikingNet, build
from lmh_deploy.models.neuron import LMHNeuron
from lmh_deploy.models.qcfs import QCFS

#: Factor values of the converted neuron (IF: mu_D = mu_S = 0, lambda_D = lambda_S = 1).
IF_FACTORS = {"mu_d": 0.0, "mu_s": 0.0, "lam_d": 1.0, "lam_s": 1.0}


def convert_qcfs_to_lmh(
    ann: nn.Module,
    *,
    arch: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    arch_kwargs: dict[str, Any],
    timesteps: int | None = None,
    factors: str = "progressive",
) -> tuple[SpikingNet, dict[str, Any]]:
    """Build the LM-H SNN of a QCFS ANN (same ``arch``/``arch_kwargs``).

    Returns ``(snn, snn_kwargs)``.

    ``timesteps`` defaults to the QCFS level ``L``; ``factors`` is ``progressive`` or
    ``radical`` (every step starts from the same IF factors).
    """
    if arch_kwargs.get("neuron") != "qcfs":
        raise InputError(f"hybrid conversion needs a QCFS ANN, got neuron={arch_kwargs.get('neuron')!r}")
    if factors not in ("progressive", "radical"):
        raise InputError(
            f"hybrid conversion needs learnable LM-H factors (progressive or radical), got {factors!r}"
        )
    levels = int(arch_kwargs.get("qcfs_levels", 4))
    snn_kwargs = {**arch_kwargs, "neuron": "lmh", "factors": factors, "timesteps": int(timesteps or levels)}
    snn = build(arch, input_shape, num_classes, **snn_kwargs)
    qcfs_layers = [m for m in ann.modules() if isinstance(m, QCFS)]
    neurons = [m for m in snn.modules() if isinstance(m, LMHNeuron)]
    if len(qcfs_layers) != len(neurons):
        raise InputError(
            f"ANN has {len(qcfs_layers)} QCFS layers but the SNN {len(neurons)} "
            "neurons; the architectures differ"
        )
    state = dict(ann.state_dict())
    missing, unexpected = snn.load_state_dict(state, strict=False)
    # The only SNN entries the ANN lacks are the factor logits, which are set below.
    bad = [k for k in missing if not k.rsplit(".", 1)[-1].startswith("x_")]
    if bad or unexpected:
        raise InputError(
            f"ANN and SNN state dicts differ beyond the neuron factors: "
            f"missing {bad}, unexpected {list(unexpected)}"
        )
    with torch.no_grad():
        for q, n in zip(qcfs_layers, neurons):
            theta = q.theta.item()
            if not theta > 0:
                raise InputError(f"QCFS threshold {theta} is not positive; cannot convert")
            n.theta.fill_(theta)
            n.set_factors(**IF_FACTORS)
    return snn, snn_kwargs


def load_and_convert(
    path: str, *, timesteps: int | None = None, factors: str = "progressive"
) -> tuple[SpikingNet, dict[str, Any], dict[str, Any]]:
    """Read a QCFS checkpoint and convert it; returns ``(snn, snn_kwargs, ann payload)``."""
    from lmh_deploy.models.checkpoint import load_checkpoint

    ann, payload = load_checkpoint(path)
    ds = payload["dataset"]
    snn, kwargs = convert_qcfs_to_lmh(
        ann,
        arch=payload["arch"],
        input_shape=tuple(ds["input_shape"]),
        num_classes=int(ds["num_classes"]),
        arch_kwargs=payload["arch_kwargs"],
        timesteps=timesteps,
        factors=factors,
    )
    return snn, kwargs, payload
