"""`rlthink.evaluate`: maj@1 (greedy), maj@k, pass@k, rerank@k (ORM), cross-generation and multiple
choice by likelihood per split, broken down by example fields, the way the papers report them.

Every metric is a mean over per-example records (`rlthink.evaluation.predictions`), which
`evaluate_with_predictions` returns and `write_predictions` saves, so a paper's table can be read
from the results (`"breakdown"`) or recounted from the saved predictions.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rlthink.evaluation import cross_generation as cg
from rlthink.evaluation import likelihood
from rlthink.evaluation import predictions as records
from rlthink.evaluation.estimators import maj_at_k, majority_vote, rerank_at_k
from rlthink.evaluation.predictions import pass_curve_ks, write_predictions  # noqa: F401 (API)
from rlthink.rewards import reward_model as rm_lib
from rlthink.rollout import rollout_examples
from rlthink.sampling import checks
from rlthink.tasks import answers
from rlthink.tasks.base import Task

METRICS = ("maj@1", "maj@k", "pass@k", "rerank@k", "cross_generation", "likelihood")
SAMPLED_METRICS = ("maj@k", "pass@k", "rerank@k")  # those that need the n-sample pass
CONDITIONS = ("rcrl",)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Evaluation settings.

  k: the vote / pass / rerank budget; n: samples drawn per question (n >= k; pass@k uses the
  unbiased estimator over all n). splits: None = every split of the task but "train".
  max_examples: evaluate the first this many examples of each split (None: all).
  metrics: which to compute, of `METRICS`; the n-sample pass runs only for maj@k, pass@k or
    rerank@k (only "maj@1": one greedy pass, cheap at any k). "likelihood": multiple choice
    scored by the likelihood of each option's answer after an empty thinking span, no sampling
    (`rlthink.evaluation.likelihood`; the task needs `option_answers`).
  breakdown: example fields (e.g. "shortcut_works", "hops", "source") to break every metric down
    by, grouped by the value's text.
  eval_every: an RL stage evaluates every this many iterations, and always after the last
    (`should_evaluate`; 0: after the last only).
  iteration_metrics: the metrics of those per-iteration evaluations, a choice of `metrics`
    (None: all of `metrics`). E.g. ("maj@1",) draws an RL stage's accuracy-vs-samples curve
    with one greedy pass per evaluation and leaves the n-sample metrics to the stage's final
    evaluation (`for_iterations`).
  save_predictions: the runner writes the per-example records (`write_predictions`).
  condition: "rcrl" evaluates prompts conditioned on RCRL's "correct" label, as the RCRL paper
    reports it (`conditioned_task`); None: the task's own prompts.
  reward_model_stage: the experiment stage whose ORM reranks for rerank@k (the runner loads it
    and passes `evaluate(..., reward_model=)`).
  readers: experiment stages whose policies read this policy's (greedy) thinking for
    "cross_generation" (the runner passes `evaluate(..., readers=)`); () = the policy itself.
  """

  k: int = 8
  n: int | None = None
  splits: tuple[str, ...] | None = None
  max_examples: int | None = None
  max_new_tokens: int = 128
  temperature: float = 1.0
  top_p: float | None = None
  seed: int = 1234
  batch_size: int = 64
  metrics: tuple[str, ...] = ("maj@1", "maj@k", "pass@k")
  breakdown: tuple[str, ...] = ()
  eval_every: int = 1
  iteration_metrics: tuple[str, ...] | None = None
  save_predictions: bool = True
  condition: str | None = None
  reward_model_stage: str | None = None
  readers: tuple[str, ...] = ()

  def __post_init__(self):
    n = self.k if self.n is None else self.n
    if self.k < 1 or n < self.k:
      raise ValueError(f"EvalConfig: need 1 <= k <= n, got k={self.k}, n={self.n}")
    # gin gives lists; a bare string means one name, not characters
    for name in ("splits", "metrics", "breakdown", "readers", "iteration_metrics"):
      value = getattr(self, name)
      if value is not None:
        object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
    unknown = [m for m in self.metrics if m not in METRICS]
    if unknown or not self.metrics:
      raise ValueError(f"EvalConfig.metrics={self.metrics}: expected a non-empty choice of "
                       f"{METRICS}")
    checks.check_values(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                        top_p=self.top_p, where="EvalConfig.")
    if self.iteration_metrics is not None and (
        not self.iteration_metrics or set(self.iteration_metrics) - set(self.metrics)):
      raise ValueError(f"EvalConfig.iteration_metrics={self.iteration_metrics}: expected None or "
                       f"a non-empty choice of EvalConfig.metrics={self.metrics}")
    if self.eval_every < 0:
      raise ValueError(f"EvalConfig.eval_every={self.eval_every}: expected >= 0 (0: after the "
                       "last iteration only)")
    if self.condition is not None and self.condition not in CONDITIONS:
      raise ValueError(f"EvalConfig.condition={self.condition!r}: expected None or one of "
                       f"{CONDITIONS}")


