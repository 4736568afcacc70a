"""norse nets (``SequentialState`` of torch layers and ``LIFBoxCell``) deployed with one command.

The adapter (``lmh_deploy/frontends/neurons/norse.py``) was written from norse 1.1.0's source;
these tests run norse itself, the way its users do (``out, state = model(x, state)``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.backends.float.torch_source import run_source
from lmh_deploy.frontends.torch_fx import module_to_graph

from foreign import norse_style as ns
from shared import deploy_source

MODEL_FILE = Path(__file__).parent / "foreign" / "norse_style.py"


@pytest.mark.parametrize("kwargs", [{}, {"subtract": True}, {"v_leak": 0.05}, {"tau_mem_inv": 100.0}])
def test_float_ir_equals_norse_run_with_its_state(kwargs: dict, digits) -> None:
    torch.manual_seed(0)
    model = ns.mlp(**kwargs).eval()
    with torch.no_grad():
        model[1].weight.mul_(3.0)
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=ns.T)
    x = digits[2][:60]
    src = run_source(model, x.numpy(), ns.T, source_neurons=graph.meta["source_neurons"], output_index=0)
    ref = simulate_float(graph, x.numpy(), ns.T)
    assert 0.02 < ref.spikes["lmh0"].mean() < 0.95
    assert np.array_equal(src.spikes["lmh0"], ref.spikes["lmh0"])
    with torch.no_grad():  # the source run (state kept by the adapter) is norse's own loop
        np.testing.assert_allclose(src.logits, ns.rate(model, x).double().numpy(), atol=1e-6)
    np.testing.assert_allclose(src.logits, ref.logits, atol=1e-5)


@pytest.mark.slow
def test_norse_mlp_one_command(tmp_path: Path, digits) -> None:
    torch.manual_seed(0)
    model = ns.mlp()
    ns.train(model, digits[0], digits[1], epochs=2)
    assert ns.accuracy(model, digits[2], digits[3]) > 0.8
    deploy_source(model, f"{MODEL_FILE}:mlp", tmp_path, timesteps=ns.T)


def test_norse_lif_cell_refused_by_name() -> None:
    from norse.torch import LIFCell, SequentialState

    from lmh_deploy.frontends.neurons import NeuronError

    model = SequentialState(torch.nn.Flatten(), torch.nn.Linear(64, 8), LIFCell(), torch.nn.Linear(8, 10))
    with pytest.raises(
        NeuronError, match=r"^2 \(LIFCell\): norse LIFCell cannot be deployed: .* use norse.torch.LIFBoxCell"
    ):
        module_to_graph(model, input_shape=(1, 8, 8), timesteps=4)
