"""Declaration of the LM-H neuron Process: ports and Vars only."""

from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


class LMHNeuron(AbstractProcess):
    """Two-compartment LM-H neurons (dendrite ``v_d``, soma ``v_s``), Eq. 4 of the paper.

    Parameters
    ----------
    shape : neuron array shape.
    theta : threshold (integer for ``fixed_pt``, real for ``floating_pt``).
    mu_d, mu_s, lam_d, lam_s : (K, 1) or (K, n) factor tables, row ``min(t, K-1)`` at
        local step ``t``. For ``fixed_pt`` they are full integer multipliers over 4096
        (``lam = 1.25`` is 5120); for ``floating_pt`` they are real values.
    bias : (n,) input added every active step (to the dendrite, or to the soma where the
        numeric profile says so).
    profile : numeric profile name (``fixed_pt``: rounding, overflow, input shift, bias).
    reset, reset_value, threshold_test, reset_timing, v_d_init, v_s_init : the neuron
        rules (see :class:`lmh_deploy.ir.LMH`); ``v_s_init`` None is ``theta / 2``
        (``theta // 2`` in integers); ``v_d_init`` one value or (n,), one per neuron.
    start_step : the neuron is idle (no update, no spike) for global steps ``<= start_step``;
        compensates the one-step delay of each upstream Dense.
    reset_interval : states return to ``v_d_init, v_s_init`` every this many active
        steps (one sample after another in one run); 0 never resets.
    end_step : idle again after this global step (0: never), so final states are the last
        sample's.
    output_delay : ``s_out_delayed`` sends the spikes of ``output_delay`` steps ago (0: the
        port is unused). A residual shortcut that must arrive ``d`` steps late connects to it
        (then Lava's ``Sparse``) instead of a ``DelaySparse``, whose CPU model rebuilds its
        delay matrix every step (about a second per step for a 16k-neuron shortcut).
    record : send this layer's spikes and final state to the host through two channels
        (``spikes_to_host``: one message per active step; ``state_to_host``: one message at
        ``end_step``), read with :meth:`recorded_spikes` and :meth:`recorded_state` after
        the run. Needs ``end_step``. Far faster than ``Var.get()``, which moves one
        element per channel message in Lava 0.10.
    """

    def __init__(
        self,
        *,
        shape: tuple[int, ...],
        theta: float,
        mu_d: np.ndarray,
        mu_s: np.ndarray,
        lam_d: np.ndarray,
        lam_s: np.ndarray,
        bias: np.ndarray,
        start_step: int = 0,
        reset_interval: int = 0,
        end_step: int = 0,
        profile: str = "lmh",
        reset: str = "subtract",
        reset_value: float = 0,
        threshold_test: str = ">=",
        reset_timing: str = "same-step",
        v_d_init: float | np.ndarray = 0,
        v_s_init: float | None = None,
        max_spikes: int = 1,
        v_s_min: float | None = None,
        output_delay: int = 0,
        record: bool = False,
        name: str | None = None,
    ) -> None:
        tables = {"mu_d": mu_d, "mu_s": mu_s, "lam_d": lam_d, "lam_s": lam_s}
        rows = np.asarray(mu_d).shape[0]
        for key, table in tables.items():
            table = np.asarray(table)
            if table.ndim != 2 or table.shape[0] != rows or table.shape[1] not in (1, int(np.prod(shape))):
                raise ValueError(f"LMHNeuron: {key} must be (K, 1) or (K, n), got {table.shape}")
        if theta <= 0:
            raise ValueError(f"LMHNeuron: theta must be > 0, got {theta}")
        if min(start_step, reset_interval, end_step, output_delay) < 0:
            raise ValueError("LMHNeuron: start_step, reset_interval, end_step and output_delay must be >= 0")
        if record and not end_step:
            raise ValueError("LMHNeuron: record needs an end_step (a finite number of samples)")
        if v_s_init is None:
            v_s_init = theta / 2 if isinstance(theta, float) else theta // 2
        # The rules travel as process parameters: strings the models read once.
        super().__init__(
            shape=shape,
            name=name,
            profile=profile,
            reset=reset,
            threshold_test=threshold_test,
            reset_timing=reset_timing,
            max_spikes=int(max_spikes),
            v_s_min=v_s_min,
            output_delay=output_delay,
            record=record,
        )
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        size = int(np.prod(shape))
        self.s_out_delayed = OutPort(shape=shape)
        self.delay_line = Var(shape=(max(output_delay, 1), size), init=0)  # oldest first
        self.recorded_steps = end_step - start_step if record else 0
        self.spikes_to_host = OutPort(shape=(size,))
        self.state_to_host = OutPort(shape=(2 * size + 1,))  # v_d, v_s, saturation count
        if record:
            self.spikes_to_host.flag_external_pipe(buffer_size=self.recorded_steps)
            self.state_to_host.flag_external_pipe(buffer_size=1)
        v_d_init = np.broadcast_to(np.asarray(v_d_init).reshape(-1), (size,)).reshape(shape).copy()
        self.v_d = Var(shape=shape, init=v_d_init)
        self.v_s = Var(shape=shape, init=v_s_init)
        self.s_prev = Var(shape=shape, init=0)  # last step's spikes (next-step reset timing)
        self.reset_value = Var(shape=(1,), init=reset_value)
        self.v_d_init = Var(shape=shape, init=v_d_init)  # per neuron (a rockpool bias, say)
        self.v_s_init = Var(shape=(1,), init=v_s_init)
        self.theta = Var(shape=(1,), init=theta)
        self.bias = Var(shape=shape, init=np.asarray(bias).reshape(shape))
        for key, table in tables.items():
            setattr(self, key, Var(shape=np.asarray(table).shape, init=np.asarray(table)))
        self.start_step = Var(shape=(1,), init=start_step)
        self.reset_interval = Var(shape=(1,), init=reset_interval)
        self.end_step = Var(shape=(1,), init=end_step)
        self.saturation_count = Var(shape=(1,), init=0)

    def recorded_spikes(self) -> np.ndarray:
        """``(steps, n)`` bool: the spikes of every active step, in order (after a run with
        ``record``)."""
        port = self.spikes_to_host.external_pipe_csp_recv_port
        spikes = np.stack([port.recv() for _ in range(self.recorded_steps)])
        return spikes.astype(bool if self.proc_params["max_spikes"] == 1 else np.int16)

    def recorded_state(self) -> tuple[np.ndarray, np.ndarray, int]:
        """``(v_d, v_s, saturation_count)`` at ``end_step`` (after a run with ``record``)."""
        values = self.state_to_host.external_pipe_csp_recv_port.recv()
        n = (values.size - 1) // 2
        return values[:n], values[n : 2 * n], int(values[-1])


class LMHGradedNeuron(LMHNeuron):
    """:class:`LMHNeuron` with ``max_spikes > 1``: its ports carry spike counts (graded spikes)."""

    def __init__(self, **kwargs) -> None:
        if int(kwargs.get("max_spikes", 1)) < 2:
            raise ValueError("LMHGradedNeuron: max_spikes must be > 1 (use LMHNeuron)")
        super().__init__(**kwargs)


def neuron_process(**kwargs) -> LMHNeuron:
    """An :class:`LMHNeuron`, or an :class:`LMHGradedNeuron` where ``max_spikes > 1``."""
    return (LMHGradedNeuron if int(kwargs.get("max_spikes", 1)) > 1 else LMHNeuron)(**kwargs)
