"""What every driver does the same way: its training questions, its reward models, its
per-iteration evaluation record, and the experiment-stage entry point.

The Python surface of every algorithm is one signature:

    run_<algorithm>(policy, task, cfg, optimizer_cfg, directory, *, examples=None,
                    evaluate=None, reward_models=None, progress=True) -> (policy, history)

(`train_reward_model` returns the trained reward model in the policy's place). `directory` is
the run's own directory (checkpoints, metrics.jsonl, events); a run resumes from it. `examples`
replaces the task's `cfg.split` as training data; `evaluate(policy, iteration, last) -> dict` is
called after each iteration (1-based; last=True on the final one) and its metrics are recorded as
`eval_<metric>`; `reward_models` ({"orm": RewardModel, "prm": RewardModel}) are the learned
rewards the config's reward options read (`rlthink.rewards.sources`), needed on a fresh run only
(the checkpoint keeps them frozen with the run).
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping, Sequence

from rlthink.rewards import reward_model as rm_lib
from rlthink.rewards import sources


def training_questions(task, cfg, examples: Sequence[dict] | None = None) -> list[dict]:
  """The first `cfg.num_questions` of `examples`, or of the task's `cfg.split` when None."""
  if examples is None:
    task.check_split(cfg.split)
    examples = task.examples(cfg.split)
  count = len(examples) if cfg.num_questions is None else min(cfg.num_questions, len(examples))
  if count < 1:
    raise ValueError(f"{type(cfg).__name__}: no training questions (split {cfg.split!r} of task "
                     f"{task.name!r} gave {len(examples)} examples)")
  return [examples[i] for i in range(count)]


def check_tokenizer(policy, what: str) -> None:
  if policy.tokenizer is None:
    raise ValueError(f"{what} needs a policy with a tokenizer attached "
                     "(policy.replace(tokenizer=...))")


def evaluation_record(evaluate: Callable | None, policy, iteration: int, last: bool) -> dict:
  """`evaluate(policy, iteration, last)`'s metrics named eval_<metric> ({} without evaluate)."""
  if evaluate is None:
    return {}
  return {f"eval_{k}": v for k, v in (evaluate(policy, iteration, last) or {}).items()}


def reward_models(cfg, policy, given: Mapping[str, rm_lib.RewardModel] | None,
                  resumed: bool) -> dict[str, rm_lib.RewardModel]:
  """{name: RewardModel} the config's reward options read. A fresh run takes them from `given`;
  a resumed one gets zero-head templates (its checkpoint holds their params)."""
  kinds = sources.needed_models(cfg.reward_source, cfg.dense_reward)
  if resumed:
    return {name: rm_lib.init_reward_model(policy, kind) for name, kind in kinds.items()}
  out = {}
  for name, kind in kinds.items():
    field = "reward_source" if name == "orm" else "dense_reward"
    if given is None or name not in given:
      raise ValueError(f"{type(cfg).__name__}.{field}={getattr(cfg, field)!r} needs the {kind} "
                       f"reward model: pass reward_models={{{name!r}: ...}} (an experiment stage "
                       f"loads it from stage {getattr(cfg, name + '_stage')!r})")
    if given[name].kind != kind:
      raise ValueError(f"reward_models[{name!r}] is a {given[name].kind} reward model; "
                       f"{type(cfg).__name__}.{field} needs a {kind} one")
    out[name] = given[name]
  return out


class StageRewardModels(Mapping):
  """The reward models of an experiment stage, loaded on first use from the stages that trained
  them (`cfg.orm_stage`, `cfg.prm_stage`), so a resumed run never needs them."""

  def __init__(self, ctx, cfg, policy):
    self._ctx, self._cfg, self._policy, self._loaded = ctx, cfg, policy, {}

  def __getitem__(self, name: str) -> rm_lib.RewardModel:
    if name not in sources.MODEL_KINDS:
      raise KeyError(name)
    if name not in self._loaded:
      if self._ctx.stage_directory is None:
        raise ValueError(f"stage {self._ctx.name!r} reads a reward model but its context has no "
                         "stage_directory to find it with")
      stage = getattr(self._cfg, f"{name}_stage")
      self._loaded[name] = rm_lib.load_reward_model(self._ctx.stage_directory(stage),
                                                    sources.MODEL_KINDS[name], self._policy)
    return self._loaded[name]

  def __iter__(self) -> Iterator[str]:
    return iter(sources.MODEL_KINDS)

  def __len__(self) -> int:
    return len(sources.MODEL_KINDS)


def run_as_stage(run: Callable, policy, cfg, ctx, *, reads_reward_models: bool = True):
  """An experiment stage (`rlthink.algorithms.StageContext`) run through a `run_<algorithm>`
  function of the uniform signature above; returns (policy, history)."""
  if ctx.optimizer is None:
    raise ValueError(f"stage {ctx.name!r}: the stage context has no optimizer config")
  kwargs = dict(examples=ctx.training_examples(cfg.split), evaluate=ctx.evaluate,
                progress=ctx.progress)
  if reads_reward_models:
    kwargs["reward_models"] = StageRewardModels(ctx, cfg, policy)
  return run(policy, ctx.task, cfg, ctx.optimizer, ctx.directory, **kwargs)