def for_iterations(cfg: EvalConfig) -> EvalConfig:
  """The config of an RL stage's per-iteration evaluations: `cfg` with `iteration_metrics` as
  its metrics (itself when they are unset or the same)."""
  if cfg.iteration_metrics is None or cfg.iteration_metrics == cfg.metrics:
    return cfg
  return dataclasses.replace(cfg, metrics=cfg.iteration_metrics, iteration_metrics=None)


def should_evaluate(cfg: EvalConfig, iteration: int, last: bool) -> bool:
  """Whether an RL stage evaluates after `iteration` (counted from 1): every `cfg.eval_every`
  iterations, and always after the last one."""
  return last or (cfg.eval_every > 0 and iteration % cfg.eval_every == 0)


def conditioned_task(task: Task, condition: str | None, stage_config=None) -> Task:
  """The task as `condition` asks to evaluate it. "rcrl": prompts carry the RCRL "correct" label
  (`stage_config.correct_label` / `.label_position` when given, e.g. the stage's RCRLConfig,
  else RCRL's defaults)."""
  if condition is None:
    return task
  if condition == "rcrl":
    from rlthink.algorithms import rcrl  # only RCRL evaluations need it
    return rcrl.ConditionedTask(task, getattr(stage_config, "correct_label", rcrl.CORRECT),
                                getattr(stage_config, "label_position", "start"))
  raise ValueError(f"condition={condition!r}: expected None or one of {CONDITIONS}")


def answer_key(task: Task, completion: str):
  """What majority voting compares: the answer as the verifier reads it, so answers it scores
  alike vote together. The task's own `answer_key` when it defines one; for number tasks
  (`answer_kind = "number"`) the canonical last number of the answer span ("8", "8.0" and "$8"
  are one vote); else the normalized last line of the span. None (no vote) when there is no
  answer span or nothing in it to read."""
  if hasattr(task, "answer_key"):
    return task.answer_key(completion)
  span = task.format.split(completion).answer
  if span is None:
    return None
  if getattr(task, "answer_kind", "text") == "number":
    return answers.number_key(span)
  return answers.normalize_text(answers.last_line(span)) or None


def score_examples(policy, task: Task, examples: Sequence[dict], cfg: EvalConfig, *,
                   split: str = "", reward_model=None,
                   readers: dict | None = None) -> tuple[dict, list[dict]]:
  """Runs the passes `cfg.metrics` need over `examples`; returns (split-level extras:
  "num_examples", "mean_completion_tokens", "orm_accuracy", "orm_auc", "closed_rate" as they
  apply; one record per example, see `rlthink.evaluation.predictions`)."""
  metrics, k, n = cfg.metrics, cfg.k, cfg.n or cfg.k
  rows = [records.new_row(ex, cfg.breakdown, split) for ex in examples]
  extras = {"num_examples": len(examples)}
  if not examples:
    return extras, rows
  greedy = None
  if "maj@1" in metrics or "cross_generation" in metrics:
    greedy = rollout_examples(policy, task, examples, num_samples=1,
                              max_new_tokens=cfg.max_new_tokens, temperature=0.0, seed=cfg.seed,
                              batch_size=cfg.batch_size)
    for row, text, reward in zip(rows, greedy.texts, greedy.rewards):
      row.update(greedy=text, greedy_correct=bool(reward >= 1.0))
  if any(m in metrics for m in SAMPLED_METRICS):
    sampled = rollout_examples(policy, task, examples, num_samples=n,
                               max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                               top_p=cfg.top_p, seed=cfg.seed + 1, batch_size=cfg.batch_size)
    right = sampled.rewards >= 1.0
    correct = sampled.per_example(right)
    keys = sampled.per_example([answer_key(task, t) for t in sampled.texts])
    for row, answers, good in zip(rows, keys, correct):
      winner = majority_vote(answers[:k])
      row.update(n=n, samples_correct=int(sum(good)), maj_correct=bool(maj_at_k(answers, good, k)),
                 maj_answer=None if winner is None else str(winner))
    extras["mean_completion_tokens"] = float(np.mean(sampled.rollouts.lengths))
    if "rerank@k" in metrics:
      extras.update(_rerank(reward_model, sampled, rows, correct, cfg))
  if "likelihood" in metrics:
    likelihood.score(policy, task, examples, rows, cfg.batch_size, split)
  if "cross_generation" in metrics:
    extras["closed_rate"] = _cross_generation(policy, task, examples, greedy.texts, rows, cfg,
                                              readers)
  return extras, rows


