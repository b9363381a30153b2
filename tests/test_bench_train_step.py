"""`sitrep bench train-step`: the recipe's training step in fp32 and bf16, side by side."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sitrep.cli import app
from tests.tiny_model import MAX_LENGTH


def _config(tmp_path: Path, tiny_base: Path, tiny_data: dict[str, Path]) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(f'base_model = "{tiny_base}"\ntrain_file = "{tiny_data["train"]}"\n'
                    f'dev_file = "{tiny_data["dev"]}"\nmax_length = {MAX_LENGTH}\nbatch_size = 8\n'
                    'pooling = "mean"\nfreeze_layers = 1\ncache_frozen = true\nthreads = 1\n')
    return path


def test_train_step_times_each_precision_on_the_same_batches(tiny_base: Path, tiny_data: dict[str, Path],
                                                             tmp_path: Path) -> None:
    from sitrep.bench.train_step import run_train_step, train_step_markdown

    report = run_train_step(_config(tmp_path, tiny_base, tiny_data), ["none", "bf16"], steps=3, rounds=2,
                            sentences=40, warmup=1)
    rows = {r["precision"]: r for r in report["rows"]}
    assert list(rows) == ["none", "bf16"] and report["cache_frozen"] and report["freeze_layers"] == 1
    assert all(len(r["all_ms"]) == 2 * 3 and r["ms_per_step"] > 0 for r in rows.values())  # rounds x steps
    assert rows["none"]["speedup"] == 1.0
    assert rows["bf16"]["speedup"] == pytest.approx(rows["none"]["ms_per_step"] / rows["bf16"]["ms_per_step"],
                                                    abs=0.01)
    md = train_step_markdown(report)
    assert "| none | default |" in md and "| bf16 | default |" in md and "native bf16" in md


def test_train_step_compares_adamw_implementations(tiny_base: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    from sitrep.bench.train_step import run_train_step, train_step_markdown

    report = run_train_step(_config(tmp_path, tiny_base, tiny_data), ["none"], steps=2, rounds=2, sentences=40,
                            warmup=1, adamw=["default", "fused"])
    assert [(r["precision"], r["adamw"]) for r in report["rows"]] == [("none", "default"), ("none", "fused")]
    assert all(len(r["all_ms"]) == 2 * 2 for r in report["rows"])
    assert report["rows"][1]["speedup"] == pytest.approx(
        report["rows"][0]["ms_per_step"] / report["rows"][1]["ms_per_step"], abs=0.01)
    assert "| none | fused |" in train_step_markdown(report)


def test_train_step_profile_lists_the_costliest_operators(tiny_base: Path, tiny_data: dict[str, Path],
                                                         tmp_path: Path) -> None:
    from sitrep.bench.train_step import run_train_step, train_step_markdown

    config = _config(tmp_path, tiny_base, tiny_data)
    report = run_train_step(config, ["none"], steps=1, rounds=1, sentences=40, warmup=1, profile=3, top=5)
    prof = report["profile"]
    assert prof["steps"] == 3 and prof["ms_per_step"] > 0 and 1 <= len(prof["ops"]) <= 5
    ms = [o["self_ms_per_step"] for o in prof["ops"]]
    assert ms == sorted(ms, reverse=True) and all(0 < o["share"] <= 1 for o in prof["ops"])
    assert sum(o["share"] for o in prof["ops"]) <= 1.0001
    assert all(o["calls_per_step"] > 0 for o in prof["ops"])
    # a training step runs matrix products forward and backward: one of them is among the operators listed
    names = {o["op"] for o in run_train_step(config, ["none"], steps=1, rounds=1, sentences=40, warmup=1,
                                             profile=2, top=50)["profile"]["ops"]}
    assert names & {"aten::mm", "aten::addmm", "aten::bmm"}, names
    md = train_step_markdown(report)
    assert "Where the none step's time goes" in md and f"| `{prof['ops'][0]['op']}` |" in md
    assert "profile" not in run_train_step(config, ["none"], steps=1, rounds=1, sentences=40, warmup=1)
    result = CliRunner().invoke(app, ["bench", "train-step", "-c", str(config), "--profile", "-1"])
    assert result.exit_code == 2 and "--profile" in result.output and "Traceback" not in result.output


def test_train_step_dropout_axis_sets_the_model_dropout_per_row(tiny_base: Path, tiny_data: dict[str, Path],
                                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from sitrep.bench import train_step as bench
    from sitrep.training import train as train_mod

    seen: list[set[float]] = []
    loss = train_mod.classifier_loss

    def spy(model, *args, **kwargs):  # the dropout probabilities each timed step runs with
        seen.append({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)})
        return loss(model, *args, **kwargs)

    monkeypatch.setattr(train_mod, "classifier_loss", spy)
    report = bench.run_train_step(_config(tmp_path, tiny_base, tiny_data), ["none"], steps=2, rounds=1,
                                  sentences=40, warmup=1, dropouts=[None, 0.0])
    assert [(r["adamw"], r["dropout"]) for r in report["rows"]] == [("default", "config"), ("default", 0.0)]
    assert seen[:3] == [{0.1}] * 3 and seen[3:6] == [{0.0}] * 3  # warm-up + timed steps of each row
    assert "| none | default | 0.0 |" in bench.train_step_markdown(report)
    with pytest.raises(ValueError, match=r"dropout 1\.5"):
        bench.run_train_step(_config(tmp_path, tiny_base, tiny_data), ["none"], dropouts=[1.5])


def test_train_dropout_option_sets_every_dropout(tiny_base: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    import torch

    from sitrep.training.config import TrainConfig
    from sitrep.training.train import Trainer

    config = _config(tmp_path, tiny_base, tiny_data)
    probs = {m.p for m in Trainer(TrainConfig.load(config, {"dropout": 0.0}), tmp_path / "a").model.modules()
             if isinstance(m, torch.nn.Dropout)}
    assert probs == {0.0}
    assert {m.p for m in Trainer(TrainConfig.load(config), tmp_path / "b").model.modules()
            if isinstance(m, torch.nn.Dropout)} == {0.1}
    with pytest.raises(ValueError, match=r"dropout 1\.0 must be"):
        TrainConfig.load(config, {"dropout": 1.0})


def test_training_steps_run_attention_on_the_math_kernel(tiny_base: Path, tiny_data: dict[str, Path],
                                                        tmp_path: Path) -> None:
    """Without dropout PyTorch would pick its CPU flash kernel for a training step, whose backward is slow here."""
    import numpy as np
    from torch.profiler import ProfilerActivity, profile

    from sitrep.models.corpus import read_examples
    from sitrep.training.config import TrainConfig
    from sitrep.training.frozen_prefix import forward_batch
    from sitrep.training.train import Trainer

    trainer = Trainer(TrainConfig.load(_config(tmp_path, tiny_base, tiny_data), {"dropout": 0.0}), tmp_path / "t")
    ids, _ = trainer.encode(read_examples(tiny_data["train"])[:8])

    def ops(training: bool) -> set[str]:
        trainer.model.train(training)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            logits = forward_batch(trainer.model, trainer.encoder, ids.ids, np.arange(8), trainer.device)[0].logits
            if training:
                logits.sum().backward()
        return {e.key for e in prof.key_averages()}

    assert not any("flash" in op for op in ops(True)) and "aten::bmm" in ops(True)
    assert any("flash" in op for op in ops(False))  # evaluation keeps PyTorch's own choice


def test_math_kernel_leaves_steps_with_dropout_unchanged(tiny_base: Path, tiny_data: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With dropout PyTorch picks the math kernel by itself: the same seeded steps give the same weights either way."""
    from contextlib import nullcontext

    import numpy as np
    import torch

    from sitrep.models.corpus import read_examples
    from sitrep.training import frozen_prefix
    from sitrep.training.config import TrainConfig
    from sitrep.training.train import Trainer, classifier_loss

    config = _config(tmp_path, tiny_base, tiny_data)
    examples = read_examples(tiny_data["train"])[:32]

    def weights(out: str) -> list[np.ndarray]:
        torch.manual_seed(0)
        trainer = Trainer(TrainConfig.load(config, {"freeze_layers": 0, "cache_frozen": False}), tmp_path / out)
        ids, y = trainer.encode(examples)
        params = [p for p in trainer.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        trainer.model.train()
        torch.manual_seed(1)
        for start in range(0, 32, 8):
            idx = np.arange(start, start + 8)
            classifier_loss(trainer.model, trainer.encoder, ids.ids, idx, torch.from_numpy(y[idx]), trainer.device,
                            None, None).backward()
            optimizer.step()
            optimizer.zero_grad()
        return [p.detach().numpy().copy() for p in params]

    chosen = weights("math")
    monkeypatch.setattr(frozen_prefix, "training_attention", lambda module, device: nullcontext())
    pytorchs = weights("own")
    assert all(np.array_equal(a, b) for a, b in zip(chosen, pytorchs, strict=True))


def test_train_step_cli_errors_are_one_line(tiny_base: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    config = _config(tmp_path, tiny_base, tiny_data)
    result = CliRunner().invoke(app, ["bench", "train-step", "-c", str(config), "--precisions", "fp8"])
    assert result.exit_code == 2 and "unknown precision ['fp8']" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["bench", "train-step", "-c", str(config), "--adamw", "sgd"])
    assert result.exit_code == 2 and "unknown AdamW implementation ['sgd']" in result.output
    result = CliRunner().invoke(app, ["bench", "train-step", "-c", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "nope.toml" in result.output and "Traceback" not in result.output
