"""Train a few steps, export all three ONNX files, parity gates, bundle integrity, runtime ordering."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from sitrep.models.bundle import BundleError, load_bundle, write_bundle_manifest
from sitrep.models.labels import LABELS
from sitrep.models.runtime import load
from tests.conftest import tiny_config, tiny_gates

TEXTS = [
    "The group said in a statement its fighters hit the base with two drones.",
    "قالت خلية الإعلام الأمني إن الدفاعات الجوية أسقطت طائرة مسيرة قرب المطار",
    "یک منبع امنیتی گفت پهپاد پیش از رسیدن به پایگاه رهگیری شد",
    "Reporting by a correspondent; editing by the desk.",
    "Eight service members suffered minor injuries, the Pentagon said, adding it struck back.",
    "No group has claimed the attack.",
    "در این حمله دو غیرنظامی زخمی شدند",
]


def test_manifest_records_everything(tiny_bundle: Path) -> None:
    b = load_bundle(tiny_bundle)  # verifies every hash
    m = b.manifest
    assert b.labels == list(LABELS)
    assert set(m.thresholds) == set(LABELS) and all(0.0 < t < 1.0 for t in m.thresholds.values())
    assert len(m.calibration.a) == len(LABELS)
    assert m.training["data_hash"] and m.training["n_train"] > 0
    assert {"dev", "test", "zeroshot"} <= set(m.scores)
    for rel in ("hf/model.safetensors", "hf/tokenizer.json", "onnx/model.onnx", "onnx/model.int8.onnx",
                "onnx/model.fp16.onnx", "reports/parity.json"):
        assert rel in m.files, rel
    parity = m.export["parity"]
    assert parity["onnx"]["passed"] and parity["onnx"]["max_abs_prob_diff"] <= 1e-3
    assert parity["onnx-int8"]["passed"] and parity["onnx-int8"]["label_agreement"] >= tiny_gates().int8_min_agreement
    assert json.loads((tiny_bundle / "reports" / "parity.json").read_text())["gates"]["int8_min_agreement"] == 0.6
    assert parity["cuda"]["passed"] in (None, True)  # None: no CUDA device here, said in the note


def test_the_production_int8_gate() -> None:
    from sitrep.training.export import Gates

    gates = Gates()
    assert (gates.int8_min_agreement, gates.int8_max_f1_drop, gates.fp32_max_abs_prob) == (0.99, 0.005, 1e-3)


@pytest.mark.parametrize("runtime", ["onnx-int8", "onnx", "torch"])
def test_order_is_input_order_whatever_the_batch_size(tiny_bundle: Path, runtime: str) -> None:
    clf = load(tiny_bundle, runtime)
    texts = TEXTS * 3
    ref = clf.classify(texts, batch_size=len(texts))
    for bs in (1, 2, 5):
        out = clf.classify(texts, batch_size=bs)
        np.testing.assert_allclose(out.probs, ref.probs, atol=2e-5)
    perm = np.random.default_rng(0).permutation(len(texts))
    shuffled = clf.classify([texts[i] for i in perm], batch_size=4)
    np.testing.assert_allclose(shuffled.probs, ref.probs[perm], atol=2e-5)
    # Multi-label: independent sigmoid probabilities, not a distribution over labels.
    assert ref.probs.shape == (len(texts), len(LABELS))
    assert not np.allclose(ref.probs.sum(axis=1), 1.0)


def test_thresholds_are_applied_per_label(tiny_bundle: Path) -> None:
    clf = load(tiny_bundle, "onnx")
    everything = clf.classify(TEXTS, thresholds=[0.0] * len(LABELS))
    nothing = clf.classify(TEXTS, thresholds=[1.01] * len(LABELS))
    assert all(labels == list(LABELS) for labels in everything.labels)
    assert all(labels == [] for labels in nothing.labels)


def test_runtimes_agree(tiny_bundle: Path) -> None:
    ref = load(tiny_bundle, "torch").classify(TEXTS).probs
    assert np.max(np.abs(load(tiny_bundle, "onnx").classify(TEXTS).probs - ref)) <= 1e-3
    assert np.max(np.abs(load(tiny_bundle, "onnx-int8").classify(TEXTS).probs - ref)) <= 0.05


def test_corrupted_file_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    target = copy / "onnx" / "model.int8.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.int8\.onnx is corrupted"):
        load(copy, "onnx-int8")
    with pytest.raises(BundleError, match="corrupted"):
        load_bundle(copy)
    load(copy, "onnx")  # other runtimes' files are intact and still load


def test_missing_file_and_mismatched_labels_are_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    (copy / "onnx" / "model.onnx").unlink()
    with pytest.raises(BundleError, match="missing on disk"):
        load(copy, "onnx")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["labels"] = ["claim", "casualty", "official_confirmation", "retaliation"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="do not match"):
        load_bundle(copy, verify=False)
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path / "nowhere")


def test_runtime_without_export_says_what_to_run(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    shutil.rmtree(copy / "onnx")
    bundle = load_bundle(copy, verify=False)
    write_bundle_manifest(copy, bundle.manifest)
    with pytest.raises(BundleError, match="sitrep export"):
        load(copy, "onnx-int8")


def test_onnx_runtime_does_not_import_torch(tiny_bundle: Path) -> None:
    code = (
        "import sys, sitrep.models.runtime as r\n"
        f"c = r.load({str(tiny_bundle)!r}, 'onnx-int8')\n"
        "print(c.classify(['a test sentence']).labels)\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_failing_int8_gate_fails_export_and_drops_the_file(tiny_bundle: Path, tmp_path: Path) -> None:
    from sitrep.training.export import ExportError, Gates, export

    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    with pytest.raises(ExportError, match="int8"):
        export(copy, data=load_bundle(copy).manifest.training["config"]["dev_file"],
               gates=Gates(int8_min_agreement=1.01), log=lambda *_: None)
    bundle = load_bundle(copy)
    assert not bundle.has("onnx/model.int8.onnx") and bundle.has("onnx/model.onnx")
    report = json.loads((copy / "reports" / "parity.json").read_text())
    from sitrep.training.export import ladder

    attempts = [a for a in report["runtimes"]["onnx-int8"]["attempts"] if "word_embeddings_gated" in a]
    # every recipe tried and recorded, the one without int8 MatMuls last (the last resort when none passed)
    assert [a["recipe"]["name"] for a in attempts] == [r.name for r in ladder()]
    # each gated as it would ship: the compact tables first (recorded with the recipe), the fp32 table last
    tables = [a for a in report["runtimes"]["onnx-int8"]["attempts"] if "word_embeddings" in a]
    assert {a["recipe"]["name"] for a in tables} <= {r.name for r in ladder()} and tables
    assert all(a["word_embeddings_gated"] == "fp32" for a in attempts)
    assert attempts[-1]["recipe"]["storage_fallback"] and not attempts[-1]["passed"]
    assert any("sensitivity_ranking" in a for a in report["runtimes"]["onnx-int8"]["attempts"])


def test_resume_continues_an_interrupted_run(tiny_base: Path, tiny_data: dict, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from sitrep.training import train as train_mod

    cfg = tiny_config(tiny_base, tiny_data, epochs=3, eval_every_steps=4)
    out = tmp_path / "run"
    real_save = train_mod.Trainer.save_checkpoint
    calls = {"n": 0}

    def crash_after_two(self, state):  # type: ignore[no-untyped-def]
        real_save(self, state)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(train_mod.Trainer, "save_checkpoint", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(cfg, out, progress=False)
    assert (out / "checkpoint" / "state.pt").exists() and not (out / "manifest.json").exists()
    monkeypatch.setattr(train_mod.Trainer, "save_checkpoint", real_save)
    with pytest.raises(train_mod.TrainingError, match="already holds"):
        (out / "manifest.json").write_text("{}")
        train_mod.train(cfg, out, progress=False)
    (out / "manifest.json").unlink()
    train_mod.train(cfg, out, resume=True, progress=False)
    log = [json.loads(x) for x in (out / "reports" / "training_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log]
    assert steps[:2] == [4, 8] and steps == sorted(steps) and len(set(steps)) == len(steps)
    assert not (out / "checkpoint").exists()
    load_bundle(out)


def test_train_langs_filters_training_and_dev(tiny_base: Path, tiny_data: dict, tmp_path: Path) -> None:
    from sitrep.training.train import train

    out = train(tiny_config(tiny_base, tiny_data, train_langs=["en"], max_steps=3), tmp_path / "en",
                progress=False)
    assert load_bundle(out).manifest.training["train_langs"] == ["en"]


def test_data_hash_is_of_the_data_read_not_of_the_files_at_the_end(
    tiny_base: Path, tiny_data: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training file changed while the run goes on (a new batch imported beside it) is not what the bundle
    records: the manifest's data_hash is of the files as they were read."""
    from sitrep.models.bundle import sha256_files
    from sitrep.training import train as train_mod

    data = {k: Path(shutil.copy(v, tmp_path / f"{k}.jsonl")) for k, v in tiny_data.items()}
    cfg = tiny_config(tiny_base, data, max_steps=2)
    files = [Path(f) for f in dict.fromkeys(cfg.train_files + cfg.dev_files + cfg.calibration_files)]
    before = sha256_files(files)
    real = train_mod._seed_everything

    def corpus_changes(seed: int) -> None:  # runs after the data was read
        first = data["train"].read_text(encoding="utf-8").splitlines()[0]
        with open(data["train"], "a", encoding="utf-8") as f:
            f.write(first + "\n")
        real(seed)

    monkeypatch.setattr(train_mod, "_seed_everything", corpus_changes)
    out = train_mod.train(cfg, tmp_path / "b", progress=False)
    assert sha256_files(files) != before
    assert load_bundle(out).manifest.training["data_hash"] == before


