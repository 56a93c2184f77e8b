"""A cheap algorithm for experiment-layer tests: adds `delta` to every parameter, checkpoints
the result, and records each call (stage name, config, the params it started from)."""

import dataclasses

import jax

from rlthink.train import Checkpointer

CALLS: list[dict] = []


@dataclasses.dataclass(frozen=True)
class FakeConfig:
  delta: float = 1.0
  iterations: int = 2
  seed: int = 0


def run_stage(policy, cfg: FakeConfig, ctx):
  CALLS.append({"name": ctx.name, "cfg": cfg, "start": policy.params,
                "examples": ctx.examples})
  params = jax.tree.map(lambda x: x + cfg.delta, policy.params)
  current = policy.replace(params=params)
  history = []
  for i in range(1, cfg.iterations + 1):
    record = {"iteration": i, "samples": 4}
    if ctx.evaluate is not None:
      record.update({f"eval_{k}": v for k, v in
                     ctx.evaluate(current, i, i == cfg.iterations).items()})
    history.append(record)
  ckpt = Checkpointer(ctx.directory, policy.config)
  ckpt.save((ckpt.latest_step() or 0) + 1, {"params": params}, {"iteration": cfg.iterations})
  return current, history
