"""Signed real-valued inputs (normalised images, values below 0), the tests that need no Lava:
the quantisation rule of signed and unsigned inputs at every width (docs/fixed-point.md §7) and
the refusal of non-finite calibration data. No Lava import, so scripts/mutation.sh can run them
(Lava sets the multiprocessing start method at import); the frontends' signed inputs through
sim and Lava are in tests/test_signed_inputs.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmh_deploy.errors import InputError
from lmh_deploy.ir import Input, IRError, QInput
from lmh_deploy.pipeline.compile_torch import compile_module
from lmh_deploy.semantics import integer as fx

from shared import paper_clone
from test_foreign_torch import randomise

T = 4


def normalised(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """CIFAR-like normalised pixels: (u - 0.48) / 0.2 for u uniform in [0, 1] (-2.4 .. 2.6)."""
    return (np.random.default_rng(seed).uniform(0, 1, (n, *shape)) - 0.48) / 0.2


def test_signed_quantisation_rule_and_unsigned_unchanged() -> None:
    x = np.array([-3.0, -2.0, -0.0079, -0.0078, 0.0, 0.0078, 1.0, 2.0, 5.0])
    scale = 127 / 2.0
    assert fx.quantize_input(x, scale, signed=True).tolist() == [-127, -127, -1, 0, 0, 0, 64, 127, 127]
    # Halves round up (towards +inf), as for unsigned inputs.
    assert fx.quantize_input(np.array([-0.5, 0.5, -1.5]), 1.0, signed=True).tolist() == [0, 1, -1]
    assert fx.quantize_input(x, 255 / 2.0).tolist() == [0, 0, 0, 0, 0, 1, 128, 255, 255]
    assert fx.input_range(8, signed=True) == (-127, 127) and fx.input_range(8) == (0, 255)
    assert fx.input_range(16, signed=True) == (-32767, 32767) and fx.input_range(24, True)[1] == 2**23 - 1
    # 16-bit: floor(x * 16383.5 + 1/2): -0.0079 -> floor(-128.93) = -129, 0.0078 -> floor(128.29)
    x16 = fx.quantize_input(x, 32767 / 2.0, 16, signed=True).tolist()
    assert x16 == [-32767, -32767, -129, -128, 0, 128, 16384, 32767, 32767]
    inp = Input(shape=(3,), x_max=2.0, signed=True)
    assert (inp.bits, inp.levels, inp.unit) == (8, 127, 2.0 / 127)  # a bare node: 8 bits
    assert Input(shape=(3,), x_max=2.0, signed=True, bits=16).levels == 32767
    assert Input(shape=(3,), x_max=2.0).levels == 255
    assert QInput(shape=(9,), scale=scale, bits=8, signed=True).max_value == 127
    assert QInput(shape=(9,), scale=scale, bits=16, signed=True).max_value == 32767
    assert (fx.default_input_bits(True), fx.default_input_bits(True, "loihi-lif")) == (16, 8)
    assert fx.default_input_bits(False) == 8
    with pytest.raises(IRError, match="spike input .* cannot be signed"):
        Input(shape=(3,), spikes=True, signed=True).check("input")
    with pytest.raises(IRError, match="input: signed input messages of 25 bits; use 2 to 24"):
        Input(shape=(3,), signed=True, bits=25).check("input")


def test_non_finite_calibration_is_one_line(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = randomise(paper_clone("resnet", width=4))
    bad = normalised(4, (1, 8, 8))
    bad[1, 0, 2, 2] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(InputError, match=r"bad.npy: calibration data must be finite"):
        compile_module(
            model, tmp_path / "out", input_shape=(1, 8, 8), timesteps=T, calibration=tmp_path / "bad.npy"
        )
    assert not (tmp_path / "out").exists()