def test_mean_pooling_with_several_files_and_article_calibration(tiny_base: Path, tiny_data: dict,
                                                                 tmp_path: Path) -> None:
    """pooling = "mean", two training files, calibration on its own file: trains, exports, and every
    runtime reads the pooling from the bundle (ONNX parity holds)."""
    from sitrep.models.runtime import load
    from sitrep.training.export import export
    from sitrep.training.train import train

    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(tiny_data["dev"].read_text(encoding="utf-8").splitlines(keepends=True)[:40]),
                     encoding="utf-8")
    cfg = tiny_config(tiny_base, tiny_data, pooling="mean", max_steps=6,
                      train_file=[str(tiny_data["train"]), str(tiny_data["test"])],
                      calibration_file=str(calib))
    out = train(cfg, tmp_path / "mean", progress=False)
    manifest = load_bundle(out).manifest
    assert manifest.training["pooling"] == "mean" and manifest.training["n_calibration"] == 40
    assert manifest.training["n_train"] > 240 and {"calibration", "dev"} <= set(manifest.scores)
    assert json.loads((out / "hf" / "config.json").read_text())["sitrep_pooling"] == "mean"
    report = export(out, data=str(tiny_data["dev"]), gates=tiny_gates(), log=lambda *_: None)
    assert report["runtimes"]["onnx"]["passed"]
    texts = ["The group said it struck the base.", "Two soldiers were wounded, the ministry said."]
    torch_probs = load(out, "torch", device="cpu").classify(texts).probs
    onnx_probs = load(out, "onnx").classify(texts).probs
    assert abs(torch_probs - onnx_probs).max() < 1e-3


