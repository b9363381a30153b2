"""The outlier-channel split of the int8 export: exact in fp32, and it narrows the int8 activation range."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sitrep.models.bundle import load_bundle
from sitrep.models.encoding import TextEncoder
from sitrep.training.export import ffn_matmuls, optimize_graph, probs_with
from sitrep.training.outlier_split import activation_absmax, fp32_node, split_outliers
from sitrep.training.unfuse_attention import qkv_matmul, unfuse_attention

TEXTS = [
    "The group said its fighters struck the base with two drones.",
    "قالت وزارة الدفاع إن الهجوم أسفر عن مقتل ثلاثة جنود.",
    "سخنگوی سپاه گفت این حمله در پاسخ به ترور فرماندهان انجام شد.",
    "No casualties were reported.",
]


@pytest.fixture(scope="module")
def optimized(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = load_bundle(tiny_bundle)
    opt = tmp_path_factory.mktemp("split") / "model.opt.onnx"
    optimize_graph(bundle, bundle.onnx_file("onnx"), opt)
    return opt


def test_split_is_exact_in_fp32_and_removes_outliers_from_the_int8_input(tiny_bundle: Path, optimized: Path) -> None:
    import onnx

    bundle = load_bundle(tiny_bundle)
    encoder = TextEncoder(bundle.tokenizer_file, bundle.max_length)
    ffn_in, ffn_out = ffn_matmuls(optimized)
    assert ffn_in and len(ffn_in) == len(ffn_out)
    graph = onnx.load(str(optimized), load_external_data=False).graph
    inputs = {n.name: n.input[0] for n in graph.node if n.name in ffn_in + ffn_out}
    before = activation_absmax(optimized, sorted(set(inputs.values())), encoder, TEXTS)
    # A threshold at each tensor's median splits about half the channels of every FFN MatMul.
    threshold = float(min(np.median(v) for v in before.values()))
    dst = optimized.with_name("model.split.onnx")
    split = split_outliers(optimized, dst, ffn_in + ffn_out, encoder, TEXTS, threshold)

    assert set(split) == set(ffn_in + ffn_out)
    for name, channels in split.items():
        expected = np.flatnonzero(before[inputs[name]] > threshold)
        assert channels == expected.tolist()
    new = onnx.load(str(dst), load_external_data=False).graph
    names = {n.name: n for n in new.node}
    assert all(fp32_node(name) in names for name in split)
    # What the int8 MatMul now sees has no channel above the threshold (the outliers are masked out).
    masked = {name: names[name].input[0] for name in split}
    after = activation_absmax(dst, sorted(masked.values()), encoder, TEXTS)
    for name, tensor in masked.items():
        assert after[tensor].max() <= threshold
        assert np.all(after[tensor][split[name]] == 0)
    # In fp32 the split graph computes the same function.
    ref = probs_with(bundle, optimized, TEXTS)
    np.testing.assert_allclose(probs_with(bundle, dst, TEXTS), ref, atol=1e-5)


def test_unfused_attention_is_exact_and_its_qkv_projection_can_be_split(tiny_bundle: Path, optimized: Path) -> None:
    """The fused Attention rewritten as MatMul -> Split -> MultiHeadAttention computes the same function,
    padding included, and its QKV MatMuls take the outlier split like any other."""
    import onnx

    bundle = load_bundle(tiny_bundle)
    graph = onnx.load(str(optimized), load_external_data=False).graph
    attentions = [n.name for n in graph.node if n.op_type == "Attention"]
    dst = optimized.with_name("model.unfused.onnx")
    names = unfuse_attention(optimized, dst)
    assert names == [qkv_matmul(a) for a in attentions] and names
    ops = [n.op_type for n in onnx.load(str(dst), load_external_data=False).graph.node]
    assert "Attention" not in ops and ops.count("MultiHeadAttention") == len(attentions)
    texts = [*TEXTS, "Short.", "A much longer sentence than the others, so that the batch is padded " * 3]
    ref = probs_with(bundle, optimized, texts)
    np.testing.assert_allclose(probs_with(bundle, dst, texts), ref, atol=1e-5)
    encoder = TextEncoder(bundle.tokenizer_file, bundle.max_length)
    split_path = optimized.with_name("model.unfused.split.onnx")
    split = split_outliers(dst, split_path, names, encoder, TEXTS, threshold=0.0)
    assert set(split) == set(names)
    np.testing.assert_allclose(probs_with(bundle, split_path, texts), ref, atol=1e-5)
    with pytest.raises(ValueError, match="no fused Attention"):
        unfuse_attention(bundle.onnx_file("onnx"), optimized.with_name("x.onnx"))
    # export's rungs on a graph the optimizer did not fuse: used as it is, no QKV MatMul named, no error
    from sitrep.training.export import OutlierSplits

    unfusable = OutlierSplits(bundle, bundle.onnx_file("onnx"), optimized.parent, TEXTS)
    assert unfusable.unfused() == (bundle.onnx_file("onnx"), [])


def test_split_refuses_unknown_matmuls(optimized: Path, tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    with pytest.raises(ValueError, match="no MatMul named"):
        split_outliers(optimized, optimized.with_name("x.onnx"), ["nope"], TextEncoder(bundle.tokenizer_file, 16),
                       TEXTS)


def test_bench_int8_compares_settings_against_fp32(tiny_bundle: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sitrep.cli import app

    out = tmp_path / "int8.json"
    manifest = (tiny_bundle / "manifest.json").read_bytes()
    result = CliRunner().invoke(app, ["bench", "int8", str(tiny_bundle), "--thresholds", "none,0.5",
                                      "--weights", "int8,uint8", "--json", str(out), "--markdown", str(tmp_path / "m.md")])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["weights"], r["outlier_threshold"]) for r in rows] == [
        ("int8", None), ("uint8", None), ("int8", 0.5), ("uint8", 0.5)]
    assert rows[0]["outlier_channels"] == 0 < rows[2]["outlier_channels"] == rows[3]["outlier_channels"]
    assert all(0 <= r["label_agreement"] <= 1 and r["sentences_per_s"] > 0 and r["size_mb"] > 0 for r in rows)
    assert all(r["batch1_ms"] > 0 for r in rows) and report["batch1_sentences"] == min(100, report["n"])
    # one dev file: the gate is export's on the whole set, and no file is named as failing
    assert all(r["passes_gate"] == (r["label_agreement"] >= 0.99 and -r["macro_f1_delta"] <= 0.005)
               and r["failed_files"] == [] for r in rows)
    assert "| weights | FFN | fp32 weights stored | outlier threshold (or smoothing) |" in (tmp_path / "m.md").read_text()
    assert "| batch-1 ms | batch 1, × the first row | batch-32 ms | batch 32, × the first row | gate |" in (
        tmp_path / "m.md").read_text()
    assert (tiny_bundle / "manifest.json").read_bytes() == manifest  # the bundle is left as it was
    bad = CliRunner().invoke(app, ["bench", "int8", str(tiny_bundle), "--weights", "int4"])
    assert bad.exit_code == 2 and "int8 and/or uint8" in bad.output


def test_bench_int8_rows_for_the_qkv_split_and_matmulnbits(tiny_bundle: Path, tmp_path: Path) -> None:
    """`--qkv` splits the QKV MatMuls with the FFN ones (more channels than the FFN alone); `--blockwise`
    adds one MatMulNBits row per block size, after the dynamic rows."""
    from typer.testing import CliRunner

    from sitrep.cli import app

    def rows(*extra: str) -> list[dict]:
        out = tmp_path / f"int8{len(extra)}.json"
        result = CliRunner().invoke(app, ["bench", "int8", str(tiny_bundle), "--thresholds", "0.5", "--weights",
                                          "int8", "--json", str(out), "--markdown", str(tmp_path / "m.md"), *extra])
        assert result.exit_code == 0, result.output
        return json.loads(out.read_text())["rows"]

    (ffn,) = rows()
    qkv, block = rows("--qkv", "--blockwise", "16")
    assert not ffn["qkv_split"] and qkv["qkv_split"] and qkv["outlier_channels"] > ffn["outlier_channels"]
    assert (block["block_int8"], block["outlier_channels"], block["qkv_split"]) == (16, 0, False)
    assert block["sentences_per_s"] > 0 and 0 <= block["label_agreement"] <= 1
    table = (tmp_path / "m.md").read_text()
    assert "0.5 (+QKV)" in table and "int8 (MatMulNBits, blocks of 16)" in table
    bad = CliRunner().invoke(app, ["bench", "int8", str(tiny_bundle), "--blockwise", "24"])
    assert bad.exit_code == 2 and "powers of two" in bad.output
    # ONNX Runtime quantizes the embedding op only dynamically: no int8-tensor row is labelled MatMulNBits
    mixed = rows("--word-embeddings", "fp32,int8-tensor", "--blockwise", "16")
    assert [(r["block_int8"], r["embeddings"]) for r in mixed] == [(None, "fp32"), (None, "int8-tensor"), (16, "fp32")]


def test_batch1_ms_times_single_sentence_calls_after_a_warm_up() -> None:
    from sitrep.bench.int8 import timed_in_turns

    calls: list[tuple[list[str], int]] = []

    class Recorder:
        def classify(self, texts: list[str], batch_size: int = 32) -> None:
            calls.append((texts, batch_size))

    assert timed_in_turns([Recorder()], ["a", "b", "c"], 0)[0] == [None] and calls == []
    (ms,), _ = timed_in_turns([Recorder()], ["a", "b", "c", "d"], 3, warmup=2)
    assert ms is not None and ms >= 0
    # two warm-up calls, then one call per sentence, each a single sentence at batch size 1
    assert calls == [(["a"], 1), (["b"], 1), (["a"], 1), (["b"], 1), (["c"], 1)]


def test_timed_in_turns_takes_turns_and_pairs_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows' models take turns on each sentence, and each row's speed-up over the first is the median of the
    per-sentence ratios (a fake clock: model A takes 4 ticks a call, model B 1, model C 2)."""
    from sitrep.bench import int8 as int8_mod

    clock = [0.0]
    monkeypatch.setattr(int8_mod.time, "perf_counter", lambda: clock[0])
    calls: list[tuple[str, str]] = []

    class Fake:
        def __init__(self, name: str, cost: float) -> None:
            self.name, self.cost = name, cost

        def classify(self, texts: list[str], batch_size: int = 32) -> None:
            assert len(texts) == batch_size
            calls.append((self.name, " ".join(texts)))
            clock[0] += self.cost * batch_size

    medians, ratios = int8_mod.timed_in_turns([Fake("A", 4.0), Fake("B", 1.0), Fake("C", 2.0)],
                                                  ["x", "y", "z"], 2, warmup=1)
    assert calls == [("A", "x"), ("B", "x"), ("C", "x"), ("A", "x"), ("B", "x"), ("C", "x"), ("A", "y"), ("B", "y"),
                     ("C", "y")]
    assert medians == [4000.0, 1000.0, 2000.0] and ratios == [1.0, 4.0, 2.0]
    assert int8_mod.timed_in_turns([Fake("A", 1.0)], ["x"], 0) == ([None], [None])
    # calls of 2 consecutive sentences: 5 sentences make 2 calls (the last one left out), each timed in turns
    calls.clear()
    medians, ratios = int8_mod.timed_in_turns([Fake("A", 4.0), Fake("B", 1.0)], list("vwxyz"), 5, warmup=0,
                                                  batch_size=2)
    assert calls == [("A", "v w"), ("B", "v w"), ("A", "x y"), ("B", "x y")]
    assert medians == [8000.0, 2000.0] and ratios == [1.0, 4.0]
    assert int8_mod.timed_in_turns([Fake("A", 1.0)], ["x"], 1, batch_size=2) == ([None], [None])
