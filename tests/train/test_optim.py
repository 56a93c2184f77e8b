"""The optimizer: its learning-rate schedule equals optax's schedules for every kind, warm-up or
not, and its updates equal optax's AdamW chain; the schedule's length is a value of the state
(`set_total_steps`), so one compiled step serves runs of any length."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlthink.train import OptimizerConfig, make_optimizer, set_total_steps
from rlthink.train.optim import learning_rate


def _optax_schedule(cfg: OptimizerConfig, total: int):
  """The schedule as optax's own pieces (the independent reference)."""
  decay_steps = max(total - cfg.warmup_steps, 1)
  decay = {"cosine": optax.cosine_decay_schedule(cfg.learning_rate, decay_steps, cfg.min_lr_ratio),
           "linear": optax.linear_schedule(cfg.learning_rate, cfg.learning_rate * cfg.min_lr_ratio,
                                           decay_steps),
           "constant": optax.constant_schedule(cfg.learning_rate)}[cfg.schedule]
  if not cfg.warmup_steps:
    return decay
  warmup = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
  return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


@pytest.mark.parametrize("warmup", [0, 3])
@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_learning_rate_equals_optax_schedules(schedule, warmup):
  cfg = OptimizerConfig(learning_rate=2e-3, schedule=schedule, warmup_steps=warmup)
  for total in (1, 3, 10):
    reference = _optax_schedule(cfg, total)
    for count in range(total + 3):
      np.testing.assert_allclose(float(learning_rate(cfg, count, total)),
                                 float(reference(count)), rtol=1e-6, atol=1e-12)


def _params():
  keys = jax.random.split(jax.random.key(0), 2)
  return {"w": jax.random.normal(keys[0], (4, 3)), "b": jax.random.normal(keys[1], (3,))}


def _grads(i):
  return jax.tree.map(lambda x: jnp.sin(x * (i + 1)), _params())


@pytest.mark.parametrize("clip,decay", [(1.0, 0.0), (None, 0.1)])
def test_updates_equal_optax_adamw(clip, decay):
  cfg = OptimizerConfig(learning_rate=1e-2, schedule="cosine", warmup_steps=2, clip_norm=clip,
                        weight_decay=decay)
  total = 6
  adamw = optax.adamw(_optax_schedule(cfg, total), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                      weight_decay=decay)
  reference = adamw if clip is None else optax.chain(optax.clip_by_global_norm(clip), adamw)
  ours = make_optimizer(cfg, total)
  params = _params()
  states = [ours.init(params), reference.init(params)]
  for i in range(total):
    (u1, states[0]), (u2, states[1]) = (opt.update(_grads(i), s, params) for opt, s in
                                        zip((ours, reference), states))
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-9)


def test_set_total_steps_changes_the_schedule_not_the_compiled_step():
  cfg = OptimizerConfig(learning_rate=1e-2, schedule="linear", clip_norm=None)
  optimizer = make_optimizer(cfg, 1)
  update = jax.jit(lambda g, s, p: optimizer.update(g, s, p))
  params = _params()
  moved, compiled = {}, []
  for total in (4, 20):
    state = set_total_steps(optimizer.init(params), total)
    reference = optax.adamw(_optax_schedule(cfg, total), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                            weight_decay=0.0)
    ref_state = reference.init(params)
    for i in range(3):
      u, state = update(_grads(i), state, params)
      r, ref_state = reference.update(_grads(i), ref_state, params)
      np.testing.assert_allclose(np.asarray(u["w"]), np.asarray(r["w"]), rtol=1e-5, atol=1e-9)
    moved[total] = float(jnp.abs(u["w"]).sum())
    compiled.append(update._cache_size())
  assert compiled[1] == compiled[0]  # the second length compiled nothing new
  assert moved[4] < moved[20]  # the shorter run has decayed further by step 3


def test_set_total_steps_checks_its_input():
  state = make_optimizer(OptimizerConfig(), 5).init(_params())
  with pytest.raises(ValueError, match="total_steps must be >= 1"):
    set_total_steps(state, 0)
  with pytest.raises(ValueError, match="no schedule"):
    set_total_steps(optax.sgd(0.1).init(_params()), 5)


@pytest.mark.parametrize("field, value", [
    ("clip_norm", -1.0), ("clip_norm", 0.0), ("min_lr_ratio", -0.1), ("min_lr_ratio", 1.5),
    ("learning_rate", float("nan")), ("learning_rate", "3e-4"), ("weight_decay", -0.01),
    ("b1", 1.0), ("b2", -0.5), ("eps", 0.0), ("warmup_steps", 2.5), ("grad_accum_steps", True),
])
def test_every_optimizer_value_is_validated_naming_the_field(field, value):
  # e.g. a negative clip_norm or min_lr_ratio used to flip the updates and train backwards.
  with pytest.raises(ValueError, match=rf"OptimizerConfig\.{field}="):
    OptimizerConfig(**{field: value})


def test_valid_edge_values_are_accepted():
  OptimizerConfig(clip_norm=None, min_lr_ratio=0.0, weight_decay=0.0, b1=0.0, warmup_steps=0)
  OptimizerConfig(min_lr_ratio=1, learning_rate=1)