def test_cli_help_lists_the_subcommands() -> None:
    out = subprocess.run([sys.executable, "-m", "sitrep.cli", "--help"], capture_output=True, text=True,
                         check=True, env={"COLUMNS": "200", "PATH": ""}).stdout
    for cmd in ("base", "data", "train", "export", "eval", "serve", "score", "bench"):
        assert cmd in out, cmd


def test_int8_weight_recipes_only_with_vnni() -> None:
    from sitrep.training.export import LADDER, ladder

    assert all(r.weight_type == "uint8" or not r.optimize for r in ladder(vnni=False))
    assert [r for r in ladder(vnni=True) if r.vnni_only] == [r for r in LADDER if r.vnni_only] != []
    assert all(r.weight_type == "int8" for r in LADDER if r.vnni_only)
    portable = ladder(vnni=True, portable=True)
    assert portable and all(r.weight_type == "uint8" for r in portable)


def test_attention_fp32_rung_leaves_the_fused_attention_unquantized(tiny_bundle: Path, tmp_path: Path) -> None:
    """On VNNI, after the full outlier split the ladder tries the split with the QKV projection out of the fused
    attention and split too, then the split with the fused attention (QKV) fp32: no QAttention in either
    file, every other MatMul still int8 on u8s8 kernels."""
    import onnx

    from sitrep.training.export import LADDER, ffn_matmuls, optimize_graph, quantize
    from sitrep.training.unfuse_attention import unfuse_attention

    split = [r for r in LADDER if r.outlier_threshold is not None]
    assert [(r.qkv_split, r.attention_fp32, r.outlier_threshold) for r in split] == [
        (False, False, 4.0), (True, False, 4.0), (True, False, 3.0), (False, True, 4.0)]
    assert all(r.vnni_only for r in split)
    assert [LADDER.index(r) for r in split] == list(range(LADDER.index(split[0]), LADDER.index(split[0]) + 4))
    assert all(r.weight_type == "int8" for r in LADDER[: LADDER.index(split[-1]) + 1])  # before any uint8 rung
    bundle = load_bundle(tiny_bundle)
    opt = tmp_path / "opt.onnx"
    optimize_graph(bundle, bundle.onnx_file("onnx"), opt)
    assert "Attention" in {n.op_type for n in onnx.load(str(opt)).graph.node}
    unfused = tmp_path / "unfused.onnx"
    qkv = unfuse_attention(opt, unfused)
    ffn = [n for g in ffn_matmuls(opt) for n in g]
    for recipe, src, want_qattention, int8_matmuls in (
        (split[0], opt, True, len(ffn)), (split[1], unfused, False, len(ffn) + len(qkv)),
        (split[3], opt, False, len(ffn)),
    ):
        out = tmp_path / f"{LADDER.index(recipe)}.onnx"
        quantize(src, out, recipe, [])
        ops = [n.op_type for n in onnx.load(str(out)).graph.node]
        assert ("QAttention" in ops) is want_qattention
        assert ("Attention" in ops) is (recipe is split[3])
        assert ops.count("MultiHeadAttention") == (len(qkv) if recipe is split[1] else 0)
        assert ops.count("MatMulInteger") + ops.count("DynamicQuantizeMatMul") >= int8_matmuls


