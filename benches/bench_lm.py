"""LMDistribution against raw transformers on the same model and batch.

Sampling: ``LMDistribution.sample(context, n)`` (its own cached decoding loop, log-probabilities
included) against ``model.generate(do_sample=True, num_return_sequences=n)``, which returns
tokens only. Scoring: ``LMDistribution.log_score(samples, context)`` (tokenising the context,
padding, one forward pass, warped log-softmax, per-sample sums) against one raw forward pass
over the same padded batch (logits only); with ``--grad`` also forward + backward of both.

Models are random GPT-2 and T5 built from configs (no Hub access) with a word-level tokenizer
of the same vocabulary size: GPT-2 small and T5-small shapes by default, smaller with
``--quick``. Before anything is timed, the results are checked: sampled log-probabilities equal
what ``log_score`` recomputes and what a plain log-softmax of the raw forward pass gives.

Timing (``_timing.measure``): every contestant runs once untimed, then repeats are interleaved
(ours, raw, ours, raw, ...) so background load hits both alike; a repeat is as many calls as
fill ``--batch-seconds``; the table shows the median seconds per call and the ratio ours / raw.

    python benches/bench_lm.py [--quick] [--device cpu|cuda] [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# Standalone runs (python benches/bench_lm.py) find the shared timing helper beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing
from disco.distributions import LMDistribution


@dataclass(frozen=True)
class Shape:
    name: str
    seq2seq: bool
    vocab: int
    width: int
    layers: int
    heads: int


FULL = (
    Shape("GPT-2 small (124M)", False, 50257, 768, 12, 12),
    Shape("T5-small (60M)", True, 32128, 512, 6, 8),
)
QUICK = (
    Shape("GPT-2 tiny (4x256)", False, 8000, 256, 4, 4),
    Shape("T5 tiny (2x256)", True, 8000, 256, 2, 4),
)


def build(shape: Shape, device: str) -> tuple[Any, Any]:
    """A random model of ``shape`` and a word-level tokenizer over ``shape.vocab`` ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        PreTrainedTokenizerFast,
        T5Config,
        T5ForConditionalGeneration,
    )

    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(shape.vocab - 4)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    torch.manual_seed(0)
    if shape.seq2seq:
        config = T5Config(
            vocab_size=shape.vocab,
            d_model=shape.width,
            d_kv=shape.width // shape.heads,
            d_ff=4 * shape.width,
            num_layers=shape.layers,
            num_heads=shape.heads,
            pad_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=0,
        )
        model: Any = T5ForConditionalGeneration(config)
    else:
        config = GPT2Config(
            vocab_size=shape.vocab,
            n_embd=shape.width,
            n_layer=shape.layers,
            n_head=shape.heads,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        model = GPT2LMHeadModel(config)
    return model.to(device).eval(), tokenizer


def sync(device: str) -> Callable[[], None]:
    """What waits for the device's queued work before a clock is read (nothing on CPU)."""
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def measure(
    contestants: dict[str, Callable[[], Any]], args: argparse.Namespace
) -> dict[str, float]:
    """Median seconds per call of each contestant, repeats interleaved (``_timing.measure``)."""
    timings = _timing.measure(
        contestants,
        repeats=args.repeats,
        batch_s=args.batch_seconds,
        warmup=1,
        clock=CLOCKS[args.clock],
        sync=sync(args.device),
    )
    return {name: t.median for name, t in timings.items()}


def reference_log_probs(lm: LMDistribution, context: str, samples: list[Any]) -> torch.Tensor:
    """Log-probabilities from one unpadded raw forward pass per sample (no disco code)."""
    model, tokenizer = lm.model, lm.tokenizer
    out = []
    with torch.no_grad():
        for sample in samples:
            ids = list(sample.token_ids)
            if lm.is_seq2seq:
                enc = torch.tensor([tokenizer(context)["input_ids"]], device=lm.device)
                dec = torch.tensor([[lm.decoder_prefix[0], *ids[:-1]]], device=lm.device)
                logits = model(
                    input_ids=enc, attention_mask=torch.ones_like(enc), decoder_input_ids=dec
                ).logits[0]
            else:
                prompt = tokenizer(context)["input_ids"]
                full = torch.tensor([prompt + ids], device=lm.device)
                mask = torch.ones_like(full)
                logits = model(input_ids=full, attention_mask=mask).logits[0, len(prompt) - 1 : -1]
            lp = torch.log_softmax(logits.float(), dim=-1)
            out.append(lp.gather(1, torch.tensor(ids, device=lm.device)[:, None]).sum().item())
    return torch.tensor(out, dtype=torch.float64)


def raw_batch(lm: LMDistribution, context: str, samples: list[Any]) -> dict[str, torch.Tensor]:
    """The padded batch a hand-written scorer would build for the same samples."""
    tokenizer, device = lm.tokenizer, lm.device
    prompt = tokenizer(context)["input_ids"]
    if lm.is_seq2seq:
        rows = [[lm.decoder_prefix[0], *s.token_ids[:-1]] for s in samples]
        width = max(map(len, rows))
        dec = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=device)
        enc = torch.tensor([prompt] * len(samples), device=device)
        return {"input_ids": enc, "attention_mask": torch.ones_like(enc), "decoder_input_ids": dec}
    rows = [prompt + list(s.token_ids) for s in samples]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


