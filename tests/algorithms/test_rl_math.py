"""The shared RL math (`rl_math`) against numpy references and hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlthink import ops
from rlthink.algorithms import rl_math


def gae_reference(rewards, values, mask, gamma, lam):
  """Textbook GAE per row over the masked-in steps (the episode), in float64 loops."""
  adv = np.zeros_like(rewards, np.float64)
  for b in range(rewards.shape[0]):
    steps = np.flatnonzero(mask[b])
    running, next_value = 0.0, 0.0
    for t in steps[::-1]:
      delta = rewards[b, t] + gamma * next_value - values[b, t]
      running = delta + gamma * lam * running
      adv[b, t] = running
      next_value = values[b, t]
  return adv, np.where(mask, adv + values, 0.0)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (0.99, 1.0), (1.0, 0.0)])
def test_gae_matches_numpy_reference(gamma, lam):
  rng = np.random.default_rng(int(gamma * 100 + lam * 10))
  b, t = 6, 13
  rewards = rng.normal(size=(b, t)).astype(np.float32)
  values = rng.normal(size=(b, t)).astype(np.float32)
  mask = rng.random((b, t)) < 0.7  # holes inside rows too: masked columns are skipped
  mask[0] = False                  # an empty row
  mask[1] = np.arange(t) >= 4      # a contiguous completion, as rollouts have
  adv, ret = rl_math.compute_gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask),
                              gamma, lam)
  ref_adv, ref_ret = gae_reference(rewards, values, mask, gamma, lam)
  np.testing.assert_allclose(np.asarray(adv), ref_adv, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ret), ref_ret, rtol=1e-5, atol=1e-5)


def test_gae_sparse_reward_hand_computed():
  # One row, 3 actions, reward 1 at the end, values (0.5, 0.2, 0.4), gamma 1, lambda 0.5.
  rewards = jnp.asarray([[0.0, 0.0, 0.0, 1.0]])
  values = jnp.asarray([[9.0, 0.5, 0.2, 0.4]])  # column 0 is prompt: ignored
  mask = jnp.asarray([[False, True, True, True]])
  adv, ret = rl_math.compute_gae(rewards, values, mask, 1.0, 0.5)
  d3 = 1.0 - 0.4
  d2 = 0.0 + 0.4 - 0.2
  d1 = 0.0 + 0.2 - 0.5
  a3, a2 = d3, d2 + 0.5 * d3
  a1 = d1 + 0.5 * a2
  np.testing.assert_allclose(np.asarray(adv), [[0.0, a1, a2, a3]], atol=1e-6)
  np.testing.assert_allclose(np.asarray(ret), [[0.0, a1 + 0.5, a2 + 0.2, a3 + 0.4]], atol=1e-6)


def test_gae_is_jittable_with_traced_coefficients():
  x = jnp.ones((2, 5))
  out = jax.jit(rl_math.compute_gae)(x, x * 0.5, x > 0, 0.9, 0.8)
  ref = gae_reference(np.ones((2, 5)), np.full((2, 5), 0.5), np.ones((2, 5), bool), 0.9, 0.8)
  np.testing.assert_allclose(np.asarray(out[0]), ref[0], rtol=1e-5)


def test_group_advantages():
  rewards = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.5], np.float32)
  out = np.asarray(rl_math.group_advantages(rewards, 4, "std", eps=0.0 + 1e-6))
  g = rewards.reshape(2, 4)
  ref = (g - g.mean(1, keepdims=True)) / (g.std(1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(out, ref.reshape(-1), rtol=1e-5)
  # group 0: mean 0.5, std 0.5 -> +-1
  np.testing.assert_allclose(out[:4], [1, -1, -1, 1], atol=1e-5)
  centered = np.asarray(rl_math.group_advantages(rewards, 2, "none"))
  np.testing.assert_allclose(centered, [0.5, -0.5, -0.5, 0.5, 0, 0, -0.25, 0.25], atol=1e-6)
  # an all-equal group gets no signal, not NaN
  assert np.all(np.asarray(rl_math.group_advantages(np.ones(4), 4)) == 0)
  with pytest.raises(ValueError, match="multiple of group_size=3"):
    rl_math.group_advantages(rewards, 3)
  with pytest.raises(ValueError, match="normalize='mad'"):
    rl_math.group_advantages(rewards, 4, "mad")


def test_kl_estimators_hand_computed():
  logp, ref = jnp.asarray([-1.0, -2.0]), jnp.asarray([-1.5, -1.0])
  d = np.array([-0.5, 1.0])  # ref - logp
  np.testing.assert_allclose(rl_math.kl_estimate(logp, ref, "k1"), [0.5, -1.0], atol=1e-6)
  np.testing.assert_allclose(rl_math.kl_estimate(logp, ref, "k2"), [0.125, 0.5], atol=1e-6)
  np.testing.assert_allclose(rl_math.kl_estimate(logp, ref, "k3"), np.exp(d) - d - 1, rtol=1e-6)
  with pytest.raises(ValueError, match="kl_estimator='k4'"):
    rl_math.kl_estimate(logp, ref, "k4")


def test_kl_estimators_are_unbiased_where_claimed():
  # Samples from p; true KL(p || q) between two categorical distributions.
  p = np.array([0.5, 0.3, 0.2])
  q = np.array([0.2, 0.5, 0.3])
  true_kl = float(np.sum(p * np.log(p / q)))
  rng = np.random.default_rng(0)
  x = rng.choice(3, size=200_000, p=p)
  logp, logq = jnp.log(p[x]), jnp.log(q[x])
  for est in ("k1", "k3"):
    assert float(jnp.mean(rl_math.kl_estimate(logp, logq, est))) == pytest.approx(true_kl, abs=3e-3)


def test_clipped_policy_loss_hand_computed():
  logp = jnp.asarray([[math.log(1.5), math.log(0.5), 0.0, 0.0]])
  old = jnp.zeros((1, 4))
  adv = jnp.asarray([[1.0, 1.0, -2.0, 5.0]])
  mask = jnp.asarray([[1, 1, 1, 0]])
  loss, m = rl_math.clipped_policy_loss(logp, old, adv, mask, clip_eps=0.2)
  # token 0: r=1.5, A=1: max(-1.5, -1.2) = -1.2 (clipped); token 1: r=.5, A=1: max(-.5, -.8) = -.5
  # token 2: r=1, A=-2: 2; token 3 masked out.
  assert float(loss) == pytest.approx((-1.2 - 0.5 + 2.0) / 3, abs=1e-6)
  assert float(m["clip_frac"]) == pytest.approx(1 / 3)
  # asymmetric clip: upper 0.6 leaves r=1.5 unclipped
  loss_hi, _ = rl_math.clipped_policy_loss(logp, old, adv, mask, clip_eps=0.2, clip_eps_high=0.6)
  assert float(loss_hi) == pytest.approx((-1.5 - 0.5 + 2.0) / 3, abs=1e-6)
  # per-sequence advantages broadcast over tokens
  loss_seq, _ = rl_math.clipped_policy_loss(logp, old, jnp.asarray([1.0]), mask, clip_eps=0.2)
  assert float(loss_seq) == pytest.approx((-1.2 - 0.5 - 1.0) / 3, abs=1e-6)
  # gradient: d/dlogp of -A r is -A r where unclipped, 0 where clipped
  grad = jax.grad(lambda lp: rl_math.clipped_policy_loss(lp, old, adv, mask, 0.2)[0])(logp)
  np.testing.assert_allclose(np.asarray(grad), [[0.0, -0.5 / 3, 2.0 / 3, 0.0]], atol=1e-6)


def test_aggregations_hand_computed():
  x = jnp.asarray([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0]])
  mask = jnp.asarray([[1, 1, 1], [1, 0, 0]])
  assert float(rl_math.aggregate(x, mask, "token_mean")) == pytest.approx(16 / 4)
  assert float(rl_math.aggregate(x, mask, "sequence_mean")) == pytest.approx((2 + 10) / 2)
  assert float(rl_math.aggregate(x, mask, "token_sum_norm")) == pytest.approx(16 / 6)
  # rows without tokens do not count in the sequence mean
  empty = jnp.asarray([[1, 1, 1], [0, 0, 0]])
  assert float(rl_math.aggregate(x, empty, "sequence_mean")) == pytest.approx(2.0)
  with pytest.raises(ValueError, match="aggregation='mean'"):
    rl_math.aggregate(x, mask, "mean")


def test_clipped_value_loss_hand_computed():
  values = jnp.asarray([[1.0, 0.0, 2.0]])
  old = jnp.asarray([[0.5, 0.0, 0.0]])
  returns = jnp.asarray([[0.0, 1.0, 3.0]])
  mask = jnp.ones((1, 3))
  loss, m = rl_math.clipped_value_loss(values, old, returns, mask, clip_eps=0.2)
  # token 0: plain 1, clipped (0.7 - 0)^2 = .49 -> 1; token 1: 1, 1 -> 1;
  # token 2: plain 1, clipped (0.2 - 3)^2 = 7.84 -> 7.84
  assert float(loss) == pytest.approx(0.5 * (1 + 1 + 7.84) / 3, rel=1e-6)
  assert float(m["value_clip_frac"]) == pytest.approx(1 / 3)
  plain, _ = rl_math.clipped_value_loss(values, old, returns, mask, clip_eps=None)
  assert float(plain) == pytest.approx(0.5 * 3 / 3)


def test_entropy_bonus_matches_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
  mask = np.array([[1, 0, 1], [1, 1, 0]], np.float32)
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  ent = -(p * np.log(p)).sum(-1)
  ref = (ent * mask).sum() / mask.sum()
  bonus = rl_math.entropy_bonus(ops.entropy(jnp.asarray(logits)), jnp.asarray(mask))
  assert float(bonus) == pytest.approx(ref, rel=1e-5)


def test_per_token_rewards():
  mask = jnp.asarray([[0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]], bool)
  kl = jnp.full((3, 4), 0.5)
  r = rl_math.per_token_rewards(jnp.asarray([1.0, 2.0, 3.0]), mask, kl, kl_coef=0.1)
  np.testing.assert_allclose(np.asarray(r), [[0, -0.05, 0.95, 0], [0, 0, -0.05, 1.95],
                                             [0, 0, 0, 0]], atol=1e-6)
  no_kl = rl_math.per_token_rewards(jnp.asarray([1.0, 2.0, 3.0]), mask)
  np.testing.assert_allclose(np.asarray(no_kl).sum(1), [1, 2, 0])


def test_kl_controller():
  ctl = rl_math.init_kl_controller(0.1)
  fixed = rl_math.update_kl_controller(ctl, 100.0, 64, target=None)
  assert float(fixed.coef) == pytest.approx(0.1)
  # KL 3x the target: error clipped at 0.2 -> coef * (1 + 0.2 * 64 / 1000)
  up = rl_math.update_kl_controller(ctl, 18.0, 64, target=6.0, horizon=1000)
  assert float(up.coef) == pytest.approx(0.1 * (1 + 0.2 * 0.064), rel=1e-6)
  down = rl_math.update_kl_controller(ctl, 5.4, 64, target=6.0, horizon=1000)
  assert float(down.coef) == pytest.approx(0.1 * (1 - 0.1 * 0.064), rel=1e-6)
  # a pytree: jit and tree ops see the coefficient
  assert jax.tree.leaves(jax.jit(lambda c: c)(up))[0].shape == ()
  with pytest.raises(ValueError, match=">= 0"):
    rl_math.init_kl_controller(-1.0)
