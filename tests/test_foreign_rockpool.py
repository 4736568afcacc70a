"""rockpool ``LinearTorch -> LIFTorch -> LinearTorch`` nets: refused in one line naming the
module (docs/interop.md, "Not yet", says why no numeric profile holds ``LIFTorch``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rockpool.nn.combinators import Sequential
from rockpool.nn.modules import LIFTorch, LinearTorch

from lmh_deploy.frontends.neurons import NeuronError
from lmh_deploy.frontends.torch_fx import module_to_graph

from shared import invoke

BUILDER = """
from rockpool.nn.combinators import Sequential
from rockpool.nn.modules import LIFTorch, LinearTorch


def net():
    return Sequential(LinearTorch((64, 32)), LIFTorch(32), LinearTorch((32, 10)))
"""


def test_rockpool_lif_net_is_refused_in_one_line(tmp_path: Path) -> None:
    net = Sequential(LinearTorch((64, 32)), LIFTorch(32), LinearTorch((32, 10)))
    with pytest.raises(
        NeuronError, match=r"^1_LIFTorch \(LIFTorch\): rockpool LIFTorch cannot be deployed: "
    ):
        module_to_graph(net, input_shape=(64,), timesteps=8)
    builder, weights = tmp_path / "rockpool_net.py", tmp_path / "net.pt"
    builder.write_text(BUILDER)
    torch.save(net.state_dict(), weights)
    res = invoke(
        "compile", weights, "--model", f"{builder}:net", "--input-shape", "64", "--timesteps", 8,
        "--dataset", "digits", "-o", tmp_path / "build",
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "rockpool LIFTorch cannot be deployed" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "build").exists()