def test_blockwise_int8_rung_quantizes_every_matmul_per_token_block(tiny_bundle: Path, tmp_path: Path) -> None:
    """The MatMulNBits rung: every MatMul of the unfused-attention graph, QKV included, becomes an 8-bit
    MatMulNBits at accuracy level 4 (int8 activations per token and block); nothing is left to dynamic
    quantization, and the model still computes nearly what fp32 computes."""
    import onnx

    from sitrep.bench.gemm_peak import int8_kernel
    from sitrep.training.export import LADDER, optimize_graph, probs_with, quantize
    from sitrep.training.unfuse_attention import unfuse_attention

    rungs = [r for r in LADDER if r.block_int8]
    assert [r.block_int8 for r in rungs] == [64, 16]  # the faster kernels first
    assert all(r.vnni_only and r.weight_type == "int8" and r.outlier_threshold is None for r in rungs)
    # after the dynamic u8s8 rungs (faster when they pass), before any uint8 rung
    last_u8s8 = max(i for i, r in enumerate(LADDER) if r.weight_type == "int8" and not r.block_int8)
    assert LADDER.index(rungs[0]) == last_u8s8 + 1 and LADDER.index(rungs[1]) == last_u8s8 + 2
    rung = rungs[1]
    bundle = load_bundle(tiny_bundle)
    opt, unfused, out = tmp_path / "opt.onnx", tmp_path / "unfused.onnx", tmp_path / "blockwise.onnx"
    optimize_graph(bundle, bundle.onnx_file("onnx"), opt)
    unfuse_attention(opt, unfused)
    matmuls = [n.name for n in onnx.load(str(unfused)).graph.node if n.op_type == "MatMul"]
    quantize(unfused, out, rung, [])
    nodes = onnx.load(str(out)).graph.node
    blockwise = [n for n in nodes if n.op_type == "MatMulNBits"]
    assert len(blockwise) == len(matmuls) == 4 * bundle_layers(tiny_bundle)
    assert not {"MatMul", "DynamicQuantizeMatMul", "MatMulInteger"} & {n.op_type for n in nodes}
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in blockwise[0].attribute}
    assert (attrs["bits"], attrs["block_size"], attrs["accuracy_level"]) == (8, rung.block_int8, 4)
    assert int8_kernel(out) == "u8s8"  # `sitrep bench models` compares it with the u8s8 GEMM peak
    texts = ["The group said its fighters struck the base.", "قالت وزارة الدفاع إن الهجوم أسفر عن مقتل جنديين."]
    np.testing.assert_allclose(probs_with(bundle, out, texts), probs_with(bundle, opt, texts), atol=0.05)


