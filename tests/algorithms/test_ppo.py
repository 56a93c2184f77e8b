"""PPO: the loss against a numpy reference, the advantages, the value model, and a short run from
an SFT start that raises the reward and resumes exactly after SIGKILL."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlthink.algorithms import ppo, scoring
from rlthink.algorithms.ppo import PPOConfig, run_ppo
from rlthink.models import decoder
from rlthink.train import OptimizerConfig

import rl_fixtures

RUN = dict(iterations=5, num_questions=4, prompts_per_iteration=4, samples_per_prompt=16,
           max_new_tokens=12, epochs=2, minibatch_size=32, kl_coef=0.01, kl_target=1.0,
           kl_horizon=200, log_every=100)
OPTIMIZER = dict(learning_rate=3e-4)
KILL_AFTER = 2  # iterations checkpointed before the SIGKILL


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """An uninterrupted run, and (concurrently, in a subprocess) the same run killed after
  iteration KILL_AFTER's checkpoint, then resumed here."""
  return rl_fixtures.full_and_killed_runs(tmp_path_factory, "ppo", "run_ppo", "PPOConfig",
                                          RUN, OPTIMIZER, KILL_AFTER)


def test_ppo_raises_the_reward_from_sft(runs):
  rewards = [h["reward_mean"] for h in runs["history"]]
  assert len(rewards) == RUN["iterations"]
  # Fixed seeds: deterministic; the margin is far above the sampling noise of 64 rows.
  assert np.mean(rewards[-2:]) > rewards[0] + 0.15, rewards
  h = runs["history"][-1]
  assert h["kl"] > 0 and 0 <= h["clip_frac"] <= 1 and math.isfinite(h["value_loss"])
  # The adaptive controller moved the coefficient (KL above target -> up).
  coefs = [x["kl_coef"] for x in runs["history"]]
  assert coefs[0] == pytest.approx(RUN["kl_coef"]) and coefs[-1] != pytest.approx(coefs[0])


def test_rollout_logprobs_match_a_training_forward(runs):
  for h in runs["history"]:
    assert h["logprob_drift_max"] < 1e-4  # float32 on CPU: the cached decode == the forward


def test_resume_after_sigkill_is_exact(runs):
  assert runs["returncode"] == -9, runs["stderr"][-3000:]
  killed_dir = runs["killed_dir"]
  steps = sorted(int(d) for d in os.listdir(os.path.join(killed_dir, "checkpoints"))
                 if d.isdigit())
  assert KILL_AFTER <= steps[-1] < RUN["iterations"], steps  # killed mid-run
  final, history = run_ppo(runs["policy"], runs["task"], PPOConfig(**RUN),
                           OptimizerConfig(**OPTIMIZER), killed_dir, progress=False)
  strip = lambda hs: [{k: v for k, v in h.items() if not k.startswith("time_")} for h in hs]
  assert strip(history) == strip(runs["history"])
  jax.tree.map(np.testing.assert_array_equal, final.params, runs["final"].params)
  # Everything checkpointed: policy and value params, both optimizer states, rng, reference,
  # KL controller.
  full, meta_full = rl_fixtures.saved_tree(runs["full_dir"], RUN["iterations"])
  resumed, meta_resumed = rl_fixtures.saved_tree(killed_dir, RUN["iterations"])
  assert set(full) == {"state", "reference", "kl"}
  assert set(full["state"]["params"]) == {"policy", "value"}
  assert jax.tree.structure(full) == jax.tree.structure(resumed)
  jax.tree.map(np.testing.assert_array_equal, full, resumed)
  assert meta_full["iteration"] == meta_resumed["iteration"] == RUN["iterations"]


# ------------------------------------------------------------------------------------------------
# The pure pieces.


def _value_params(policy):
  return ppo.add_value_head(policy.params, policy.config)


def _random_batch(policy, rng, b=3, t=10):
  tokens = rng.integers(4, 100, size=(b, t)).astype(np.int32)
  attention = np.ones((b, t), bool)
  attention[0, :2] = False  # left padding
  mask = np.zeros((b, t - 1), bool)
  mask[:, 5:] = True
  mask[1, 8:] = False
  return {"tokens": tokens, "attention_mask": attention, "completion_mask": mask,
          "old_logprobs": rng.normal(-3, 0.3, (b, t - 1)).astype(np.float32),
          "old_values": rng.normal(0, 0.5, (b, t - 1)).astype(np.float32),
          "advantages": rng.normal(0, 1, (b, t - 1)).astype(np.float32),
          "returns": rng.normal(0, 1, (b, t - 1)).astype(np.float32)}


