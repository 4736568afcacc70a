"""Render BENCHMARKS.md's tables from the JSON the bench scripts write.

Every table of BENCHMARKS.md sits between ``<!-- table: NAME -->`` and ``<!-- /table -->``;
this script rewrites those blocks from ``bench/NAME.json`` (the prose around them is
written by hand and only explains). A JSON that is missing leaves its block as it is.

    python bench/report.py            # rewrite BENCHMARKS.md in place
    python bench/report.py --check    # exit 1 if BENCHMARKS.md differs from the JSON
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _spread(s: dict[str, float], unit: str = "x", digits: int = 2) -> str:
    return f"**{s['median']:.{digits}f}{unit}** [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def _ms(s: dict[str, float]) -> str:
    return f"{1e3 * s['median']:.3g}"


def _stamp(record: dict[str, Any]) -> str:
    env = record["environment"]
    dirty = " (uncommitted changes)" if env.get("git_dirty") else ""
    return (
        f"`{record['command']}` - {env['date_utc']}, commit {env['git_commit']}{dirty}, "
        f"{env['cpus']} CPUs ({env['cpu_model']}), {env['threads']} thread(s), load average "
        f"{env['load_average_start'][0]:.1f} at the start, {env['load_average_end'][0]:.1f} at the end\n"
    )


def _run(row: dict[str, Any], record: dict[str, Any]) -> str:
    """Date and commit of the run that measured a row (``--update`` merges rows of several)."""
    env = row.get("run", record)["environment"]
    return f"{env['date_utc']}, {env['git_commit']}{' (dirty)' if env.get('git_dirty') else ''}"


def _layers(row: dict[str, Any]) -> str:
    rates = list(row["firing_rate_per_layer"].values())
    if len(rates) <= 4:
        return ", ".join(f"{100 * r:.1f}" for r in rates)
    return f"layers {100 * min(rates):.1f}-{100 * max(rates):.1f}, each below"


def _sim_variant(row: dict[str, Any], record: dict[str, Any]) -> str:
    """sim/'s thread count in a row: the fastest on warm-up, or (runs before sim/ was picked
    at its best) the one fixed thread count it ran at."""
    if "sim_variant" in row:
        return str(row["sim_variant"])
    threads = row.get("run", record)["environment"]["threads"]
    return f"{threads} thread{'s' if threads > 1 else ''} (fixed)"


def _one_thread_each(row: dict[str, Any], record: dict[str, Any]) -> bool:
    """Both sides of a row ran one thread (only then is a CPU-time ratio comparable)."""
    return "1 thread" in row["float_variant"] and _sim_variant(row, record).startswith("1 thread")


def sim_vs_float(record: dict[str, Any]) -> str:
    out = [
        _stamp(record),
        "| row | T | batch | firing % (per layer) | float: fastest variant | sim: fastest | "
        "sim ms/sample | float ms/sample | **sim / float** (wall) | dense-only sim / float | "
        "sim / float, CPU time | spikes = reference |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        secs = row["seconds_per_sample"]
        cpu = _spread(row["cpu_sim_over_float"]) if _one_thread_each(row, record) else "-"
        out.append(
            f"| {row['row']} | {row['T']} | {row['batch']} | {100 * row['firing_rate']:.1f} "
            f"({_layers(row)}) | {row['float_variant']} | {_sim_variant(row, record)} | "
            f"{_ms(secs['sim'])} | {_ms(secs['float'])} | "
            f"{_spread(row['sim_over_float'])} | {_spread(row['sim_dense_over_float'])} | {cpu} | "
            f"{'yes' if row['spikes_identical'] else '**no**'} ({row['checked_samples']} samples"
            f"{_threads_checked(row)}) |"
        )
    calibrated = [row for row in record["rows"] if row["calibrated_rate"] is not None]
    for row in calibrated:
        rates = ", ".join(f"{100 * r:.1f}" for r in row["firing_rate_per_layer"].values())
        out.append(
            f"\n{row['row']} (BN-calibrated to {100 * row['calibrated_rate']:.0f} % per layer in "
            f"float), firing % per LM-H layer in sim/, in network order: {rates}"
        )
    rounds = record["rows"][0]["timing"]["rounds"]
    out.append(f"\nRatios: median [min-max] of {rounds} alternated rounds.")
    for row in record["rows"]:
        env = row.get("run", record)["environment"]
        out.append(
            f"`{row['row']}` measured {_run(row, record)}, load average "
            f"{env['load_average_start'][0]:.1f} -> {env['load_average_end'][0]:.1f}."
        )
    return "\n".join(out) + "\n"


def _threads_checked(row: dict[str, Any]) -> str:
    counts = row.get("checked_threads")
    return f", at {' and '.join(map(str, counts))} threads" if counts else ""


GOALS = {"mlp": 6.0, "mlp-b1": 15.0, "resnet19": 3.0, "vgg13": 3.0}


def sim_vs_float_goals(record: dict[str, Any]) -> str:
    """Issue 22's goals: per row sim/ over float (wall, median of alternated rounds) at least
    the row's goal (1x where it names none). The dense-only column of the main table (sim/
    with its event-driven ways off) is a diagnostic, not a goal: the issue's "dense-only"
    means nets made only of dense layers, i.e. the MLP rows."""
    out = [
        _stamp(record),
        "| goal | measured: median [min-max] of alternated rounds, wall | CPU time | load average | run "
        "| met |",
        "|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        loads = [load[0] for load in row["timing"]["load_per_round"]]
        load = f"{min(loads):.0f}-{max(loads):.0f}"
        goal = GOALS.get(row["row"], 1.0)
        ratio = row["sim_over_float"]
        cpu = _spread(row["cpu_sim_over_float"]) if _one_thread_each(row, record) else "-"
        met = "yes" if ratio["median"] >= goal else "**no**"
        label = f"{row['row']}: sim/ ({_sim_variant(row, record)}) / float ({row['float_variant']})"
        out.append(
            f"| {label} >= {goal:g}x | {_spread(ratio)} | {cpu} | {load} | {_run(row, record)} | {met} |"
        )
    return "\n".join(out) + "\n"


def sim_profile(record: dict[str, Any]) -> str:
    out = [
        _stamp(record),
        "| row | side | CPU s per run | parts (share of the run) | ns per neuron-step, neuron part |",
        "|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        for side, key, ns_key in (
            ("sim/", "sim", "sim neuron kernel"),
            ("lean float", "float_lean", "float LM-H update"),
        ):
            prof = row[key]
            parts = ", ".join(f"{name} {100 * share:.0f} %" for name, share in prof["fractions"].items())
            out.append(
                f"| {row['row']} | {side} | {prof['cpu_s_per_run']:.4g} | {parts} | "
                f"{row['ns_per_neuron_step'][ns_key]:.2f} |"
            )
    return "\n".join(out) + "\n"


def chain_ab(record: dict[str, Any]) -> str:
    timing = record["timing"]
    cpu, ratio = timing["cpu_seconds"], timing["cpu_ratios"]["ref / tree"]
    loads = [load[0] for load in timing["load_per_round"]]
    return (
        _stamp(record)
        + "\n| row | other side | CPU ms per run, other / this tree | **other / this tree**, CPU time "
        "| same integers | load average over the rounds |\n|---|---|---|---|---|---|\n"
        f"| {record['row']} | {record['ref']} | {_ms(cpu['ref'])} / {_ms(cpu['tree'])} | "
        f"{_spread(ratio, digits=3)} | {'yes' if record['same_integers'] else '**no**'} | "
        f"{min(loads):.1f}-{max(loads):.1f} |\n"
        f"\nMedians [min-max] of {timing['rounds']} alternated rounds, one thread.\n"
    )


def conv_ways(record: dict[str, Any]) -> str:
    out = [
        _stamp(record),
        "| row | layer | C_in -> C_out | input H x W | input | firing of the input | event gather, ms "
        "| int8 conv, ms | **int8 / gather** |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        for layer in row["layers"]:
            c_out, c_in = layer["kernel"][:2]
            h, w = layer["input_hw"]
            out.append(
                f"| {row['row']} | {layer['layer']} | {c_in} -> {c_out} | {h} x {w} | "
                f"{'sum-pooled spikes' if layer['pooled_input'] else 'spikes'} | {layer['input_rate']:.3f} | "
                f"{layer['ms']['events']:.2f} | {layer['ms']['int8']:.2f} | "
                f"{_spread(layer['int8_over_events'])} |"
            )
    return "\n".join(out) + (
        "\n\nOne thread; each layer's call on its input of one run (rows: T x batch of a chunk); "
        "medians [min-max] of alternated rounds.\n"
    )


def compile_time(record: dict[str, Any]) -> str:
    out = [
        _stamp(record),
        "| net (input) | parameters | seconds (wall) | CPU seconds | neurons | synapses | Loihi 2 cores "
        "| chips |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        shape = "x".join(str(d) for d in r["input_shape"])
        out.append(
            f"| {r['arch']} ({shape}) | {r['parameters']:,} | {r['seconds']:.3g} | "
            f"{r.get('cpu_seconds', float('nan')):.3g} | {r['neurons']:,} | "
            f"{r['synapses']:,} | {r['loihi2_cores']:,} | {r['loihi2_chips']} |"
        )
    return "\n".join(out) + "\n"


def sim_scaling(record: dict[str, Any]) -> str:
    out = [
        _stamp(record),
        "| net | neurons | synapses | T | batch | ms per sample | us per sample-step |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        out.append(
            f"| {r['arch']} (width {r['width_mult']:g}) | {r['neurons']:,} | {r['synapses']:,} | {r['T']} | "
            f"{r['batch']} | {r['ms_per_sample']:.3g} | {r['us_per_sample_step']:.3g} |"
        )
    return "\n".join(out) + "\n"


def sim_memory(record: dict[str, Any]) -> str:
    out = [_stamp(record), "| samples | mode | batch size | peak RSS GB |", "|---|---|---|---|"]
    modes = {"all": "all at once, spikes recorded", "batched": "mini-batches, spikes recorded"}
    for r in record["rows"]:
        mode = modes.get(r["mode"], "mini-batches, `--stream`")
        out.append(f"| {r['samples']} | {mode} | {r['batch_size']} | {r['peak_rss_gb']:.2f} |")
    return "\n".join(out) + "\n"


def train_speed(record: dict[str, Any]) -> str:
    s, m = record["speed"], record["memory"]
    spread = s["ratio_spread"]
    return (
        _stamp(record)
        + "\n| measure | value | goal |\n|---|---|---|\n"
        + f"| LM-H / LIF training step time (median of {s['rounds']} alternated rounds) | "
        f"{1e3 * s['lmh_step_s']['median']:.1f} ms / {1e3 * s['lif_step_s']['median']:.1f} ms: "
        f"**{s['ratio']:.3f}** [{spread['min']:.3f}-{spread['max']:.3f}] | <= {s['goal']} |\n"
        f"| time-slice (k = {m['k']}) / full BPTT peak saved-tensor memory, T = {m['T']} | "
        f"{m['time_slice_bytes'] / 2**20:.2f} / {m['full_bptt_bytes'] / 2**20:.2f} MiB = "
        f"**{m['ratio']:.3f}** | <= {m['goal']} |\n"
    )


def paper_scale(record: dict[str, Any]) -> str:
    out = [
        _stamp(record),
        "| network | command | peak RSS GB | CPU s | wall s | firing % per layer | prediction agreement |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        rates = row.get("firing_rate_per_layer") or []
        firing = f"{100 * min(rates):.1f}-{100 * max(rates):.1f}" if rates else "-"
        for name in ("compile", "verify", "run"):
            cmd = row.get(name)
            if cmd is None:
                continue
            args = cmd["command"].split(" lmh_deploy.cli ")[-1].split()
            shown = name + "".join(
                f" {a} {b}" for a, b in zip(args, args[1:]) if a in ("--samples", "--lava-samples")
            )
            if name == "compile":
                shown += f" ({args[args.index('--calibration-samples') + 1]} calibration samples)"
            if cmd["exit_code"]:
                out.append(f"| {row['net']} | `{name}` | refused: {cmd['error'][-1]} | | | | |")
                continue
            agreement = cmd.get("prediction_agreement")
            out.append(
                f"| {row['net']} | `{shown}` | {cmd['peak_rss_gb']:.2f} | {cmd['cpu_seconds']:.1f} | "
                f"{cmd['seconds']:.0f} | {firing if name == 'run' else ''} | "
                f"{'' if agreement is None else f'{agreement:.2f}'} |"
            )
    return "\n".join(out) + "\n"


def _loads(loads: list[list[float]]) -> str:
    ones = [load[0] for load in loads]
    return f"{min(ones):.0f}-{max(ones):.0f}"


def sim_vs_lava(record: dict[str, Any]) -> str:
    out = [
        _stamp(record),
        "| row | LM-H neurons (layers) | T | Lava: samples, steps timed | Lava ms per sample-step, "
        "wall / CPU | sim/ ms per sample-step (batch), wall / CPU | **sim / Lava**, wall | "
        "sim / Lava, CPU | sim b1 / Lava, wall | sim b1 / Lava, CPU | spikes = Lava |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in record["rows"]:
        wall, cpu = r["seconds_per_sample_step"], r["cpu_seconds_per_sample_step"]

        def both(side: str, wall: dict = wall, cpu: dict = cpu) -> str:
            shown = f"{1e3 * wall[side]['median']:.3g}"
            return shown + (f" / {1e3 * cpu[side]['median']:.3g}" if side in cpu else " / -")

        def ratio(key: str, r: dict = r) -> str:
            if r["refused"]:
                return "refused"
            return _spread(r[key], digits=0) if r.get(key) else "-"

        checked = r["checked_runs"]
        out.append(
            f"| {r['row']} | {r['neurons']:,} ({r['layers']}) | {r['T']} | {r['lava_samples']}, "
            f"{r['lava_steps_timed']} | {both('lava')} | {both('sim')} ({r['batch']}) | "
            f"{ratio('sim_over_lava')} | {ratio('cpu_sim_over_lava')} | {ratio('sim_b1_over_lava')} | "
            f"{ratio('cpu_sim_b1_over_lava')} | {'yes' if r['spikes_identical'] else '**no**'} "
            f"({sum(c['spikes_compared'] for c in checked):,} spikes, {len(checked)} runs) |"
        )
        start, steps = r["lava_startup_seconds"], r["lava_steps_seconds"]
        notes.append(
            f"`{r['row']}`: Lava's start-up (lowering, compiler, workers, first {r['lava_startup_steps']} "
            f"steps) {start['median']:.2f} s [{start['min']:.2f}-{start['max']:.2f}], its timed steps "
            f"{steps['median']:.2f} s [{steps['min']:.2f}-{steps['max']:.2f}]; load average "
            f"{_loads(r['timing']['load_per_round'])} over the rounds."
            + (f" Ratios refused: {r['refused']}." if r["refused"] else "")
        )
    rounds = record["rows"][0]["timing"]["rounds"]
    out.append(f"\nRatios: median [min-max] of {rounds} alternated rounds (after one warm-up round).")
    out.extend(notes)
    return "\n".join(out) + "\n"


def lava_cifar(record: dict[str, Any]) -> str:
    cmd, run = record["command_runs"], record["in_process"]
    k = cmd["samples"]
    one, cpu_one = cmd["seconds"]["1 sample"], cmd["cpu_seconds_all_processes"]["1 sample"]

    def seconds(s: dict[str, float]) -> str:
        return f"**{s['median']:.2f} s** [{s['min']:.2f}-{s['max']:.2f}]"

    def further(key: str) -> tuple[str, float | None]:
        value = cmd[f"{key}per_further_sample_seconds"]
        if value is None:
            return f"refused: {cmd[f'{key}per_further_sample_refused']}", None
        return seconds(value), value["median"]

    further_wall, further_median = further("")
    further_cpu, _ = further("cpu_")
    met_one = "yes" if one["median"] <= 30 else "**no**"
    met_further = "-" if further_median is None else ("yes" if further_median <= 5 else "**no**")
    cpu_step = run["lava_cpu_seconds_per_step"]
    procs = run["lava_processes"]
    cpu_parts = run.get("startup_cpu_seconds", {})
    parts = ", ".join(
        f"{name.replace('_', ' ')} {sec:.2f} s"
        + ("" if cpu_parts.get(name) is None else f" / {cpu_parts[name]:.2f} s")
        for name, sec in run["startup_seconds"].items()
    )
    return (
        _stamp(record)
        + "\n| measure (ResNet-20, 3x32x32, T = 4) | median [min-max] | goal | met |\n|---|---|---|---|\n"
        + f"| `run --backend lava --samples 1`, wall | {seconds(one)} | <= 30 s | {met_one} |\n"
        + f"| the same, CPU of all its processes | {seconds(cpu_one)} | | |\n"
        + f"| each further sample, wall (`(t_{k} - t_1) / {k - 1}` per round) | {further_wall} | <= 5 s "
        f"| {met_further} |\n"
        + f"| each further sample, CPU of all processes | {further_cpu} | | |\n"
        + f"| Lava's time per step, its run of {run['lava_steps_timed']} steps / {run['lava_steps_timed']} "
        f"(start-up apart), wall / CPU | {run['lava_seconds_per_step']:.3f} s / "
        + ("-" if cpu_step is None else f"{cpu_step:.3f} s")
        + " | | |\n"
        + f"| spikes differing from sim/ (every layer, sample and step of {k} samples) | "
        f"{run['spikes_differing']:,} of {run['spikes_compared']:,}; final states "
        f"{run['state_mismatches']}; logits {'identical' if run['logits_identical'] else '**differ**'} "
        "| 0 | "
        + ("yes" if run["spikes_differing"] == run["state_mismatches"] == 0 else "**no**")
        + " |\n"
        + f"\nCommand rounds: {cmd['rounds']}, alternated, load average {_loads(cmd['load_per_round'])}. "
        f"Where a 1-sample run's time goes (in-process, wall / CPU of all processes): {parts}; "
        "Lava's CPU runtime runs "
        f"{procs['all']} OS processes ({procs['LM-H layers']} LM-H layers, {procs['connections']} "
        f"connections, source and readout) plus its runtime service. {run['neurons']:,} LM-H neurons.\n"
    )


def lava_conv(record: dict[str, Any]) -> str:
    runs = record["run_1_sample"]
    rows = [
        _stamp(record),
        f"| {record['net']}, 3x32x32, T = 4, 1 sample | wall | CPU, all processes | peak PSS, "
        "process tree | peak RSS, one process |",
        "|---|---|---|---|---|",
    ]
    for side, got in runs.items():
        what = "Lava's Conv" if side == "conv" else "Sparse only (before)"
        rows.append(
            f"| `run --backend lava`, {what} | {got['seconds']:.1f} s | {got['cpu_seconds']:.1f} s | "
            f"{got['peak_tree_pss_gib']:.2f} GiB | {got['peak_process_rss_gib']:.2f} GiB |"
        )
    checked = record["verify_lava_1_sample"]
    rows.append(
        f"| `verify --samples 1 --lava-samples 1`, Lava's Conv | {checked['seconds']:.1f} s | "
        f"{checked['cpu_seconds']:.1f} s | {checked['peak_tree_pss_gib']:.2f} GiB | "
        f"{checked['peak_process_rss_gib']:.2f} GiB |"
    )
    same = checked.get("lava_vs_sim") or {}
    routes = ", ".join(f"{n} {k}" for k, n in sorted(record["routes"].items()))
    rounds = ""
    if runs:
        loads = [g["load"] for got in runs.values() for g in got["per_round"]]
        count = len(next(iter(runs.values()))["per_round"])
        rounds = f"Run: medians of {count} alternated round(s), load average {_loads(loads)}. "
    return (
        "\n".join(rows)
        + f"\n\n{rounds}Paths: {routes}. "
        + "Lava == sim/ on the verified sample (every layer and step): "
        + f"{same.get('mismatched_spikes', '-')} of {same.get('spikes_compared', 0):,} spikes differ, "
        + f"final states {same.get('state_mismatches', '-')}, readout values "
        + f"{same.get('readout_mismatches', '-')}, logits {same.get('logit_mismatches', '-')}.\n"
    )


def ddp_scaling(record: dict[str, Any]) -> str:
    labels = list(record["rows"][0]["seconds"])
    out = [
        _stamp(record),
        "| workload | "
        + " | ".join(labels)
        + " | **DDP speed-up** | threads speed-up | independent speed-up | load average |",
        "|---" * (len(labels) + 5) + "|",
    ]
    for r in record["rows"]:
        job = r["job"]
        cells = [
            f"{1 / r['seconds'][label]['median']:,.0f} ({1e6 * r['cpu_seconds'][label]['median']:.0f})"
            for label in labels
        ]
        ratios = [_spread(r["ratios"][k]) for k in ("ddp_speedup", "threads_speedup", "independent_speedup")]
        out.append(
            f"| {r['workload']} ({job['arch']}, {job['dataset']}, T = {job['timesteps']}, batch "
            f"{job['batch_size']}) | " + " | ".join(cells + ratios) + f" | {_loads(r['load_per_round'])} |"
        )
    rounds = record["rows"][0]["rounds"]
    out.append(
        f"\nTraining samples per second (median of {rounds} alternated rounds; in brackets CPU "
        "microseconds per training sample inside `train_step`, all processes together); speed-ups "
        "over `1 proc, 1 thread`: median [min-max] of the per-round ratios."
    )
    return "\n".join(out) + "\n"


def refusal_time(record: dict[str, Any]) -> str:
    out = [
        _stamp(record),
        f"| case (median of {record['repeats']} fresh processes) | CPU s | wall s | torch/Lava imported |",
        "|---|---|---|---|",
    ]
    for name, case in record["cases"].items():
        imported = "yes" if case["torch_or_lava_imported"] else "no"
        out.append(f"| {name} | {case['cpu_s']:.2f} | {case['wall_s']:.2f} | {imported} |")
    return "\n".join(out) + "\n"


def lava_memory(record: dict[str, Any]) -> str:
    fixed, mib = record["fixed_cost"], 2.0**20
    rows = [
        _stamp(record),
        "| MLP, 64 inputs, hidden LM-H layers of 32, 1 sample | OS processes besides the command | "
        "PSS added by the run | per process | RSS of one process |",
        "|---|---|---|---|---|",
    ]
    for row in fixed["rows"]:
        rows.append(
            f"| {row['hidden_layers']} hidden layers | {row['workers']:g} | "
            f"{row['pss_added_median'] / mib:.0f} MiB | **{row['pss_added_per_worker'] / mib:.1f} MiB** | "
            f"{row['worker_rss_median'] / mib:.0f} MiB |"
        )
    rounds = len(fixed["rows"][0]["per_round"])
    return (
        "\n".join(rows)
        + f"\n\nMedians of {rounds} alternated rounds. Least-squares slope of the peak PSS over the "
        f"process count: {fixed['slope_bytes_per_worker'] / mib:.1f} MiB a process.\n"
    )


RENDER: dict[str, Callable[[dict[str, Any]], str]] = {
    "sim_vs_float": sim_vs_float,
    "sim_vs_float-goals": sim_vs_float_goals,
    "sim_profile": sim_profile,
    "chain_ab": chain_ab,
    "conv_ways": conv_ways,
    "compile_time": compile_time,
    "sim_scaling": sim_scaling,
    "sim_memory": sim_memory,
    "train_speed": train_speed,
    "paper_scale": paper_scale,
    "sim_vs_lava": sim_vs_lava,
    "lava_cifar": lava_cifar,
    "lava_conv": lava_conv,
    "lava_conv_resnet19": lava_conv,
    "lava_memory": lava_memory,
    "ddp_scaling": ddp_scaling,
    "refusal_time": refusal_time,
}


def render(text: str) -> str:
    """``text`` with every known table block rewritten from its JSON."""

    def block(match: re.Match) -> str:
        name = match["name"]
        path = ROOT / "bench" / f"{name.split('-')[0]}.json"  # NAME-part: another view of NAME.json
        if name not in RENDER or not path.exists():
            return match[0]
        return match[1] + RENDER[name](json.loads(path.read_text())) + match[4]

    return BLOCK.sub(block, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the tables are current")
    parser.add_argument("--file", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    text = args.file.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print(f"{args.file}: tables differ from bench/*.json; run python bench/report.py")
            sys.exit(1)
        return
    args.file.write_text(new)


if __name__ == "__main__":
    main()
