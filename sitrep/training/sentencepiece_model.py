"""A SentencePiece model of the bundle's tokenizer.json, for the runtime (written by `sitrep export`).

The bundled encoder's tokenizer is XLM-R's: a SentencePiece Unigram model of 250,002 pieces that the
Hugging Face `tokenizers` library reads from tokenizer.json. Loaded by `tokenizers` it takes 282 MB of a
serving process's memory; SentencePiece itself holds the same vocabulary in far less (the served RSS with
each: sitrep/models/README.md, "Served-process memory"). This module writes the SentencePiece model back
from tokenizer.json, piece for piece:

- every piece at its tokenizer.json id with its score, so ids need no mapping; `<s>`, `<pad>`, `</s>`
  and `<mask>` are control pieces, `<unk>` the unknown piece (ids 0, 1, 2, 250001 and 3, as in XLM-R);
- the normalizer is tokenizer.json's precompiled character map (NFKC-based, the one SentencePiece
  compiled for XLM-R), with SentencePiece's whitespace handling (dummy prefix, runs of spaces merged),
  which is what tokenizer.json's WhitespaceSplit + Metaspace pre-tokenizer does.

The two readers are not guaranteed identical: both run Viterbi over the same lattice, and where two
segmentations score exactly (or, in float arithmetic, nearly) the same they may pick different ones. On
every text in data/ (10,409 sentences and article texts; `compare` at max length 128, 2026-12-05:
`python -c "import glob,json; from pathlib import Path; from sitrep.training.sentencepiece_model import
compare; B=Path('artifacts/models/default'); t=[json.loads(l)['text'] for f in glob.glob('data/**/*.jsonl',
recursive=True) for l in open(f)]; print(compare(B/'hf/tokenizer.json', B/'onnx/tokenizer.spm.model', 128, t))"`)
the bundled encoder's two readers give identical ids; they differ on a literal "<s> … </s>" string, which
tokenizer.json turns into control tokens and SentencePiece reads as text (so a client cannot inject
control tokens), and, without truncation, on a run of 500 "x" and one Kurdish word deep inside a whole
article text (segmentation ties). So export compares the two on its parity sentences and keeps
the SentencePiece model only if at least `Gates.tokenizer_min_identical` of them get identical ids,
recording the count and the differing sentences in reports/parity.json.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from sitrep.models.encoding import TextEncoder

CONTROL = ("<s>", "<pad>", "</s>", "<mask>")


def write_spm(tokenizer_json: Path, dst: Path) -> dict[str, Any]:
    """Write `dst`, the SentencePiece model of a Unigram tokenizer.json. Raises ValueError for other tokenizers."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    spec = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    model, normalizer, pre = spec.get("model") or {}, spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    if model.get("type") != "Unigram" or model.get("byte_fallback"):
        raise ValueError(f"{tokenizer_json}: a {model.get('type')} model; only Unigram (no byte fallback) converts")
    if normalizer.get("type") != "Precompiled":
        raise ValueError(f"{tokenizer_json}: normalizer {normalizer.get('type')}; only Precompiled converts")
    kinds = [p.get("type") for p in pre.get("pretokenizers", [pre])]
    if kinds != ["WhitespaceSplit", "Metaspace"]:
        raise ValueError(f"{tokenizer_json}: pre-tokenizer {kinds}; only WhitespaceSplit + Metaspace converts")
    vocab = model["vocab"]
    ids = {piece: i for i, (piece, _) in enumerate(vocab)}
    if ids.get("<s>") != 0 or ids.get("<pad>") != 1 or ids.get("</s>") != 2 or model.get("unk_id") != ids.get("<unk>"):
        raise ValueError(f"{tokenizer_json}: special pieces are not at XLM-R's ids (<s> 0, <pad> 1, </s> 2, <unk>)")
    proto = pb.ModelProto()
    kind = pb.ModelProto.SentencePiece
    for piece, score in vocab:
        p = proto.pieces.add()
        p.piece, p.score = piece, score
        p.type = kind.UNKNOWN if piece == "<unk>" else kind.CONTROL if piece in CONTROL else kind.NORMAL
    trainer = proto.trainer_spec
    trainer.model_type = pb.TrainerSpec.UNIGRAM
    trainer.vocab_size = len(vocab)
    trainer.bos_id, trainer.pad_id, trainer.eos_id, trainer.unk_id = 0, 1, 2, model["unk_id"]
    norm = proto.normalizer_spec
    norm.name = "tokenizer_json_precompiled"
    norm.precompiled_charsmap = base64.b64decode(normalizer["precompiled_charsmap"])
    norm.add_dummy_prefix = norm.remove_extra_whitespaces = norm.escape_whitespaces = True
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(proto.SerializeToString())
    return {"pieces": len(vocab), "bytes": dst.stat().st_size}


def compare(tokenizer_json: Path, spm_file: Path, max_length: int, texts: list[str], keep: int = 5) -> dict[str, Any]:
    """How many of `texts` get identical ids (and truncation) from tokenizer.json and the SentencePiece model."""
    hf = TextEncoder(tokenizer_json, max_length).encode(texts)
    sp = TextEncoder(tokenizer_json, max_length, spm_file).encode(texts)
    differ = [i for i in range(len(texts))
              if hf.truncated[i] != sp.truncated[i] or not (hf.ids[i].shape == sp.ids[i].shape
                                                            and (hf.ids[i] == sp.ids[i]).all())]
    return {"n": len(texts), "identical": len(texts) - len(differ),
            "identical_fraction": (len(texts) - len(differ)) / max(1, len(texts)),
            "differing_examples": [texts[i][:200] for i in differ[:keep]]}