@pytest.mark.parametrize("value_model", ["separate", "shared"])
def test_ppo_loss_matches_numpy(value_model):
  policy = rl_fixtures.tiny_policy()
  cfg = PPOConfig(clip_eps=0.2, value_clip_eps=0.3, vf_coef=0.7, entropy_coef=0.05,
                  value_model=value_model)
  params = ppo.initial_params(policy, cfg)
  # a non-zero value head, so the value loss depends on the trunk
  head = np.random.default_rng(1).normal(0, 0.1, policy.config.hidden_size).astype(np.float32)
  key = "value" if value_model == "separate" else "policy"
  params[key] = dict(params[key], value_head=jnp.asarray(head))
  batch = _random_batch(policy, np.random.default_rng(0))
  loss, metrics = jax.jit(ppo.ppo_loss(policy.config, cfg))(params, batch, None)

  # numpy reference from plain forwards
  out, _ = decoder.forward(policy.config, params[key], jnp.asarray(batch["tokens"]),
                           attention_mask=jnp.asarray(batch["attention_mask"]),
                           heads=("logits", "value"))
  logits = np.asarray(out["logits"], np.float64)
  values = np.asarray(out["value"], np.float64)[:, :-1]
  logz = np.log(np.exp(logits).sum(-1))
  logp_all = logits - logz[..., None]
  logp = np.take_along_axis(logp_all[:, :-1], batch["tokens"][:, 1:, None], -1)[..., 0]
  m = batch["completion_mask"].astype(np.float64)
  ratio = np.exp(logp - batch["old_logprobs"])
  adv = batch["advantages"]
  pg = np.maximum(-adv * ratio, -adv * np.clip(ratio, 0.8, 1.2))
  v_old, ret = batch["old_values"], batch["returns"]
  vf = 0.5 * np.maximum((values - ret) ** 2, (v_old + np.clip(values - v_old, -.3, .3) - ret) ** 2)
  ent = -(np.exp(logp_all[:, :-1]) * logp_all[:, :-1]).sum(-1)
  mean = lambda x: (x * m).sum() / m.sum()
  expected = mean(pg) + 0.7 * mean(vf) - 0.05 * mean(ent)
  assert float(loss) == pytest.approx(expected, rel=1e-4)
  assert float(metrics["policy_loss"]) == pytest.approx(mean(pg), rel=1e-4, abs=1e-6)
  assert float(metrics["value_loss"]) == pytest.approx(mean(vf), rel=1e-4)
  assert float(metrics["entropy"]) == pytest.approx(mean(ent), rel=1e-4)


def test_value_models_start_at_zero_and_keep_the_policy():
  policy = rl_fixtures.tiny_policy()
  separate = ppo.initial_params(policy, PPOConfig(value_model="separate"))
  shared = ppo.initial_params(policy, PPOConfig(value_model="shared"))
  assert set(separate) == {"policy", "value"} and set(shared) == {"policy"}
  assert float(jnp.abs(separate["value"]["value_head"]).sum()) == 0
  assert "value_head" not in separate["policy"] and "value_head" in shared["policy"]
  assert set(ppo.strip_value_head(shared["policy"])) == set(policy.params)
  scores = scoring.score_tokens(policy.config, separate["value"], jnp.ones((2, 5), jnp.int32),
                                jnp.ones((2, 5), bool), ("value",))
  assert scores["values"].shape == (2, 4) and float(jnp.abs(scores["values"]).max()) == 0


def test_advantages_with_lambda_one_are_reward_to_go():
  # gamma = lam = 1 and no KL: every completion token's return is the final reward, and its
  # advantage is the reward minus its value.
  rng = np.random.default_rng(0)
  mask = np.zeros((3, 6), bool)
  mask[0, 2:] = mask[1, 3:5] = mask[2, 1:4] = True
  values = rng.normal(size=(3, 6)).astype(np.float32)
  batch = {"completion_mask": mask, "old_logprobs": np.zeros((3, 6), np.float32),
           "ref_logprobs": np.zeros((3, 6), np.float32), "old_values": values}
  final = jnp.asarray([1.0, 0.0, 0.5])
  adv, ret, stats = ppo.compute_advantages(batch, final, jnp.float32(0.1), gamma=1.0, lam=1.0,
                                           kl_estimator="k1", whiten=False)
  np.testing.assert_allclose(np.asarray(ret), np.where(mask, np.asarray(final)[:, None], 0),
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(adv), np.where(mask, np.asarray(ret) - values, 0),
                             atol=1e-6)
  # a KL penalty lowers the return of each token by kl_coef * the KL still to come
  batch["old_logprobs"] = np.where(mask, -1.0, 0.0).astype(np.float32)
  batch["ref_logprobs"] = np.where(mask, -2.0, 0.0).astype(np.float32)  # k1 = 1 per token
  _, ret_kl, stats = ppo.compute_advantages(batch, final, jnp.float32(0.1), gamma=1.0, lam=1.0,
                                            kl_estimator="k1", whiten=False)
  to_go = np.cumsum(mask[:, ::-1], axis=1)[:, ::-1] * mask
  np.testing.assert_allclose(np.asarray(ret_kl), np.asarray(ret) - 0.1 * to_go, atol=1e-6)
  assert float(stats["kl"]) == pytest.approx(mask.sum() / 3)


