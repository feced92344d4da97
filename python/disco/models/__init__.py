"""Models shipped with disco.

``default`` is a small GPT-2-architecture causal language model (about 2.6 M parameters, byte-level
BPE vocabulary of 4096) trained from scratch on short sentences of the King James Bible, so that
the toolkit, its tests and its examples run offline with no download. Sampled from an empty
context (its BOS token, which is also its EOS token ``<|endoftext|>``), it writes one short
sentence in KJV English and stops with EOS, typically within 30 tokens. Its model card
(``README.md`` in that folder) records the data source and licence, the training command and the
validation perplexity; ``scripts/train_default_model.py`` reproduces it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["default_model_path"]


def default_model_path() -> Path:
    """Return the folder of the shipped default model.

    The folder holds ``config.json``, ``model.safetensors`` and the tokenizer files, and loads with
    ``AutoModelForCausalLM.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``
    without network access.

    Returns
    -------
    pathlib.Path
        Absolute path of ``disco/models/default`` inside the installed package.
    """
    return Path(__file__).resolve().parent / "default"
