"""Features and factors from a transformers text-classification model."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from disco.scorers.base import PositiveScorer

__all__ = ["PipelineScorer"]


def _text_of(sample: Any) -> str:
    return sample.text if hasattr(sample, "text") else str(sample)


class PipelineScorer(PositiveScorer):
    """The probability a text classifier gives one label, as a feature or a positive factor.

    ``score`` is the label's probability (a feature in [0, 1], e.g. "the classifier says
    positive" with a target moment of 0.8); ``log_score`` is its log-probability, computed
    with ``log_softmax`` (``logsigmoid`` for multi-label models) so that it never underflows.

    Parameters
    ----------
    label:
        The label's name (as in ``model.config.id2label``) or its index.
    pipeline:
        A transformers text-classification pipeline, a model path or Hub name to build one
        (``trust_remote_code`` stays off), the keyword arguments of ``transformers.pipeline``
        as a dict (the original disco's ``PipelineScorer(label, params)``, e.g.
        ``{"task": "sentiment-analysis", "model": path}``), or ``None`` when ``model`` and
        ``tokenizer`` are given.
    temperature:
        ``log_score`` is the label's log-probability divided by this (1.0: the probability).
    model, tokenizer:
        An already-loaded sequence-classification model and its tokenizer.
    batch_size:
        Texts per forward pass.
    text_of:
        Turns a sample into the text to classify (default: ``sample.text``, else ``str``).
    max_length:
        Truncation length in tokens.
    """

    def __init__(
        self,
        label: str | int,
        pipeline: Any = None,
        temperature: float = 1.0,
        *,
        model: Any = None,
        tokenizer: Any = None,
        batch_size: int = 32,
        text_of: Callable[[Any], str] = _text_of,
        max_length: int = 512,
    ) -> None:
        if isinstance(pipeline, str):
            import transformers

            pipeline = transformers.pipeline(
                "text-classification", model=pipeline, trust_remote_code=False
            )
        elif isinstance(pipeline, Mapping):
            import transformers

            pipeline = transformers.pipeline(**{"trust_remote_code": False, **pipeline})
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)) or not (
            temperature > 0
        ):
            raise ValueError(f"temperature must be positive and finite, got {temperature!r}")
        self.temperature = float(temperature)
        if pipeline is not None:
            model, tokenizer = pipeline.model, pipeline.tokenizer
        if model is None or tokenizer is None:
            raise ValueError("PipelineScorer needs a pipeline, or both a model and a tokenizer")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        id2label = {int(k): v for k, v in model.config.id2label.items()}
        if isinstance(label, int):
            if label not in id2label:
                raise ValueError(f"label index {label} is not one of the model's labels {id2label}")
            self.label_id = label
        else:
            matches = [i for i, name in id2label.items() if name == label]
            if not matches:
                raise ValueError(
                    f"label {label!r} is not one of the model's labels {sorted(id2label.values())}"
                )
            self.label_id = matches[0]
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.text_of = text_of
        self.max_length = max_length
        self.multi_label = (
            model.config.problem_type == "multi_label_classification"
            or model.config.num_labels == 1
        )
        super().__init__(self._probabilities, batched=True, name=f"p({id2label[self.label_id]})")

    @torch.no_grad()
    def log_score(self, samples: Sequence[Any], context: Any = "") -> torch.Tensor:
        """Log-probability of the label for each sample's text (float64, on the CPU), over T."""
        texts = [self.text_of(s) for s in samples]
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            logits = self.model(**batch).logits.float()
            if self.multi_label:
                log_probs = torch.nn.functional.logsigmoid(logits)
            else:
                log_probs = torch.log_softmax(logits, dim=-1)
            out.append(log_probs[:, self.label_id].to("cpu", torch.float64))
        scores = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
        return scores / self.temperature if self.temperature != 1.0 else scores

    def _probabilities(self, samples: Sequence[Any], context: Any) -> torch.Tensor:
        return torch.exp(self.log_score(samples, context))
