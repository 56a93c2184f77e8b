"""The round loop of Expert Iteration, RCRL and reward-model training, written once:

    for each round i (resumable at any step):
      phase "sample": the algorithm's `collect` samples and keeps / labels completions -> the
                      round's dataset; a fresh train state (its LR schedule as long as the round)
      phase "train":  steps = ceil(epochs * |dataset| / batch_size) of the algorithm's loss on
                      its `batches`, checkpointed every `checkpoint_every` steps
      then `finish` (evaluation), and the next round

An algorithm is a `Round`. One optimizer and one compiled train step serve every round (a round's
length is a value of its fresh optimizer state, `set_total_steps`). The checkpoint's JSON meta
holds the round, the phase, the data position, the dataset (token ids), the history and
`step_offset` (the train steps of the earlier rounds); its tree holds the train state and the
algorithm's frozen trees (initial params, reward models).

Metrics (TensorBoard, metrics.jsonl) share one step axis: the cumulative train step over all
rounds (round i's step s is logged at `step_offset + s`, every round trains at least one step).
A round's sampling record (which carries its `iteration`) is logged at the step the round starts
from, its evaluation at the step its training ended.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from rlthink.algorithms import stages
from rlthink.algorithms.config import RLConfig, stage_optimizer
from rlthink.train import (Checkpointer, MetricsLogger, create_state, make_optimizer,
                           make_train_step, run_steps, set_total_steps)
from rlthink.train.optim import learning_rate_of


@dataclasses.dataclass(frozen=True)
class Round:
  """What a round-based algorithm gives `run_rounds`.

  name: the log prefix and progress label ("ei"). loss_fn(params, batch, rng) -> (loss,
    metrics). template: train-state params of the right structure (restored into on resume).
  collect(i, state, frozen, meta) -> (record, meta updates): round i's samples; the updates hold
    "dataset" (the rows the round trains on, JSON) and whatever else the algorithm keeps. state:
    the TrainState after the previous round (None before the first); frozen: the frozen trees.
  start_params(i, state, frozen) -> the params round i trains from.
  batches(meta, i) -> batch_at(position): a pure function of the position.
  steps(num_rows) -> the round's optimizer steps.
  finish(i, state, meta, last) -> metrics added to the round's record (e.g. evaluation).
  frozen: trees checkpointed with the run (e.g. {"init": params}).
  base: None, or the frozen base params of LoRA training (`lora.Trainable.base`): the train
    step's non-donated argument (loss_fn then takes it fourth); never checkpointed.
  """

  name: str
  loss_fn: Callable
  template: Any
  collect: Callable[[int, Any, dict, dict], tuple[dict, dict]]
  start_params: Callable[[int, Any, dict], Any]
  batches: Callable[[dict, int], Callable[[int], dict]]
  steps: Callable[[int], int]
  finish: Callable[[int, Any, dict, bool], dict] | None = None
  frozen: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  base: Any = None


def run_rounds(policy, cfg, optimizer_cfg, directory: str, round_: Round, *,
               iterations: int, reward_models: Mapping | None = None,
               progress: bool = True):
  """Runs (or resumes from `directory`) `iterations` rounds; returns (final TrainState,
  history). For an `RLConfig`, the reward models its options read join the frozen trees (taken
  from `reward_models` on a fresh run, from the checkpoint on a resumed one)."""
  optimizer_cfg = stage_optimizer(optimizer_cfg, cfg)
  ckpt = Checkpointer(directory, policy.config)
  optimizer = make_optimizer(optimizer_cfg, 1)
  resumed = ckpt.latest_step() is not None
  frozen = dict(round_.frozen)
  if isinstance(cfg, RLConfig):
    models = stages.reward_models(cfg, policy, reward_models, resumed)
    frozen.update(models)
  tree = lambda s: {"state": s, **{k: getattr(v, "params", v) for k, v in frozen.items()}}
  meta = {"iteration": 0, "phase": "sample", "position": 0, "steps": 0, "dataset": [],
          "history": [], "step_offset": 0}
  state = None
  if resumed:
    restored, meta = ckpt.restore(tree(create_state(round_.template, optimizer, cfg.seed)))
    state = restored["state"]
    frozen = {k: (dataclasses.replace(v, params=restored[k]) if hasattr(v, "params")
                  else restored[k]) for k, v in frozen.items()}
    meta.setdefault("step_offset", _steps_before(meta))
  logger = MetricsLogger(directory, desc=round_.name, progress=progress)
  save_id = lambda: (ckpt.latest_step() or 0) + 1
  numbers = lambda record: {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}
  prefix, step_fn = f"{round_.name}/train_", None
  try:
    while meta["iteration"] < iterations:
      i, offset = meta["iteration"], meta["step_offset"]
      if meta["phase"] == "sample":
        record, updates = round_.collect(i, state, frozen, meta)
        logger.log(offset, numbers(record), f"{round_.name}/")
        steps = round_.steps(len(updates["dataset"]))
        state = create_state(round_.start_params(i, state, frozen), optimizer, cfg.seed + i)
        state = state.replace(opt_state=set_total_steps(state.opt_state, steps))
        meta = dict(meta, **updates, phase="train", position=0, steps=steps,
                    history=meta["history"] + [record])
        ckpt.save(save_id(), tree(state), meta)

      # phase "train": fine-tune on the round's dataset.
      if step_fn is None:
        step_fn = make_train_step(round_.loss_fn, optimizer, state,
                                  optimizer_cfg.grad_accum_steps, frozen=round_.base)

      def save(position, s):
        if position < meta["steps"]:  # the round's end is saved below, with its train loss
          ckpt.save(save_id(), tree(s), dict(meta, position=position))

      state, last = run_steps(state, step_fn, round_.batches(meta, i), meta["position"],
                              meta["steps"], mesh=policy.mesh, logger=logger,
                              log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                              save=save, global_offset=offset, prefix=prefix,
                              checkpointer=ckpt, learning_rate=learning_rate_of(optimizer_cfg))
      if meta["position"] < meta["steps"]:  # else resumed after this round's training
        record = dict(meta["history"][-1], train_loss=last.get(f"{prefix}loss"),
                      train_steps=meta["steps"])
        meta = dict(meta, position=meta["steps"], history=meta["history"][:-1] + [record])
        ckpt.save(save_id(), tree(state), meta)  # a kill during the evaluation keeps the round
      last_round = i + 1 == iterations
      if round_.finish is not None:
        extra = round_.finish(i, state, meta, last_round)
        logger.log(offset + meta["steps"], numbers(extra), f"{round_.name}/")
        meta = dict(meta, history=meta["history"][:-1] + [dict(meta["history"][-1], **extra)])
      meta = dict(meta, iteration=i + 1, phase="done" if last_round else "sample", position=0,
                  step_offset=offset + meta["steps"])
      ckpt.save(save_id(), tree(state), meta)
  finally:
    logger.close()
  return state, meta["history"]


def _steps_before(meta: dict) -> int:
  """The train steps of the rounds before the current one, for a checkpoint written before meta
  held `step_offset`: each finished round's record holds its `train_steps`."""
  done = meta["history"][:meta["iteration"]]
  return sum(int(record.get("train_steps", 0)) for record in done)
