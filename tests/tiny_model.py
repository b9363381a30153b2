"""A tiny, randomly initialised XLM-R-architecture model and tokenizer, built in the test session.

The tokenizer is a SentencePiece-style Unigram model trained on the corpus' own sentences (so Arabic
and Persian get real subwords), laid out as XLM-R's tokenizer.json is (SentencePiece's precompiled
nmt_nfkc normalizer, whitespace split + Metaspace, <s> <pad> </s> <unk> at ids 0–3), so export can
write its SentencePiece model as it does for the real one; the model has 2 layers and hidden size 32. Every pipeline test
(train, export, serve, score, eval) runs on it in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from sitrep.models.corpus import read_examples

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
MAX_LENGTH = 64
# Words for generated scoring inputs (large files whose content does not matter), in three scripts.
WORDS = (
    "drone",
    "strike",
    "base",
    "ministry",
    "said",
    "militia",
    "claimed",
    "killed",
    "رهگیری",
    "قصف",
    "پهپاد",
)


def corpus_texts(data_dir: Path) -> list[str]:
    texts: list[str] = []
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
        p = data_dir / name
        if p.exists():
            texts.extend(e.text for e in read_examples(p))
    return texts


def nmt_nfkc_charsmap(texts: list[str]) -> bytes:
    """SentencePiece's precompiled nmt_nfkc normalization map (XLM-R's normalizer), from a throwaway model."""
    import io

    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(texts[:300]), model_writer=model, vocab_size=200,
                                             normalization_rule_name="nmt_nfkc", minloglevel=2)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def build_tiny_base(out: Path, data_dir: Path, vocab_size: int = 2000) -> Path:
    from tokenizers import SentencePieceUnigramTokenizer, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import XLMRobertaConfig, XLMRobertaModel

    out.mkdir(parents=True, exist_ok=True)
    tok = SentencePieceUnigramTokenizer()
    texts = corpus_texts(data_dir)
    tok.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=SPECIALS,
                            unk_token="<unk>", show_progress=False)
    tok.normalizer = normalizers.Precompiled(nmt_nfkc_charsmap(texts))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    ])
    tok.post_processor = TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    tok.save(str(out / "tokenizer.json"))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": MAX_LENGTH, **specials}))
    (out / "special_tokens_map.json").write_text(json.dumps(specials))
    config = XLMRobertaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=MAX_LENGTH + 2, pad_token_id=tok.token_to_id("<pad>"),
        bos_token_id=tok.token_to_id("<s>"), eos_token_id=tok.token_to_id("</s>"),
    )
    import torch

    torch.manual_seed(0)
    XLMRobertaModel(config).save_pretrained(out)
    return out


def subset(src: Path, dst: Path, n: int) -> Path:
    """The first n lines of a JSONL file, round-robin over languages so every language appears."""
    by_lang: dict[str, list[str]] = {}
    for line in src.read_text(encoding="utf-8").splitlines():
        if line.strip():
            by_lang.setdefault(json.loads(line).get("lang", "und"), []).append(line)
    picked: list[str] = []
    i = 0
    while len(picked) < n and any(i < len(v) for v in by_lang.values()):
        for lines in by_lang.values():
            if i < len(lines) and len(picked) < n:
                picked.append(lines[i])
        i += 1
    dst.write_text("\n".join(picked) + "\n", encoding="utf-8")
    return dst


def assert_labels_agree(a: list[list[str]], b: list[list[str]], probs, thresholds, margin: float = 1e-4) -> None:
    """Two label lists from two code paths over the same texts agree wherever the decision is not a
    coin toss: a label may differ only where its probability lies within `margin` of its threshold.
    (The tiny fixture model's probabilities sit close together, so 1e-6 of batching noise can flip
    a label that sits on the threshold; the probabilities themselves are compared separately.)"""
    import numpy as np

    from sitrep.models.labels import LABELS

    assert len(a) == len(b)
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        for j, label in enumerate(LABELS):
            if (label in x) != (label in y):
                assert abs(p[i, j] - t[j]) <= margin, f"row {i}: {label} differs at p={p[i, j]:.6f}, t={t[j]:.6f}"
