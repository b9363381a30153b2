"""`sitrep bench train-step`: the classifier's training step in each mixed precision, side by side.

What `sitrep train` repeats some 5,600 times is timed here as the recipe runs it (`train.classifier_loss`): the config's base
encoder and classifier head, its frozen layers (and their cached output, `cache_frozen`), length-bucketed batches
of its training sentences, BCE loss, backward, gradient clipping and the AdamW step. Each precision (`none` = fp32,
`bf16` = autocast as `sitrep train --mixed-precision bf16` runs it) gets `steps` timed steps after a warm-up,
in alternating rounds (this machine drifts), on the same batches; the report gives the median ms per step of
each and the ratio to the first. Weights change as the steps run; speed does not depend on them.

`adamw` adds a second axis, the AdamW implementation: `default` is what `sitrep train` runs (PyTorch's own
choice, on a CPU the per-parameter loop), `fused` its fused CPU kernel (`torch.optim.AdamW(fused=True)`: the
same update, rounded differently, so a recipe trained with it is not bit for bit today's). Each precision ×
implementation pair is one row; each implementation keeps its own optimizer state.

`dropouts` adds a third axis, the model's dropout probability while it trains (`config`: the recipe's, as
`sitrep train` runs it; a number: every dropout module set to it, as `sitrep train --dropout` does): on a CPU the
dropout masks' random draws are a large share of the step (`--profile`).

`profile` adds where the first row's step spends its time: PyTorch's profiler over that many more steps, the
operators with the most self CPU time, each as ms per step and share of the step (matrix products, the dropout
masks' random draws, the optimizer's element-wise updates …). The profiler's own overhead inflates the total a
little; the shares are what it is for.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sitrep.bench.common import machine
from sitrep.models.cpu import has_bf16

PRECISIONS = ("none", "bf16")
ADAMW = ("default", "fused")


def run_train_step(
    config: Path | None, precisions: list[str], steps: int = 20, rounds: int = 2, sentences: int = 512,
    threads: int | None = None, warmup: int = 3, adamw: list[str] | None = None, profile: int = 0,
    top: int = 12, dropouts: list[float | None] | None = None,
) -> dict[str, Any]:
    import torch

    from sitrep.models.corpus import read_many
    from sitrep.training.config import TrainConfig, check_dropout
    from sitrep.training.train import Trainer, amp_dtype, classifier_loss, dropout_modules, train_batches

    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ValueError(f"unknown precision {bad or precisions}; choose from {', '.join(PRECISIONS)}")
    adamw = list(dict.fromkeys(adamw or ["default"]))
    bad = [a for a in adamw if a not in ADAMW]
    if bad:
        raise ValueError(f"unknown AdamW implementation {bad}; choose from {', '.join(ADAMW)}")
    if min(steps, rounds, sentences) < 1:
        raise ValueError("--steps, --rounds and --sentences must be at least 1")
    dropouts = list(dict.fromkeys(dropouts or [None]))
    for d in dropouts:
        if d is not None:
            check_dropout(d, "--dropouts")
    if profile < 0:
        raise ValueError("--profile must be 0 (off) or a number of steps")
    cfg = TrainConfig.load(config, {"threads": threads, "device": "cpu"})
    examples = read_many(cfg.train_files)
    if not examples:
        raise ValueError(f"{config}: no training sentences in {cfg.train_files}")
    examples = examples[:: max(1, len(examples) // sentences)][:sentences]
    dtypes = {p: amp_dtype("cpu", p) for p in precisions}
    with tempfile.TemporaryDirectory(prefix="sitrep-train-step-") as tmp:
        trainer = Trainer(replace(cfg, mixed_precision="none"), Path(tmp))
        ids, y = trainer.encode(examples)
        prefix = trainer.frozen_prefix(ids.ids, progress=False)
        model = trainer.model
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizers = {a: torch.optim.AdamW(params, lr=cfg.lr, **({"fused": True} if a == "fused" else {}))
                      for a in adamw}
        variants = [(p, a, d) for p in precisions for a in adamw for d in dropouts]
        own = {m: m.p for m in dropout_modules(model)}  # the recipe's probabilities, for the `config` rows

        def use_dropout(d: float | None) -> None:
            for module, prob in own.items():
                module.p = prob if d is None else d

        lengths = np.asarray([len(x) for x in ids.ids])
        batches = train_batches(lengths, cfg.batch_size, cfg.seed)
        targets = torch.from_numpy(y)

        def step(idx: np.ndarray, dtype: Any, optimizer: Any) -> None:
            classifier_loss(model, trainer.encoder, ids.ids, idx, targets[idx], trainer.device, prefix, dtype).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        times: dict[tuple[str, str, float | None], list[float]] = {v: [] for v in variants}
        bar = tqdm(total=rounds * len(variants) * (warmup + steps), desc="train steps", unit="step",
                   dynamic_ncols=True)
        for _ in range(rounds):
            for v in variants:
                use_dropout(v[2])
                for i in range(warmup + steps):
                    idx = batches[i % len(batches)]
                    t0 = time.perf_counter()
                    step(idx, dtypes[v[0]], optimizers[v[1]])
                    if i >= warmup:
                        times[v].append(time.perf_counter() - t0)
                    bar.update(1)
        bar.close()
        use_dropout(variants[0][2])
        profiled = _profile(step, batches, dtypes[variants[0][0]], optimizers[variants[0][1]], profile, top) \
            if profile else None
        tokens = float(np.mean([lengths[batches[i % len(batches)]].max() for i in range(warmup + steps)]))
    ms = {v: round(1000 * float(np.median(t)), 2) for v, t in times.items()}
    first = variants[0]
    return {
        "config": str(config) if config else None,
        "base_model": cfg.base_model,
        "freeze_layers": cfg.freeze_layers,
        "cache_frozen": bool(prefix is not None),
        "batch_size": cfg.batch_size,
        "mean_padded_length": round(tokens, 1),
        "steps": steps,
        "rounds": rounds,
        "native_bf16": has_bf16(),
        "threads": torch.get_num_threads(),
        "machine": machine(threads),
        "rows": [{"precision": v[0], "adamw": v[1], "dropout": "config" if v[2] is None else v[2],
                  "ms_per_step": ms[v], "speedup": round(ms[first] / ms[v], 2),
                  "all_ms": [round(1000 * t, 2) for t in times[v]]} for v in variants],
        **({"profile": profiled} if profiled is not None else {}),
    }


def _profile(step: Any, batches: list[np.ndarray], dtype: Any, optimizer: Any, steps: int, top: int) -> dict[str, Any]:
    """The operators with the most self CPU time over `steps` steps (the same batches the timing began with)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(batches[i % len(batches)], dtype, optimizer)
    ops = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total_us = float(sum(e.self_cpu_time_total for e in ops))
    ops.sort(key=lambda e: -e.self_cpu_time_total)
    return {
        "steps": steps,
        "ms_per_step": round(total_us / 1000 / steps, 2),
        "ops": [{"op": e.key, "calls_per_step": round(e.count / steps, 1),
                 "self_ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 2),
                 "share": round(e.self_cpu_time_total / total_us, 4)} for e in ops[:top]],
    }


