"""The demo's tuning problem, shared by bench_convergence.py and the diagnosis scripts.

The embedded KJV GPT-2 with 20-token samples, and the target ``p = a * exp(lambda * has_word('LORD'))
/ Z`` fitted to a 0.5 rate. For one binary feature whose fitted moment is exact on the fit's
samples, ``e^lambda = (1 - m_a)/m_a`` there, so ``Z = 2 e^lambda / (1 + e^lambda)`` and ``log p``
is known exactly: the divergences below need no estimate of ``Z``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from disco.distributions import LMDistribution
from disco.features import feature
from disco.io import load_ebm

WORD = "LORD"
LENGTH = 20


def script_args(doc: str | None, count: int) -> list[str]:
    """A diagnosis script's ``count`` positional arguments; its docstring on ``--help``.

    Prints the docstring and exits (status 0 for ``-h``/``--help``, 2 for a wrong count) so a
    script can be checked to import and start without running it.
    """
    args = sys.argv[1:]
    wants_help = bool(args) and args[0] in ("-h", "--help")
    if wants_help or len(args) != count:
        print(doc or "", file=sys.stdout if wants_help else sys.stderr)
        raise SystemExit(0 if wants_help else 2)
    return args


def start_diagnosis(doc: str | None) -> tuple[dict[str, Any], DemoProblem]:
    """A diagnosis script's start from its two arguments, the EBM folder and a JSON object of
    settings: the settings, one torch thread, the seed ``settings["seed"]`` (0 if absent), then
    the demo problem."""
    ebm_dir, raw_settings = script_args(doc, 2)
    settings = json.loads(raw_settings)
    torch.set_num_threads(1)
    torch.manual_seed(settings.get("seed", 0))
    return settings, demo_problem(ebm_dir)


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters of ``model`` that require gradients, by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def exact_log_z(lam: float) -> float:
    """``log Z`` of the target fitted exactly to a 0.5 rate: ``log(2 e^lambda / (1 + e^lambda))``."""
    return math.log(2.0) + lam - math.log1p(math.exp(lam))


@dataclass
class DemoProblem:
    """The fitted target, the base, a fresh trainable policy and the feature."""

    target: Any
    base: LMDistribution
    policy: LMDistribution
    feature: Any
    lam: float

    @property
    def log_z(self) -> float:
        return exact_log_z(self.lam)


def demo_problem(ebm_dir: str | None = None, lam: float | None = None) -> DemoProblem:
    """The problem from a fitted EBM folder (``disco demo`` writes ``disco-demo/ebm``) or a λ."""
    target = load_ebm(ebm_dir) if ebm_dir is not None else None
    if lam is None:
        if target is None:
            raise ValueError("give the EBM folder or lambda")
        lam = float(list(target.factors)[1].coefficients[0])
    return DemoProblem(
        target=target,
        base=LMDistribution(length=LENGTH, temperature=1.0),
        policy=LMDistribution(length=LENGTH, temperature=1.0, freeze=False),
        feature=feature({"type": "word", "word": WORD}),
        lam=lam,
    )


def evaluate(
    policy: LMDistribution, base: LMDistribution, word_feature: Any, lam: float, n: int
) -> dict[str, float]:
    """The policy on ``n`` fresh samples: the word's rate, how often a sample with the word has
    it twice or more, the mean length in tokens, and KL(p ‖ pi) and KL(pi ‖ a) by importance
    sampling."""
    with torch.no_grad():
        samples, log_pi = policy.sample("", n)
        phi = word_feature.score(samples, "").double().numpy()
        log_a = base.log_score(samples, "").double().numpy()
    log_pi = log_pi.double().numpy()
    log_ratio = log_a + lam * phi - exact_log_z(lam) - log_pi  # log p/pi
    counts = np.array([s.text.lower().count(WORD.lower()) for s in samples])
    return {
        "rate": float(phi.mean()),
        "multiples": float((counts >= 2).sum() / max(1, (counts >= 1).sum())),
        "mean_length": float(np.mean([len(s.token_ids) for s in samples])),
        "kl_target_policy": float(np.mean(np.exp(log_ratio) * log_ratio)),
        "kl_policy_base": float(np.mean(log_pi - log_a)),
    }


def token_batch(policy: LMDistribution, samples: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids (BOS, then each sample's tokens, right-padded) and the mask of the tokens."""
    longest = max(len(s.token_ids) for s in samples)
    ids = torch.full((len(samples), longest + 1), policy.pad_token_id, dtype=torch.long)
    ids[:, 0] = policy.bos_token_id
    mask = torch.zeros(len(samples), longest, dtype=torch.bool)
    for i, s in enumerate(samples):
        ids[i, 1 : 1 + len(s.token_ids)] = torch.tensor(s.token_ids)
        mask[i, : len(s.token_ids)] = True
    return ids, mask


def padded(parts: list[torch.Tensor]) -> torch.Tensor:
    """Per-chunk ``(rows, tokens)`` tensors joined along the rows, right-padded with zeros."""
    width = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])