def _rerank(reward_model, sampled, rows, correct, cfg: EvalConfig) -> dict:
  """Fills each row's "rerank_correct"; returns the ORM's own accuracy and AUC on the samples."""
  if reward_model is None:
    raise ValueError("EvalConfig.metrics asks for rerank@k but no reward model was given: set "
                     "EvalConfig.reward_model_stage (in an experiment) or pass "
                     "evaluate(..., reward_model=)")
  probs = rm_lib.score_rollouts(reward_model, sampled.rollouts, cfg.batch_size)
  for row, scores, good in zip(rows, sampled.per_example(probs), correct):
    row["rerank_correct"] = bool(rerank_at_k(scores, good, cfg.k))
  right = sampled.rewards >= 1.0
  return {"orm_accuracy": float(np.mean((probs >= 0.5) == right)),
          "orm_auc": rm_lib.binary_auc(probs, right)}


def _cross_generation(policy, task, examples, texts, rows, cfg: EvalConfig, readers) -> float:
  """Fills each row's "read_by" ({reader: its verifier score after this policy's greedy
  thinking}); returns the fraction of closed thinking spans."""
  thoughts = cg.thoughts_of(texts, 1, task)
  read_cfg = cg.CrossGenConfig(reader_max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                               batch_size=cfg.batch_size)
  for row in rows:
    row["read_by"] = {}
  for name, reader in (readers or {"self": policy}).items():
    scores, _ = cg.read(reader, task, examples, thoughts.rows, read_cfg)
    for row, score in zip(rows, scores):
      row["read_by"][name] = float(score)
  return thoughts.closed_rate


def examples_with_predictions(policy, task: Task, examples: Sequence[dict], cfg: EvalConfig, *,
                              split: str = "", reward_model=None,
                              readers: dict | None = None) -> tuple[dict, list[dict]]:
  """(metrics, per-example records) over `examples` (see `evaluate`)."""
  extras, rows = score_examples(policy, task, examples, cfg, split=split,
                                reward_model=reward_model, readers=readers)
  out = {**extras, **records.summarize(rows, cfg.metrics, cfg.k)}
  if cfg.breakdown:
    out["breakdown"] = records.breakdown(rows, cfg.breakdown, cfg.metrics, cfg.k)
  return out, rows


def evaluate_examples(policy, task: Task, examples: Sequence[dict], cfg: EvalConfig,
                      **kwargs) -> dict:
  """The metrics over `examples` (see `evaluate`; kwargs: reward_model, readers, split)."""
  return examples_with_predictions(policy, task, examples, cfg, **kwargs)[0]


def evaluate_with_predictions(policy, task: Task, cfg: EvalConfig | None = None, *,
                              reward_model=None, readers: dict | None = None,
                              stage_config=None, **overrides) -> tuple[dict, dict]:
  """`evaluate`, and the per-example records: ({split: metrics}, {split: [record, ...]}).

  Records (`rlthink.evaluation.predictions`) hold "id", "question", "answer", the breakdown
  fields, "greedy", "greedy_correct", "samples_correct", "n", "maj_answer", "maj_correct" (and
  "rerank_correct" / "read_by" when asked); save them with `write_predictions`.
  """
  cfg = dataclasses.replace(cfg or EvalConfig(), **overrides)
  task = conditioned_task(task, cfg.condition, stage_config)
  splits = cfg.splits or tuple(s for s in task.splits if s != "train") or task.splits
  results, predictions = {}, {}
  for split in splits:
    task.check_split(split)
    source = task.examples(split)
    count = len(source) if cfg.max_examples is None else min(cfg.max_examples, len(source))
    results[split], predictions[split] = examples_with_predictions(
        policy, task, [source[i] for i in range(count)], cfg, split=split,
        reward_model=reward_model, readers=readers)
  return results, predictions


def evaluate(policy, task: Task, cfg: EvalConfig | None = None, *, reward_model=None,
             readers: dict | None = None, stage_config=None, **overrides) -> dict:
  """maj@1 (greedy), maj@k, pass@k (unbiased, from n >= k samples), rerank@k, cross-generation
  (as `cfg.metrics` asks) for each split.

  Returns {split: {"maj@1", "maj@{k}", "pass@{k}", "sample_accuracy", "pass_curve": {k: pass@k},
  "num_examples", "mean_completion_tokens", ... , "breakdown": {field: {value: {metric: value,
  "n": examples}}} (when `cfg.breakdown` names fields)}}. reward_model: the ORM of rerank@k.
  readers: {name: policy} reading this policy's thinking (default: itself). stage_config: the
  RCRL stage's config when `cfg.condition == "rcrl"`. Overrides replace `EvalConfig` fields.
  """
  return evaluate_with_predictions(policy, task, cfg, reward_model=reward_model, readers=readers,
                                   stage_config=stage_config, **overrides)[0]