def train_step_markdown(report: dict[str, Any]) -> str:
    head = report["rows"][0]
    first = head["precision"] + (f" + {head['adamw']} AdamW" if head.get("adamw", "default") != "default" else "") \
        + (f", dropout {head['dropout']}" if head.get("dropout", "config") != "config" else "")
    lines = [
        f"`sitrep bench train-step` — config `{report['config']}` ({report['base_model']}, "
        f"{report['freeze_layers']} layers frozen{', cached' if report['cache_frozen'] else ''}), batches of "
        f"{report['batch_size']} (mean padded length {report['mean_padded_length']} tokens), {report['steps']} timed "
        f"steps per row in each of {report['rounds']} alternating rounds, {report['threads']} threads; "
        f"CPU {report['machine']['cpu']} (native bf16: {'yes' if report['native_bf16'] else 'no'})",
        "",
        f"| precision | AdamW | dropout | ms per step (median) | speed-up vs {first} |",
        "|---|---|---|---:|---:|",
    ]
    lines += [f"| {r['precision']} | {r.get('adamw', 'default')} | {r.get('dropout', 'config')} | {r['ms_per_step']:.1f} "
              f"| {r['speedup']:.2f}× |" for r in report["rows"]]
    prof = report.get("profile")
    if prof:
        lines += ["", f"Where the {first} step's time goes (PyTorch profiler, {prof['steps']} steps, "
                  f"{prof['ms_per_step']:.1f} ms of self CPU time a step under the profiler; the operators with the most):",
                  "", "| operator | calls a step | ms a step | share |", "|---|---:|---:|---:|"]
        lines += [f"| `{o['op']}` | {o['calls_per_step']:g} | {o['self_ms_per_step']:.1f} | {100 * o['share']:.1f}% |"
                  for o in prof["ops"]]
    return "\n".join(lines) + "\n"
