"""Write NIR fixture files with sinabs's and rockpool's own exporters, and each library's own
run of the same net on 50 digits test samples (the reference the suite compares against).

Both pin ``nir <= 1.0.4``, so this runs in a side environment, not the project's::

    python3.11 -m venv .venv-nir104
    echo "$PROJECT_VENV/lib/python3.11/site-packages" > .venv-nir104/lib/python3.11/site-packages/zz.pth
    .venv-nir104/bin/pip install --no-deps nir==1.0.4 nirtorch==1.0 sinabs==3.1.3 rockpool==3.1.0 pbr
    .venv-nir104/bin/python tests/foreign/make_nir_fixtures.py [NAME ...]

(the ``.pth`` line lends the side venv the project's torch 2.13, numpy and scikit-learn; the
side venv's own nir 1.0.4 comes first on the path). Each net is trained a few epochs on the
digits training split in its library's own style (BPTT through the library's modules, the
image repeated over ``T`` steps, cross-entropy on the mean readout over time), exported with
the library's own ``to_nir``, and run by the library itself on the first 50 test samples:
``<name>.nir`` and ``<name>_reference.npz`` (``x`` the inputs, ``logits`` the library's mean
readout over the ``T`` steps, ``spikes`` the spike count per step of the first spiking layer,
``T``, ``dt``). The suite (tests/test_nir_fixtures.py) reads them with the project's nir.

Why an earlier attempt's ``sinabs.to_nir`` failed: a sinabs ``IAF`` (not ``Squeeze``) takes
``(batch, time, neurons)``; fed ``(batch, neurons)`` it took the neurons for time steps and
its state had no neuron dimension, so its extractor's ``torch.ones(*v_mem.shape[1:])`` got
no size. With the layout sinabs expects, ``to_nir`` works.
"""

from pathlib import Path

import nir
import numpy as np
import torch
from sklearn.datasets import load_digits

OUT = Path(__file__).parent / "nir_fixtures"
T = 8
EVAL = 50


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The project's digits split (models/data.py: 20 % test, seed 0), images in [0, 1]."""
    d = load_digits()
    x = torch.tensor(d.images.reshape(-1, 1, 8, 8) / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    perm = np.random.default_rng(0).permutation(len(x))
    n_test = int(round(0.2 * len(x)))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test][:EVAL], y[test][:EVAL]


def train(step, params, x, y, *, epochs: int, lr: float) -> None:
    """BPTT: ``step(xb)`` returns the mean readout over T of a fresh-state run."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            idx = perm[start : start + 64]
            loss = torch.nn.functional.cross_entropy(step(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def sinabs_nets():
    import sinabs
    import sinabs.layers as sl

    def seq_run(model, squeeze: bool):
        def run(x):  # x (B, 1, 8, 8): repeated over T
            sinabs.reset_states(model)
            b = x.shape[0]
            if squeeze:  # (B*T, C, H, W), batch-major as IAFSqueeze unflattens it
                out = model(x.unsqueeze(1).repeat(1, T, 1, 1, 1).flatten(0, 1))
                return out.reshape(b, T, -1)
            return model(x.flatten(1).unsqueeze(1).repeat(1, T, 1))  # (B, T, 64)

        return run

    torch.manual_seed(0)
    iaf = torch.nn.Sequential(torch.nn.Linear(64, 32), sl.IAF(), torch.nn.Linear(32, 10))
    yield "sinabs_iaf", iaf, seq_run(iaf, False), torch.zeros(1, 1, 64), iaf[1]
    torch.manual_seed(0)
    lif = torch.nn.Sequential(torch.nn.Linear(64, 32), sl.LIF(tau_mem=8.0), torch.nn.Linear(32, 10))
    yield "sinabs_lif", lif, seq_run(lif, False), torch.zeros(1, 1, 64), lif[1]
    torch.manual_seed(0)
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1, bias=False),
        sl.IAFSqueeze(num_timesteps=T),
        sl.SumPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1, bias=False),
        sl.IAFSqueeze(num_timesteps=T),
        sl.SumPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 10),
    )
    yield "sinabs_conv", conv, seq_run(conv, True), torch.zeros(T, 1, 8, 8), conv[1]


def rockpool_nets():
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch

    from rockpool.parameters import Constant

    torch.manual_seed(0)
    # time constants held fixed (rockpool's Constant): trained, 20 ms taus go negative (NaN)
    lif = LIFTorch(32, tau_mem=Constant(0.02), tau_syn=Constant(0.02))
    net = Sequential(LinearTorch((64, 32)), lif, LinearTorch((32, 10)))

    def run(x):
        net.reset_state()
        out, _, _ = net(x.flatten(1).unsqueeze(1).repeat(1, T, 1))
        return out

    yield "rockpool_lif", net, run, None, lif


def export(name: str, model, sample):
    if name.startswith("sinabs"):
        import sinabs

        sinabs.reset_states(model)
        model(sample)  # sinabs sizes its states on the first call; to_nir reads them
        graph = sinabs.to_nir(model, sample)
        # sinabs writes Conv2d(input_shape=None), which nir.write cannot store (h5py refuses
        # None): fill in each convolution's input (H, W), as NIR defines the field
        # and Flatten(input_type=None) likewise: its input type, (C, H, W) after the last pool
        hw = iter([(8, 8), (4, 4)])
        for key, node in graph.nodes.items():
            if isinstance(node, nir.Conv2d) and node.input_shape is None:
                node.input_shape = next(hw)
            if isinstance(node, nir.Flatten) and node.input_type["input"] is None:
                graph.nodes[key] = nir.Flatten(
                    input_type={"input": np.array([16, 2, 2])}, start_dim=node.start_dim, end_dim=node.end_dim
                )
        return graph
    from rockpool.nn.modules import to_nir

    return to_nir(model)


def main(only: list[str]) -> None:
    """Write every fixture, or those named in ``only``."""
    OUT.mkdir(exist_ok=True)
    x_train, y_train, x_eval, y_eval = digits()
    for maker in (sinabs_nets, rockpool_nets):
        for name, model, run, sample, first in maker():
            if only and name not in only:
                continue
            params = model.parameters()
            params = params.astorch() if isinstance(params, dict) else list(params)  # rockpool's
            train(lambda xb: run(xb).mean(1), params, x_train, y_train, epochs=3, lr=3e-3)
            counts = []

            def keep(module, args, out):
                counts.append(out[0] if isinstance(out, tuple) else out)

            hook = first.register_forward_hook(keep) if isinstance(first, torch.nn.Module) else None
            with torch.no_grad():
                trace = run(x_eval)  # (B, T, 10)
            if hook is not None:
                hook.remove()
            graph = export(name, model, sample)
            nir.write(OUT / f"{name}.nir", graph)
            spikes = counts[-1].detach().numpy() if counts else np.zeros(0)
            np.savez_compressed(
                OUT / f"{name}_reference.npz",
                x=x_eval.numpy(),
                labels=y_eval.numpy(),
                logits=trace.mean(1).numpy(),
                first_layer_output=spikes,
                T=T,
                dt=1e-3 if name.startswith("rockpool") else 1.0,
            )
            acc = float((trace.mean(1).argmax(1) == y_eval).float().mean())
            print(
                name,
                {k: type(v).__name__ for k, v in graph.nodes.items()},
                f"accuracy {acc:.2f}",
                f"max spikes/step {float(spikes.max()) if spikes.size else 'n/a'}",
            )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