def test_dense_rewards_add_to_the_per_token_rewards():
  # gamma = lam = 1, no KL: each token's return is the final reward plus the dense rewards from
  # that token on (reward-to-go), numpy reference.
  rng = np.random.default_rng(1)
  mask = np.zeros((3, 6), bool)
  mask[0, 2:] = mask[1, 3:5] = mask[2, 1:4] = True
  values = rng.normal(size=(3, 6)).astype(np.float32)
  step = np.where(mask, rng.normal(size=(3, 6)), 0.0).astype(np.float32)
  final = np.asarray([1.0, 0.0, 0.5], np.float32)
  batch = {"completion_mask": mask, "old_logprobs": np.zeros((3, 6), np.float32),
           "ref_logprobs": np.zeros((3, 6), np.float32), "old_values": values}
  cfg = PPOConfig(gamma=1.0, lam=1.0, whiten_advantages=False, kl_coef=0.0)
  out, _ = ppo.add_advantages(dict(batch, tokens=None, attention_mask=None), final, 0.0, cfg,
                              dense_rewards=step)
  to_go = np.cumsum(step[:, ::-1], axis=1)[:, ::-1]
  expected = np.where(mask, final[:, None] + to_go, 0.0)
  np.testing.assert_allclose(out["returns"], expected, atol=1e-5)
  np.testing.assert_allclose(out["advantages"], np.where(mask, expected - values, 0.0), atol=1e-5)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="value_model='both'"):
    PPOConfig(value_model="both")
  with pytest.raises(ValueError, match="kl_estimator='k9'"):
    PPOConfig(kl_estimator="k9")
  with pytest.raises(ValueError, match="minibatch_size=0"):
    PPOConfig(minibatch_size=0)


def test_train_step_on_a_mesh_matches_one_device():
  from rlthink import sharding
  from rlthink.train import create_state, make_train_step
  cfg = PPOConfig(learning_rate=1e-3, value_learning_rate=1e-2)
  batch = _random_batch(None, np.random.default_rng(0), b=8, t=10)
  results = []
  for mesh in (None, sharding.make_mesh((2, 2, 1), jax.devices()[:4])):
    policy = rl_fixtures.tiny_policy().replace(mesh=mesh)
    policy = policy.replace(params=decoder.init_params(policy.config, jax.random.key(0),
                                                       mesh=mesh))
    optimizer = ppo.make_ppo_optimizer(OptimizerConfig(clip_norm=1.0), cfg, 10)
    state = create_state(ppo.initial_params(policy, cfg), optimizer, seed=0)
    step = make_train_step(ppo.ppo_loss(policy.config, cfg, mesh), optimizer, state)
    from rlthink.train import shard_batch
    state, metrics = step(state, shard_batch(batch, mesh))
    results.append((jax.device_get(metrics), jax.device_get(state.params)))
  (m0, p0), (m1, p1) = results
  assert float(m1["loss"]) == pytest.approx(float(m0["loss"]), rel=1e-5, abs=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=5e-5), p0, p1)
  # (Adam divides by sqrt(v): a near-zero gradient amplifies float differences in the reduction
  # order to a few 1e-5 on single coordinates; a sharding error moves them by ~lr = 1e-3)
  # the value model moves 10x further than the policy on its first (sign-like) Adam step (its
  # trunk gets no gradient yet through the zero head: compare the head)
  start = ppo.initial_params(rl_fixtures.tiny_policy().replace(
      params=decoder.init_params(rl_fixtures.tiny_policy().config, jax.random.key(0))), cfg)
  value_step = np.abs(p0["value"]["value_head"] - start["value"]["value_head"]).max()
  policy_step = np.abs(p0["policy"]["final_norm"]["scale"]
                       - start["policy"]["final_norm"]["scale"]).max()
  assert value_step == pytest.approx(1e-2, rel=1e-3) and policy_step == pytest.approx(1e-3,
                                                                                      rel=1e-3)