def generated_log_probs(lm: LMDistribution, out: Any) -> torch.Tensor:
    """Hand-written log-probabilities of ``generate``'s samples from its ``output_scores``."""
    steps = len(out.scores)
    chosen = out.sequences[:, -steps:]
    scores = torch.stack(out.scores, dim=1).float()
    lp = torch.log_softmax(scores, dim=-1).gather(-1, chosen[..., None]).squeeze(-1)
    eos = torch.tensor(lm.eos_token_ids, device=chosen.device)
    finished = torch.isin(chosen, eos).long().cumsum(dim=1)
    counted = (finished == 0) | ((finished == 1) & torch.isin(chosen, eos))
    return lp.mul(counted).sum(-1).double().cpu()


def raw_targets(
    lm: LMDistribution, samples: list[Any], batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target tokens and which of them count, aligned with the raw batch's logits."""
    longest = max(len(s.token_ids) for s in samples)
    targets = torch.zeros(len(samples), longest, dtype=torch.long)
    counted = torch.zeros(len(samples), longest)
    for i, s in enumerate(samples):
        k = len(s.token_ids)
        if lm.is_seq2seq:  # right-aligned decoder inputs
            targets[i, :k] = torch.tensor(s.token_ids)
            counted[i, :k] = 1
        else:  # left-padded rows end with the sample
            targets[i, longest - k :] = torch.tensor(s.token_ids)
            counted[i, longest - k :] = 1
    return targets.to(lm.device), counted.to(lm.device)


def raw_labels(
    lm: LMDistribution, context: str, samples: list[Any], batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Labels for transformers' own loss: the sample tokens, -100 everywhere else."""
    if lm.is_seq2seq:
        width = batch["decoder_input_ids"].shape[1]
        rows = [list(s.token_ids) + [-100] * (width - len(s.token_ids)) for s in samples]
        return torch.tensor(rows, device=lm.device)
    labels = batch["input_ids"].clone()
    width = labels.shape[1]
    for i, s in enumerate(samples):
        labels[i, : width - len(s.token_ids)] = -100
    return labels


def check(lm: LMDistribution, context: str, n: int, generate_kwargs: dict[str, Any]) -> list[Any]:
    torch.manual_seed(1)
    samples, log_probs = lm.sample(context, n)
    assert len(samples) == n and log_probs.shape == (n,) and torch.isfinite(log_probs).all()
    assert all(1 <= len(s.token_ids) <= lm.length for s in samples)
    rescored = lm.log_score(samples, context)
    gap = (rescored - log_probs).abs().max().item()
    assert gap < 1e-3, f"sample and log_score disagree by {gap}"
    subset = samples[:4]
    reference = reference_log_probs(lm, context, subset)
    gap = (lm.log_score(subset, context).cpu() - reference).abs().max().item()
    assert gap < 1e-3, f"log_score and the raw reference disagree by {gap}"
    with torch.no_grad():
        raw = lm.model.generate(**generate_kwargs)
    assert raw.shape[0] == n
    return samples


def bench_shape(shape: Shape, args: argparse.Namespace) -> list[tuple[str, ...]]:
    model, tokenizer = build(shape, args.device)
    lm = LMDistribution(model, tokenizer, length=args.length, batch_size=max(args.sizes))
    context = " ".join(f"w{i}" for i in range(5, 5 + args.context_tokens))
    rows: list[tuple[str, ...]] = []
    for n in args.sizes:
        rows.extend(bench_size(shape, lm, context, n, args))
    return rows


def bench_size(
    shape: Shape, lm: LMDistribution, context: str, n: int, args: argparse.Namespace
) -> list[tuple[str, ...]]:
    model = lm.model
    prompt = torch.tensor([lm.tokenizer(context)["input_ids"]], device=args.device)
    generate_kwargs = {
        "input_ids": prompt,
        "attention_mask": torch.ones_like(prompt),
        "do_sample": True,
        "top_k": 0,
        "max_new_tokens": args.length,
        "num_return_sequences": n,
        "pad_token_id": lm.pad_token_id,
        "eos_token_id": list(lm.eos_token_ids),
    }
    if shape.seq2seq:
        generate_kwargs["decoder_start_token_id"] = lm.decoder_prefix[0]
    samples = check(lm, context, n, generate_kwargs)
    tokens = sum(len(s.token_ids) for s in samples)
    batch = raw_batch(lm, context, samples)
    rows = []

    def raw_generate() -> Any:
        with torch.no_grad():
            return model.generate(**generate_kwargs)

    def raw_generate_lp() -> Any:
        with torch.no_grad():
            out = model.generate(
                **generate_kwargs, output_scores=True, return_dict_in_generate=True
            )
            return generated_log_probs(lm, out)

    torch.manual_seed(2)
    with torch.no_grad():
        out = model.generate(**generate_kwargs, output_scores=True, return_dict_in_generate=True)
    drawn = [lm._cut(r) for r in out.sequences[:, -len(out.scores) :].tolist()]
    hand = generated_log_probs(lm, out)
    ours = lm.log_score([list(d) for d in drawn], context)
    assert (hand - ours).abs().max().item() < 1e-3, "generate's log-probs disagree with ours"
    contestants = {"ours": lambda: lm.sample(context, n), "raw": raw_generate}
    contestants["raw+lp"] = raw_generate_lp
    rows.append(row(shape.name, "sample", n, tokens, measure(contestants, args)))

    targets, counted = raw_targets(lm, samples, batch)

    def raw_forward() -> Any:
        with torch.no_grad():
            return model(**batch).logits

    def raw_forward_lp() -> Any:
        with torch.no_grad():
            logits = model(**batch).logits
            if not lm.is_seq2seq:
                logits = logits[:, -targets.shape[1] - 1 : -1]
            lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None])
            return lp.squeeze(-1).mul(counted).sum(-1)

    hand = raw_forward_lp().double().cpu()
    assert (hand - lm.log_score(samples, context).cpu()).abs().max().item() < 1e-3
    contestants = {"ours": lambda: lm.log_score(samples, context), "raw": raw_forward}
    contestants["raw+lp"] = raw_forward_lp
    rows.append(row(shape.name, "log_score", n, tokens, measure(contestants, args)))
    if args.grad:
        lm.freeze(False)
        labelled = {**batch, "labels": raw_labels(lm, context, samples, batch)}
        with torch.no_grad():  # the same quantity: mean token NLL = -sum(log_score) / tokens
            loss = model(**labelled).loss.item()
            ours = -lm.log_score(samples, context).sum().item() / tokens
        assert abs(loss - ours) < 1e-4, f"raw loss {loss} and log_score disagree ({ours})"

        def ours_backward() -> None:
            lm.log_score(samples, context, grad=True).sum().backward()
            model.zero_grad(set_to_none=True)

        def raw_backward() -> None:
            model(**labelled).loss.backward()
            model.zero_grad(set_to_none=True)

        times = measure({"ours": ours_backward, "raw": raw_backward}, args)
        rows.append(row(shape.name, "log_score grad (fwd+bwd)", n, tokens, times))
        lm.freeze()
    return rows


