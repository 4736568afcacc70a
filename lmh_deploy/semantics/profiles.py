"""Numeric profiles: the declared integer arithmetic a compiled network runs under.

A profile fixes how factor products round, what happens when a state leaves 24 bits,
which factor multipliers are legal (and how hardware stores them), where the bias enters
and which neuron rules it can express. ``docs/fixed-point.md`` describes each profile and
why it exists; :func:`lmh_deploy.semantics.integer.lmh_step` implements all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from lmh_deploy.errors import InputError

Rounding = Literal["half-up", "toward-zero", "floor"]
DendriteOverflow = Literal["saturate", "wrap"]
SomaOverflow = Literal["saturate", "saturate-symmetric", "wrap"]
FactorEncoding = Literal["lmh", "cuba", "loihi-decay"]

RESETS = ("subtract", "set")
THRESHOLD_TESTS = (">=", ">")
RESET_TIMINGS = ("same-step", "next-step")
FACTOR_NAMES = ("mu_d", "mu_s", "lam_d", "lam_s")


@dataclass(frozen=True)
class NumericProfile:
    """One declared integer arithmetic (see the module docstring)."""

    name: str
    rounding: Rounding
    overflow_v_d: DendriteOverflow
    overflow_v_s: SomaOverflow
    factor_encoding: FactorEncoding
    input_shift: int
    bias_to: Literal["dendrite", "soma"]
    resets: tuple[str, ...]
    threshold_tests: tuple[str, ...]
    reset_timings: tuple[str, ...]
    #: Inclusive integer ranges (over 4096) of each full factor multiplier.
    factor_ranges: tuple[tuple[str, int, int], ...]
    #: Required value of the set-reset target / initial states (None: any).
    fixed_reset_value: int | None = None
    fixed_initial_state: int | None = None
    #: Thresholds must be ``vth << input_shift`` with vth below this (None: any 24-bit value).
    threshold_mantissa_bits: int | None = None
    #: Biases must be ``mant << exp``, mant signed with these bits, exp in [0, 7] (None: any).
    bias_mantissa_bits: int | None = None
    #: Fixed bias exponent (netx writes ``bias_exp = 6``), else the smallest that fits.
    fixed_bias_exp: int | None = None
    #: Fixed weight exponent (netx derives its own from the written integers, so 0), else the
    #: quantiser picks the largest that fits the current headroom.
    fixed_weight_exp: int | None = None
    #: Worst-case ``|a_in << input_shift|`` per step stays within ``2**current_headroom_bits``.
    current_headroom_bits: int = 20
    #: a soma floor (v_s_min, sinabs's min_v_mem) can be expressed
    soma_floor: bool = True
    summary: str = ""

    def factor_range(self, factor: str) -> tuple[int, int]:
        """Inclusive legal range of the full multiplier ``factor`` (over 4096)."""
        for name, lo, hi in self.factor_ranges:
            if name == factor:
                return lo, hi
        raise KeyError(factor)

    def rule_problem(
        self,
        reset: str,
        threshold_test: str,
        reset_timing: str,
        reset_value: float,
        v_d_init: Any,
        v_s_init: float,
    ) -> str | None:
        """Why this profile cannot express these neuron rules, or None if it can.

        Values are in integer state units (the set-reset target and initial states).
        """
        if reset not in self.resets:
            return f"reset '{reset}' (profile {self.name} supports {' | '.join(self.resets)})"
        if threshold_test not in self.threshold_tests:
            return (
                f"threshold test '{threshold_test}' (profile {self.name} supports "
                f"{' | '.join(self.threshold_tests)})"
            )
        if reset_timing not in self.reset_timings:
            return (
                f"reset timing '{reset_timing}' (profile {self.name} supports "
                f"{' | '.join(self.reset_timings)})"
            )
        if reset == "set" and self.fixed_reset_value is not None and reset_value != self.fixed_reset_value:
            return f"reset value {reset_value:g} (profile {self.name} resets to {self.fixed_reset_value})"
        if self.fixed_initial_state is not None:
            for what, value in (("v_d_init", v_d_init), ("v_s_init", v_s_init)):
                values = np.asarray(value)  # one value or one per neuron; a mask indexes either
                if np.any(values != self.fixed_initial_state):
                    shown = f"{values[values != self.fixed_initial_state][0]:g}"
                    return (
                        f"{what} {shown}{' (per neuron)' if values.size > 1 else ''} (profile "
                        f"{self.name} starts every state at {self.fixed_initial_state})"
                    )
        return None

    def as_dict(self) -> dict:
        """JSON-friendly description (stored in the artifact, shown in compile_report.json)."""
        return {
            "name": self.name,
            "rounding": self.rounding,
            "overflow_v_d": self.overflow_v_d,
            "overflow_v_s": self.overflow_v_s,
            "factor_encoding": self.factor_encoding,
            "factor_ranges": {n: [lo, hi] for n, lo, hi in self.factor_ranges},
            "input_shift": self.input_shift,
            "bias_to": self.bias_to,
            "fixed_weight_exp": self.fixed_weight_exp,
            "fixed_bias_exp": self.fixed_bias_exp,
            "current_headroom_bits": self.current_headroom_bits,
            "resets": list(self.resets),
            "threshold_tests": list(self.threshold_tests),
            "reset_timings": list(self.reset_timings),
            "summary": self.summary,
        }


LMH_PROFILE = NumericProfile(
    name="lmh",
    rounding="half-up",
    overflow_v_d="saturate",
    overflow_v_s="saturate",
    factor_encoding="lmh",
    input_shift=0,
    bias_to="dendrite",
    resets=RESETS,
    threshold_tests=THRESHOLD_TESTS,
    reset_timings=RESET_TIMINGS,
    # mu stored as signed 12 bits; lam stored as signed 12-bit lam - 4096.
    factor_ranges=(
        ("mu_d", -2048, 2047),
        ("mu_s", -2048, 2047),
        ("lam_d", 2048, 6143),
        ("lam_s", 2048, 6143),
    ),
    summary="LM-H as trained: products rounded half up, 24-bit states saturate (counted), "
    "signed 12-bit factors (lambda stored as lambda - 1)",
)

LOIHI_LIF_PROFILE = NumericProfile(
    name="loihi-lif",
    rounding="toward-zero",
    overflow_v_d="wrap",
    overflow_v_s="saturate-symmetric",
    factor_encoding="loihi-decay",
    input_shift=6,
    bias_to="soma",
    resets=("set",),
    threshold_tests=(">",),
    reset_timings=("same-step",),
    # Lava's LIF: current factor 4096 - (du + 1), voltage factor 4096 - dv, du, dv in [0, 4095].
    factor_ranges=(("mu_d", 0, 4095), ("mu_s", 0, 0), ("lam_d", 4096, 4096), ("lam_s", 1, 4096)),
    fixed_reset_value=0,
    fixed_initial_state=0,
    threshold_mantissa_bits=17,
    bias_mantissa_bits=13,
    fixed_bias_exp=6,
    fixed_weight_exp=0,
    # u = a_in << 6 must stay inside 24 bits (it wraps otherwise): one bit left for the decay.
    current_headroom_bits=22,
    soma_floor=False,  # Lava's LIF clips v only at +-(2**23 - 1)
    summary="Lava's PyLifModelBitAcc (CUBA LIF, lava-nc 0.10) bit for bit: products rounded "
    "toward zero, current u wraps at 24 bits, voltage v clips to +-(2**23 - 1), "
    "a_in << 6, theta = vth << 6, bias on the soma, spike on v > theta, v set to 0",
)

# lmh's arithmetic and rules, but mu_d a signed 13-bit code: a synaptic current decaying by up
# to 4095/4096 (rockpool LIFTorch's exp(-dt/tau_syn), norse LIFCell's 1 - dt/tau_syn), and
# lam_s's offset lam_s - 4096 a signed 13-bit code too, so that a membrane may keep less than
# half of itself a step (a trained SpikingJelly tau < 2, snnTorch beta < 0.5); both products
# stay below 2**13 * 2**23, as lmh's.
CUBA_PROFILE = replace(
    LMH_PROFILE,
    name="cuba",
    factor_encoding="cuba",
    factor_ranges=(("mu_d", -4096, 4095), *LMH_PROFILE.factor_ranges[1:3], ("lam_s", 0, 6143)),
    summary="lmh's arithmetic and rules (products rounded half up, 24-bit states saturate, "
    "bias on the dendrite) with a current-based dendrite: mu_d a signed 13-bit code "
    "[-4096, 4095] / 4096, synaptic current decays up to 0.9998, and membrane decays "
    "lam_s in [0, 6143] / 4096 (lam_s - 4096 a signed 13-bit code)",
)

PROFILES: dict[str, NumericProfile] = {p.name: p for p in (LMH_PROFILE, LOIHI_LIF_PROFILE, CUBA_PROFILE)}
DEFAULT_PROFILE = "lmh"


def get_profile(name: str) -> NumericProfile:
    """The registered profile ``name``; ValueError listing the choices otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise InputError(f"unknown numeric profile {name!r}; choose one of {', '.join(PROFILES)}") from None