def test_int8_model_verified_with_vnni_warns_on_a_cpu_without(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sitrep.models.runtime as runtime

    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    manifest = load_bundle(copy).manifest
    manifest.export["int8_needs_vnni"] = True
    write_bundle_manifest(copy, manifest)
    monkeypatch.setattr(runtime, "has_vnni", lambda: False)
    with pytest.warns(RuntimeWarning, match="VNNI"):
        load(copy, "onnx-int8")
    monkeypatch.setattr(runtime, "has_vnni", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(copy, "onnx-int8")


def test_last_rung_keeps_attention_outputs_fp32_too(tiny_bundle: Path, tmp_path: Path) -> None:
    import onnx

    from sitrep.training.export import LADDER, QuantRecipe, attention_output_matmuls, ffn_matmuls, optimize_graph

    bundle = load_bundle(tiny_bundle)
    opt = tmp_path / "opt.onnx"
    optimize_graph(bundle, bundle.onnx_file("onnx"), opt)
    names = attention_output_matmuls(opt)
    graph = onnx.load(str(opt)).graph
    assert len(names) == bundle_layers(tiny_bundle) and not set(names) & {n for g in ffn_matmuls(opt) for n in g}
    assert all(n.op_type == "MatMul" for n in graph.node if n.name in names)
    scanned = [r for r in LADDER if not r.storage_fallback]  # the fallback rung quantizes nothing
    last = scanned[-1]
    assert last.attention_output_fp32 and last.exclude_sensitive == -1 and not scanned[-2].attention_output_fp32
    assert [r.storage_fallback for r in LADDER] == [False] * (len(LADDER) - 1) + [True]
    assert not LADDER[-1].quantize
    assert QuantRecipe("x", per_channel=True).attention_output_fp32 is False


def bundle_layers(path: Path) -> int:
    return json.loads((path / "hf" / "config.json").read_text())["num_hidden_layers"]


def test_a_table_that_stays_fp32_sends_export_to_the_rung_without_int8(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When no compact word-embedding table passes on the first passing uint8 recipe, export tries the
    rung with no int8 MatMul (fp32 compute, compact storage) and keeps it if it passes."""
    import onnx

    from sitrep.training import export as export_mod

    real = export_mod.compact_embeddings
    integer_ops = {"MatMulInteger", "DynamicQuantizeMatMul", "QAttention"}

    def only_without_int8(src: Path, dst: Path, mode: str) -> dict:
        if integer_ops & {n.op_type for n in onnx.load(str(src), load_external_data=False).graph.node}:
            raise ValueError("this test refuses compact tables on int8 graphs")
        return real(src, dst, mode)

    monkeypatch.setattr(export_mod, "compact_embeddings", only_without_int8)
    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    report = export_mod.export(copy, data=tiny_data["dev"], gates=tiny_gates(), log=lambda *_: None, portable=True)
    m = load_bundle(copy).manifest
    assert m.export["int8_recipe"].startswith("no int8 MatMul") and "word embeddings int8-row" in m.export["int8_recipe"]
    assert m.export["int8_weights"] == "none" and m.export["int8_word_embeddings"] == "int8-row"
    ops = {n.op_type for n in onnx.load(str(copy / "onnx" / "model.int8.onnx")).graph.node}
    assert not ops & integer_ops
    tried = [a["recipe"]["name"] for a in report["runtimes"]["onnx-int8"]["attempts"] if "recipe" in a]
    assert tried[0] == "optimized graph, per-channel uint8" and tried[-1].startswith("no int8 MatMul")
    probs = load(copy, "onnx-int8").classify(["The group said it hit the base."]).probs
    assert probs.shape == (1, len(LABELS))


def test_export_ends_on_the_rung_without_int8_when_no_int8_recipe_passes(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No int8 recipe passes (here: any graph with integer ops fails): the last rung, fp32 compute with compact
    storage, is tried and kept, and every earlier rung is recorded as failed."""
    import onnx

    from sitrep.training import export as export_mod

    real = export_mod.gate_compare
    integer_ops = {"MatMulInteger", "DynamicQuantizeMatMul", "QAttention"}

    def int8_fails(bundle, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        cmp, ok = real(bundle, path, *args, **kwargs)
        return cmp, ok and not integer_ops & {n.op_type for n in onnx.load(str(path)).graph.node}

    monkeypatch.setattr(export_mod, "gate_compare", int8_fails)
    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    report = export_mod.export(copy, data=tiny_data["dev"], gates=tiny_gates(), log=lambda *_: None, portable=True)
    m = load_bundle(copy).manifest
    assert m.export["int8_recipe"].startswith("no int8 MatMul") and m.export["int8_weights"] == "none"
    attempts = [a for a in report["runtimes"]["onnx-int8"]["attempts"] if "recipe" in a]
    rungs = [a for a in attempts if "word_embeddings_gated" in a]
    assert [a["recipe"]["name"] for a in rungs] == [r.name for r in export_mod.ladder(portable=True)]
    assert not any(a["passed"] for a in rungs[:-1]) and rungs[-1]["passed"]
    assert not integer_ops & {n.op_type for n in onnx.load(str(copy / "onnx" / "model.int8.onnx")).graph.node}


def test_an_int8_file_over_the_size_budget_sends_export_to_the_rung_without_int8(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """A passing uint8 recipe whose file ends above `int8_size_budget_mib` does not end the ladder: the rung
    without int8 MatMuls is tried too, and the smaller of the two passing files is kept."""
    from sitrep.training import export as export_mod

    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    gates = tiny_gates()
    gates.int8_size_budget_mib = 0.0  # every file is over it
    logs: list[str] = []
    report = export_mod.export(copy, data=tiny_data["dev"], gates=gates, log=logs.append, portable=True)
    attempts = [a for a in report["runtimes"]["onnx-int8"]["attempts"] if "recipe" in a]
    uint8 = [a for a in attempts if a["passed"] and a["recipe"]["quantize"]]
    fallback = [a for a in attempts if a["passed"] and a["recipe"]["storage_fallback"]]
    assert uint8 and fallback, "both the uint8 recipe and the rung without int8 pass on the tiny model"
    assert any("over the 0 MiB budget" in line for line in logs)
    # the file kept is the smaller of the last passing try of each
    kept_mib = (copy / "onnx" / "model.int8.onnx").stat().st_size / 2**20
    assert kept_mib == pytest.approx(min(uint8[-1]["size_mb"], fallback[-1]["size_mb"]), abs=0.06)
    m = load_bundle(copy).manifest
    assert (m.export["int8_weights"] == "none") == (fallback[-1]["size_mb"] < uint8[-1]["size_mb"])
    # without a budget the first passing uint8 recipe ends the ladder, as before
    copy2 = shutil.copytree(tiny_bundle, tmp_path / "b2")
    gates.int8_size_budget_mib = float("inf")
    report = export_mod.export(copy2, data=tiny_data["dev"], gates=gates, log=lambda *_: None, portable=True)
    assert not any(a["recipe"]["storage_fallback"] for a in report["runtimes"]["onnx-int8"]["attempts"]
                   if "recipe" in a)


def test_a_u8s8_file_over_the_size_budget_sends_export_to_the_later_u8s8_rungs(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A passing u8s8 recipe whose file ends above `int8_size_budget_mib` (its int8-row table failed, the fp16 one
    passed) does not end the ladder: the later u8s8 rungs are tried, MatMulNBits and uint8 rungs are not, a later
    rung still over the budget does not end it either, and the smallest passing file is kept. Without a budget the
    first passing u8s8 rung ends the ladder."""
    from sitrep.training import export as export_mod

    u8s8 = [r for r in export_mod.LADDER if r.outlier_threshold is not None
            and (r.qkv_split or (r.outlier_threshold == 4.0 and not r.attention_fp32))]
    others = [r for r in export_mod.LADDER if r.block_int8 or (r.weight_type == "uint8" and r.quantize)][:2]
    assert len(u8s8) == 3 and all(export_mod.is_u8s8(r) for r in u8s8)
    assert others and not any(export_mod.is_u8s8(r) for r in others)
    monkeypatch.setattr(export_mod, "ladder", lambda **_: [u8s8[0], *others, u8s8[1], u8s8[2]])
    gates = tiny_gates()
    gates.int8_size_budget_mib = 0.0  # every file is over it
    logs: list[str] = []
    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    report = export_mod.export(copy, data=tiny_data["dev"], gates=gates, log=logs.append)
    rungs = [a for a in report["runtimes"]["onnx-int8"]["attempts"] if "word_embeddings_gated" in a]
    # the others skipped; the second u8s8 rung, over the budget too, did not end the ladder
    assert [a["recipe"]["name"] for a in rungs] == [r.name for r in u8s8]
    assert all(a["passed"] for a in rungs)
    assert sum("trying the later u8s8 rungs" in line for line in logs) == 2
    shipped = load_bundle(copy).manifest.export["int8_recipe"]
    smallest = min(rungs, key=lambda a: a["size_mb"])
    assert (copy / "onnx" / "model.int8.onnx").stat().st_size / 2**20 <= smallest["size_mb"] + 0.05
    assert any(shipped.startswith(a["recipe"]["name"]) for a in rungs if a["size_mb"] == smallest["size_mb"])
    # without a budget the first passing u8s8 rung ends the ladder, as before
    gates.int8_size_budget_mib = float("inf")
    copy2 = shutil.copytree(tiny_bundle, tmp_path / "b2")
    report = export_mod.export(copy2, data=tiny_data["dev"], gates=gates, log=lambda *_: None)
    rungs = [a for a in report["runtimes"]["onnx-int8"]["attempts"] if "word_embeddings_gated" in a]
    assert [a["recipe"]["name"] for a in rungs] == [u8s8[0].name]
    assert load_bundle(copy2).manifest.export["int8_recipe"].startswith(u8s8[0].name)
