"""Write NIR fixture files with sinabs's and rockpool's own exporters.

Both pin ``nir <= 1.0.4``, so this runs in a side environment, not the project's::

    python3.11 -m venv .venv-nir104
    echo "$PROJECT_VENV/lib/python3.11/site-packages" > .venv-nir104/lib/python3.11/site-packages/zz.pth
    .venv-nir104/bin/pip install --no-deps nir==1.0.4 sinabs==3.1.3 rockpool==3.1.0 pbr
    .venv-nir104/bin/python tests/foreign/make_nir_fixtures.py

The nets are tiny and seeded (weights only: what matters is the file each exporter writes);
the suite reads the files with the project's nir (tests/test_nir_fixtures.py). The side venv
needs ``nirtorch==1.0`` too for sinabs; sinabs 3.1.3's ``to_nir`` still failed here (its IAF
state is empty when its extractor reads the layer shape), so only rockpool's file is stored.
"""

from pathlib import Path

import nir
import torch

OUT = Path(__file__).parent / "nir_fixtures"


def sinabs_iaf() -> nir.NIRGraph:
    import sinabs
    import sinabs.layers as sl

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), sl.IAF(), torch.nn.Linear(16, 10)
    )
    sample = torch.rand(1, 1, 8, 8)
    model(sample)  # sinabs sizes its states on the first call; to_nir reads them
    return sinabs.to_nir(model, sample)


def rockpool_lif() -> nir.NIRGraph:
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch, to_nir

    torch.manual_seed(0)
    net = Sequential(LinearTorch((64, 16)), LIFTorch(16), LinearTorch((16, 10)))
    return to_nir(net)


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, make in (("rockpool_lif", rockpool_lif),):
        graph = make()
        nir.write(OUT / f"{name}.nir", graph)
        print(name, {k: type(v).__name__ for k, v in graph.nodes.items()})
