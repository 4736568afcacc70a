"""Source vs deployed prediction agreement of a trained network of the paper's kinds.

    nice -n 10 python bench/paper_agreement.py --kind resnet19-TEBN --hybrid-ann-epochs 5 --epochs 0 \
        --train-samples 600 --batch 16 --ann-lr 0.05 --ann-thresh 2 --samples 64 --keep DIR --json out.json

Trains the network as ``tests/test_paper_trained.py`` does (built by the builder file inside
the fake clone ``tests/paper_clone``, as the paper's main.py builds it; surrogate gradients on
scikit-learn's digits upsampled to 3 x 32 x 32 colour images normalised with CIFAR-10's mean
and std), saves its state_dict, and compiles, verifies and runs it with the ``lmh-deploy``
command from a working directory outside the clone. Prints the source (PyTorch, as the
paper's ``eval_snn`` runs it) and deployed accuracy, their prediction agreement on
``--samples`` test images and Lava == sim/ on the first ``--lava-samples``.

Kinds: those of the test (``resnet20``, ``resnet20-TEBN``, ``resnet20-online``,
``cifarnet-VotingLayer``: narrow, CI-sized) and ``resnet19-TEBN``, the paper's Tab. 1
network at its full width (stem 64; stages 128, 256, 512) with TEBN. It is not in the test
suite: training it takes CPU-hours at 1200 images x 6 epochs (about 0.7 CPU s per image and
epoch, one thread), so ``--epochs`` and ``--train-samples`` make it brief; and with TEBN all
T = 4 steps of a mini-batch go through autograd at once (about 0.35 GB per image: 64 images
took 13 GB), so ``--micro-batch 8`` adds up the gradients of parts of 8 images (3.2 GB).
``--hybrid-ann-epochs N`` takes the paper's cheaper hybrid route instead (its main.py): the
QCFS ANN (TEBN in place already) trained N epochs with the paper's SGD, one pass per image and
no T loop (about 0.14 CPU s per image and epoch for ResNet-19), converted in place by
``replace_QCFS_by_Lneuron`` (each learnt QCFS threshold becomes its neuron's threshold; the
weights and TEBN statistics carry over), then ``--epochs`` of SNN training (0: none).
The JSON records the training's CPU and wall time and peak RSS and the largest peak RSS of
the ``lmh-deploy`` commands; ``--keep DIR`` keeps the state_dict and the artifact.
``--lava-samples`` defaults to 0: one Lava sample of ResNet-19 was OOM-killed at 17.7 GB
while Lava took each convolution as a CSR matrix; on Lava's own Conv (now) one sample takes
about 2 GB and 9 CPU minutes (``bench/lava_conv.py``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
CLONE = TESTS / "paper_clone"
EXTRA_KINDS = {"resnet19-TEBN": {"arch": "resnet19", "use_TEBN": True}}


def main() -> None:
    sys.path.insert(0, str(TESTS))
    import test_paper_trained as paper  # the test's training and deployment, not a copy

    kinds = {**paper.KINDS, **EXTRA_KINDS}
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=sorted(kinds), default="resnet19-TEBN")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--train-samples", type=int, default=1200, help="of the 1797 digits; the rest test")
    ap.add_argument("--samples", type=int, default=64, help="test images verified and run (<= 597)")
    ap.add_argument("--lava-samples", type=int, default=0, help="Lava == sim/ on these (ResNet-19: > 17 GB)")
    ap.add_argument("--batch", type=int, default=64, help="training mini-batch (images per Adam step)")
    ap.add_argument(
        "--micro-batch",
        type=int,
        default=None,
        help="images per forward/backward pass, gradients added up over the mini-batch (peak memory)",
    )
    ap.add_argument(
        "--lr", type=float, default=0.01, help="SNN training's initial learning rate (cosine-annealed)"
    )
    ap.add_argument(
        "--sgd", action="store_true", help="SNN training with the paper's SGD (momentum 0.9), not Adam"
    )
    ap.add_argument(
        "--hybrid-ann-epochs",
        type=int,
        default=0,
        help="the paper's hybrid route: train the QCFS ANN this many epochs, convert, then --epochs of SNN",
    )
    ap.add_argument("--ann-lr", type=float, default=0.05, help="the ANN's initial SGD learning rate")
    ap.add_argument("--ann-thresh", type=float, default=2.0, help="the QCFS ANN's initial threshold (learnt)")
    ap.add_argument("--input-bits", type=int, default=None, help="compile --input-bits (default: its own)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds each lmh-deploy command may take")
    ap.add_argument("--keep", type=Path, default=None, help="work in this new folder, not a temporary one")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(CLONE))
    builder = importlib.import_module("deploy_model")
    extra = ("--input-bits", str(args.input_bits)) if args.input_bits else ()
    started = time.time()
    phases = {"started": started}

    def log(line: str) -> None:
        phases["trained"] = time.time()  # the last line comes after the training
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.keep:
            args.keep.mkdir(parents=True)  # a new folder: never writes into an existing one
            work = args.keep.resolve()
        out = paper.train_and_deploy(
            builder,
            kinds[args.kind],
            work,
            epochs=args.epochs,
            samples=args.samples,
            lava_samples=args.lava_samples,
            train_samples=args.train_samples,
            batch=args.batch,
            micro_batch=args.micro_batch,
            lr=args.lr,
            sgd=args.sgd,
            ann_epochs=args.hybrid_ann_epochs,
            ann_lr=args.ann_lr,
            ann_thresh=args.ann_thresh,
            log=log,
            extra=extra,
            timeout=args.timeout,
        )
    finished = time.time()
    ff, lava = out["verify"]["float_vs_fixed"], out["verify"]["lava_vs_sim"]
    first = next(r for r in out["compile"]["layers"] if r["kind"] == "dense")
    result = {
        "kind": args.kind,
        "build": kinds[args.kind],
        "epochs": args.epochs,
        "train_samples": args.train_samples,
        "batch": args.batch,
        "micro_batch": args.micro_batch,
        "lr": args.lr,
        "optimiser": "SGD" if args.sgd else "Adam",
        "hybrid": None
        if not args.hybrid_ann_epochs
        else {
            "ann_epochs": args.hybrid_ann_epochs,
            "ann_lr": args.ann_lr,
            "ann_thresh": args.ann_thresh,
            "ann_accuracy": out["ann_accuracy"],
            "converted_accuracy": out["converted_accuracy"],
            "ann_cpu_s": round(out["ann_cpu_s"], 1),
        },
        "samples": out["verify"]["samples"],
        "input": out["compile"]["input"],
        "first_layer_weight_error_rel": first["max_weight_error_rel"],
        "first_layer_weight_exp": first["weight_exp"],
        "accuracy_source": ff["accuracy_float"],
        "accuracy_deployed": ff["accuracy_fixed"],
        "source_classes_predicted": len(set(out["source_predictions"].tolist())),
        "prediction_agreement": ff["prediction_agreement"],
        "spike_agreement": ff["spike_agreement"],
        "run_accuracy": out["run"]["accuracy"],
        "lava_samples": lava["samples"],
        "lava_mismatches": None  # verify reports no counts when Lava did not run
        if not lava["samples"]
        else lava["mismatched_spikes"] + lava["state_mismatches"] + lava["readout_mismatches"],
        "train_cpu_s": round(out["train_cpu_s"], 1),
        "train_wall_s": round(phases["trained"] - started, 1),
        "deploy_wall_s": round(finished - phases["trained"], 1),
        "wall_s": round(finished - started, 1),
        # ru_maxrss is KiB on Linux; the commands' is the largest of them (and their processes)
        "train_peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "commands_peak_rss_gb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
