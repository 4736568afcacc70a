"""NIR files written by other libraries' own exporters (tests/foreign/make_nir_fixtures.py, run
in a side environment with nir 1.0.4, which rockpool 3.1.0 pins), read with the project's nir."""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import pytest

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.backends.float.nir_graph import run_nir_reference
from lmh_deploy.frontends.nir import nir_to_graph, read_nir

FIXTURES = Path(__file__).parent / "foreign" / "nir_fixtures"


def test_rockpool_lif_file_imports_despite_its_batch_dimension_types() -> None:
    path = FIXTURES / "rockpool_lif.nir"
    with pytest.raises(ValueError, match="type"):
        nir.read(path)  # Input typed [1, 64] before a Linear of 64: nir's type check refuses it
    graph = nir_to_graph(path, dt=1e-3)  # rockpool's LIFTorch default dt
    assert graph.node("input").shape == (64,)
    lmh = graph.node("lmh0")  # LIFTorch -> CubaLIF, tau_mem = tau_syn = 20 ms
    np.testing.assert_allclose(lmh.lam_s, 0.95)
    np.testing.assert_allclose(lmh.mu_d, 0.95)
    x = np.random.default_rng(0).uniform(0, 1, (32, 64)) * 4.0
    ref = run_nir_reference(read_nir(path), x, 8, 1e-3, source_neurons=graph.meta["source_neurons"])
    ir = simulate_float(graph, x, 8)
    assert ir.spikes["lmh0"].any()
    assert np.array_equal(ref.spikes["lmh0"], ir.spikes["lmh0"])
    np.testing.assert_allclose(ref.logits, ir.logits, atol=1e-9)
