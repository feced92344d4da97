"""Tune the demo's problem with given settings; evaluate the returned policy at step marks.

The runs behind BENCHMARKS.md's "Convergence" tables (not a harness benchmark):

    OMP_NUM_THREADS=1 python benches/diagnosis/convergence_marks.py EBM_DIR '{"samples_per_context": 512, "_marks": [20, 40]}' OUT.json

``EBM_DIR`` is a fitted demo EBM (``disco demo`` writes ``disco-demo/ebm``). Settings are
TunerConfig names (defaults: the old demo's 128 samples a step, learning rate 2e-4, EMA 0.98)
plus, prefixed by ``_``:

- ``_marks``: the steps at which to evaluate (default 50, 100, 150);
- ``_eval``: fresh samples per evaluation (default 512);
- ``_proposal_base``: offline, the proposal fixed at the base model;
- ``_adam``: keyword arguments for torch's Adam (e.g. ``eps``);
- ``_trainable``: a regular expression; only the policy's parameters whose names match are tuned;
- ``_untie``: the output layer becomes a parameter of its own (a copy of the tied embeddings);
- ``_lora``: peft ``LoraConfig`` settings (``r``, ``lora_alpha``, ``target_modules``); only
  the adapters are tuned;
- ``_anchor``: ``mu`` of a decoupled decay towards the starting parameters after each step,
  ``theta -= lr * mu * (theta - theta_0)``;
- ``_loss``: the name of a loss in ``disco.tuners.losses`` (default ``KLLoss``: DPG);
- ``_residual_head``: the model is frozen and only a residual output layer is tuned: logits
  ``E h + D h + c`` with the tied embeddings ``E``, a full matrix ``D`` and a bias ``c``, both
  starting at zero (so the policy starts as the base).

At each mark (``_demo_problem.evaluate``): the rate of "LORD" on fresh samples of the returned
(averaged) policy, multiples, mean length, KL(p ‖ pi) and KL(pi ‖ a). Every tenth step prints
the tuner's own estimates. One thread, so runs side by side compare.
"""

import json
import re
import sys
import time
from pathlib import Path

import torch

# The demo problem is shared with bench_convergence.py, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _demo_problem import demo_problem, evaluate, script_args
from disco.tuners import Tuner, losses
from disco.tuners.optimization import make_scheduler

ebm_dir, raw_settings, out = script_args(__doc__, 3)
settings = json.loads(raw_settings)
torch.set_num_threads(1)
torch.manual_seed(0)
problem = demo_problem(ebm_dir)
policy, base, lord = problem.policy, problem.base, problem.feature
marks = settings.pop("_marks", [50, 100, 150])
n_eval = settings.pop("_eval", 512)
fixed_base = settings.pop("_proposal_base", False)
adam = settings.pop("_adam", None)
anchor = settings.pop("_anchor", 0.0)
trainable = settings.pop("_trainable", None)
loss = getattr(losses, settings.pop("_loss", "KLLoss"))()
if settings.pop("_untie", False):  # a separate output layer, starting as a copy of the embeddings
    policy.model.config.tie_word_embeddings = False
    policy.model.lm_head.weight = torch.nn.Parameter(policy.model.lm_head.weight.detach().clone())
lora = settings.pop("_lora", None)  # LoRA adapters on these settings (r, lora_alpha, ...)
if lora is not None:
    import warnings

    import peft

    from disco.distributions import LMDistribution

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapted = peft.get_peft_model(policy.model, peft.LoraConfig(task_type="CAUSAL_LM", **lora))
    policy = LMDistribution(adapted, policy.tokenizer, freeze=False, length=20, temperature=1.0)


class ResidualHead(torch.nn.Module):
    """Logits ``E h + D h + c``: the tied output layer ``E`` plus a residual starting at zero."""

    def __init__(self, tied: torch.nn.Linear) -> None:
        super().__init__()
        self.tied = tied
        self.delta = torch.nn.Parameter(torch.zeros_like(tied.weight))
        self.bias = torch.nn.Parameter(torch.zeros(tied.weight.shape[0]))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden, self.tied.weight + self.delta, self.bias)


if settings.pop("_residual_head", False):
    policy.model.requires_grad_(False)
    policy.model.lm_head = ResidualHead(policy.model.lm_head)
if trainable is not None:
    for name, parameter in policy.model.named_parameters():
        parameter.requires_grad_(re.search(trainable, name) is not None)
cfg = dict(
    n_steps=max(marks),
    samples_per_context=128,
    learning_rate=2e-4,
    sampling_batch_size=64,
    scoring_batch_size=64,
    averaging="ema",
    averaging_decay=0.98,
)
cfg.update(settings)
kw = {}
if fixed_base:
    cfg.update(proposal="offline", proposal_update_interval=10**9)
    kw["proposal_distribution"] = base
TRACKED = (
    "moment/word:LORD",
    "kl_target_policy",
    "kl_policy_base",
    "iterate/moment/word:LORD",
    "time/step",
)


class EveryTenthStep:
    def start(self, c):
        pass

    def close(self):
        pass

    def log(self, step, m):
        if step % 10 == 0:
            print(step, {k: round(m[k], 3) for k in TRACKED if k in m}, flush=True)


tuner = Tuner(
    policy,
    problem.target,
    loss,
    base=base,
    loggers=[EveryTenthStep()],
    features=(lord,),
    kl_from_base=True,
    **cfg,
    **kw,
)
if adam:
    tuner.optimizer = torch.optim.Adam(
        list(tuner.parameters.values()), lr=cfg["learning_rate"], **adam
    )
    tuner.scheduler = make_scheduler(tuner.config, tuner.optimizer)
if anchor:
    start = {n: q.detach().clone() for n, q in tuner.parameters.items()}
    plain_step = tuner.optimizer.step

    def anchored_step(*args, **kwargs):
        result = plain_step(*args, **kwargs)
        lr = tuner.optimizer.param_groups[0]["lr"]
        with torch.no_grad():
            for n, q in tuner.parameters.items():
                q.sub_(q - start[n], alpha=lr * anchor)
        return result

    tuner.optimizer.step = anchored_step

rows = []
tuning_seconds = 0.0
for m in marks:
    t0 = time.perf_counter()
    tuner.tune(m - tuner.step_count)
    tuning_seconds += time.perf_counter() - t0  # the evaluation's time is not counted
    row = {"step": m, "tune_s": tuning_seconds} | evaluate(policy, base, lord, problem.lam, n_eval)
    rows.append(row)
    print(json.dumps(row), flush=True)
curve = [{k: h.get(k) for k in (*TRACKED, "ess", "lr")} for h in tuner.history]
Path(out).write_text(json.dumps({"settings": raw_settings, "rows": rows, "curve": curve}))
