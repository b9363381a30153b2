"""The torch classifier behind every bundle: a Hugging Face encoder with a multi-label head.

Pooling is the bundle's choice, recorded in its config (`sitrep_pooling`):

- ``cls``: the library's own sequence-classification head on the first token (for BERT-style
  encoders a pooler layer + linear; multilingual-e5-small ships no pooler weights, so that layer
  starts random);
- ``mean``: the mean of the last hidden states over real tokens (the attention mask), then the
  same head's classifier — how multilingual-e5 was trained to represent a sentence.

Only the torch paths import this module (training, export and the ``torch`` runtime); the ONNX
runtimes read the exported graph, pooling included.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

POOLING_KEY = "sitrep_pooling"
POOLINGS = ("cls", "mean")


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """The mean of `hidden` [B, L, H] over the real tokens of `attention_mask` [B, L]: the sentence vector."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


@cache
def _mean_pooled(base_cls: type) -> type:
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput

    class MeanPooled(base_cls):  # type: ignore[misc, valid-type]
        def forward(self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None,
                    labels: Any = None, **kwargs: Any) -> SequenceClassifierOutput:
            encoder = getattr(self, self.base_model_prefix)
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            hidden = encoder(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state
            pooled = mean_pool(hidden, attention_mask)
            if isinstance(self.classifier, torch.nn.Linear):  # BERT-style: dropout + linear
                logits = self.classifier(self.dropout(pooled))
            else:  # RoBERTa-style heads read the first position of a sequence
                logits = self.classifier(pooled[:, None, :])
            return SequenceClassifierOutput(logits=logits)

    MeanPooled.__name__ = MeanPooled.__qualname__ = f"MeanPooled{base_cls.__name__}"
    return MeanPooled


def classifier_class(config: Any) -> type:
    """The model class for a config: the library's sequence classifier, mean-pooled when configured."""
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification._model_mapping[type(config)]
    pooling = getattr(config, POOLING_KEY, "cls")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r} in the model config; expected one of {POOLINGS}")
    return _mean_pooled(base) if pooling == "mean" else base


def load_classifier(path: str | Path, pooling: str | None = None, attn_implementation: str | None = None,
                    **config_kwargs: Any) -> Any:
    """Load (or, from a base encoder, initialise) the classifier. `pooling` sets it; None keeps the config's."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, **config_kwargs)
    if pooling is not None:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        setattr(config, POOLING_KEY, pooling)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return classifier_class(config).from_pretrained(path, config=config, **extra)