def row(model: str, task: str, n: int, tokens: int, times: dict[str, float]) -> tuple[str, ...]:
    ours, raw = times["ours"], times["raw"]
    with_lp = times.get("raw+lp")
    return (
        model,
        task,
        str(n),
        f"{ours * 1e3:.1f}",
        f"{raw * 1e3:.1f}",
        f"{ours / raw:.3f}",
        "-" if with_lp is None else f"{with_lp * 1e3:.1f}",
        "-" if with_lp is None else f"{ours / with_lp:.3f}",
        f"{tokens / ours:,.0f}",
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models, one batch size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--repeats", type=int, default=0, help="timed repeats (0: 5, quick 3)")
    parser.add_argument("--batch-seconds", type=float, default=0.0, help="seconds per repeat")
    parser.add_argument("--length", type=int, default=40, help="length cap (max new tokens)")
    parser.add_argument("--context-tokens", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="samples per call")
    parser.add_argument("--grad", action="store_true", help="also time forward + backward")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default=None,
        help="wall time, or this process's CPU time (default: cpu on CPU, robust to a busy "
        "machine; wall on CUDA)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.batch_seconds = args.batch_seconds or (0.2 if args.quick else 1.0)
    args.sizes = args.sizes or ([32] if args.quick else [32, 128])
    args.clock = args.clock or ("wall" if args.device.startswith("cuda") else "cpu")
    return args


def table(args: argparse.Namespace) -> str:
    """The markdown table of one run, with a line saying how it was measured."""
    shapes = QUICK if args.quick else FULL
    device_name = (
        torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} threads"
    )
    header = (
        "model",
        "task",
        "n",
        "ours ms",
        "raw ms",
        "ours/raw",
        "raw+lp ms",
        "ours/(raw+lp)",
        "ours tokens/s",
    )
    rows = []
    for shape in shapes:
        rows.extend(bench_shape(shape, args))
    lines = [
        f"LMDistribution vs raw transformers ({device_name}; length cap {args.length}, "
        f"context {args.context_tokens} tokens, {args.clock} clock, median of {args.repeats} "
        "repeats). *raw*: `model.generate` / `model(**batch)` returning tokens or logits only; "
        "*raw+lp*: the same plus a hand-written log-softmax.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def run(ctx: Any) -> str:
    """Harness entry point (``benches/run.py``): the LM section of BENCHMARKS.md."""
    argv = ["--threads", "1", "--grad"] + (
        ["--quick"] if ctx.quick else ["--sizes", "32", "--repeats", "3"]
    )
    body = table(parse(argv))
    command = "python benches/bench_lm.py " + " ".join(argv)
    return f"## Language models (`LMDistribution`)\n\nSame numbers standalone: `{command}`.\n\n{body}\n"


def main(argv: list[str] | None = None) -> None:
    print(table(parse(argv)))


if __name__ == "__main__":
    main()
