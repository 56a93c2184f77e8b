"""GRPO: the loss against a numpy reference, and a short run from an SFT start that raises the
reward and resumes exactly after SIGKILL."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlthink.algorithms import grpo, scoring
from rlthink.algorithms.grpo import GRPOConfig, run_grpo
from rlthink.train import OptimizerConfig

import rl_fixtures

RUN = dict(iterations=6, num_questions=4, prompts_per_iteration=4, samples_per_prompt=16,
           max_new_tokens=12, epochs=1, minibatch_size=32, kl_coef=0.02, kl_estimator="k3",
           log_every=100)
OPTIMIZER = dict(learning_rate=1e-3, warmup_steps=4)  # warm-up: no destructive first steps
KILL_AFTER = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """An uninterrupted run, and (concurrently, in a subprocess) the same run killed after
  iteration KILL_AFTER's checkpoint, then resumed here."""
  return rl_fixtures.full_and_killed_runs(tmp_path_factory, "grpo", "run_grpo", "GRPOConfig",
                                          RUN, OPTIMIZER, KILL_AFTER)


def test_grpo_raises_the_reward_from_sft(runs):
  rewards = [h["reward_mean"] for h in runs["history"]]
  assert len(rewards) == RUN["iterations"]
  assert np.mean(rewards[-2:]) > rewards[0] + 0.15, rewards
  for h in runs["history"]:
    assert h["logprob_drift_max"] < 1e-4
    assert 0 <= h["zero_advantage_frac"] <= 1
  assert runs["history"][-1]["kl"] > 0


def test_resume_after_sigkill_is_exact(runs):
  assert runs["returncode"] == -9, runs["stderr"][-3000:]
  killed_dir = runs["killed_dir"]
  steps = sorted(int(d) for d in os.listdir(os.path.join(killed_dir, "checkpoints"))
                 if d.isdigit())
  assert KILL_AFTER <= steps[-1] < RUN["iterations"], steps
  final, history = run_grpo(runs["policy"], runs["task"], GRPOConfig(**RUN),
                            OptimizerConfig(**OPTIMIZER), killed_dir, progress=False)
  strip = lambda hs: [{k: v for k, v in h.items() if not k.startswith("time_")} for h in hs]
  assert strip(history) == strip(runs["history"])
  jax.tree.map(np.testing.assert_array_equal, final.params, runs["final"].params)
  full, _ = rl_fixtures.saved_tree(runs["full_dir"], RUN["iterations"])
  resumed, _ = rl_fixtures.saved_tree(killed_dir, RUN["iterations"])
  assert set(full) == {"state", "reference"}
  jax.tree.map(np.testing.assert_array_equal, full, resumed)


@pytest.mark.parametrize("estimator,aggregation", [("k3", "sequence_mean"),
                                                   ("k2", "token_sum_norm")])
def test_grpo_loss_matches_numpy(estimator, aggregation):
  policy = rl_fixtures.tiny_policy()
  cfg = GRPOConfig(clip_eps=0.2, clip_eps_high=0.28, kl_coef=0.1, kl_estimator=estimator,
                   aggregation=aggregation, entropy_coef=0.01, old_logprobs="forward")
  rng = np.random.default_rng(0)
  b, t = 4, 9
  tokens = rng.integers(4, 100, size=(b, t)).astype(np.int32)
  mask = np.zeros((b, t - 1), bool)
  mask[:, 4:] = True
  mask[2, 6:] = False
  batch = {"tokens": tokens, "attention_mask": np.ones((b, t), bool), "completion_mask": mask,
           "old_logprobs": rng.normal(-4.5, 0.3, (b, t - 1)).astype(np.float32),
           "ref_logprobs": rng.normal(-4.5, 0.3, (b, t - 1)).astype(np.float32),
           "advantages": np.array([1.0, -1.0, 0.5, 0.0], np.float32)}
  loss, metrics = jax.jit(grpo.grpo_loss(policy.config, cfg))(policy.params, batch, None)

  logits = np.asarray(policy.logits(tokens), np.float64)[:, :-1]
  logp_all = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  logp = np.take_along_axis(logp_all, tokens[:, 1:, None], -1)[..., 0]
  ratio = np.exp(logp - batch["old_logprobs"])
  adv = batch["advantages"][:, None]
  pg = np.maximum(-adv * ratio, -adv * np.clip(ratio, 0.8, 1.28))
  d = batch["ref_logprobs"] - logp
  kl = {"k1": -d, "k2": d * d / 2, "k3": np.exp(d) - d - 1}[estimator]
  ent = -(np.exp(logp_all) * logp_all).sum(-1)
  m = mask.astype(np.float64)
  if aggregation == "sequence_mean":
    agg = lambda x: np.mean((x * m).sum(1) / m.sum(1))
  elif aggregation == "token_mean":
    agg = lambda x: (x * m).sum() / m.sum()
  else:
    agg = lambda x: (x * m).sum() / m.size
  assert float(metrics["policy_loss"]) == pytest.approx(agg(pg), rel=1e-4, abs=1e-6)
  assert float(metrics["kl"]) == pytest.approx(agg(kl), rel=1e-4, abs=1e-7)
  assert float(loss) == pytest.approx(agg(pg) + 0.1 * agg(kl) - 0.01 * agg(ent), rel=1e-4)


def test_on_policy_gradient_raises_positive_advantage_completions():
  # One on-policy step (ratio 1; "auto": the loss's own log-probs under a stop-gradient):
  # log-probs of the completion with A > 0 rise, A < 0 fall.
  policy = rl_fixtures.tiny_policy()
  cfg = GRPOConfig(aggregation="sequence_mean")
  tokens = np.tile(np.arange(10, 22, dtype=np.int32), (2, 1))
  tokens[1, 6:] += 30
  mask = np.zeros((2, 11), bool)
  mask[:, 5:] = True
  old = scoring.score_tokens(policy.config, policy.params, jnp.asarray(tokens),
                          jnp.ones((2, 12), bool))["logprobs"]
  batch = {"tokens": tokens, "attention_mask": np.ones((2, 12), bool), "completion_mask": mask,
           "old_logprobs": np.asarray(old), "advantages": np.array([1.0, -1.0], np.float32)}
  grads = jax.jit(jax.grad(lambda p: grpo.grpo_loss(policy.config, cfg)(p, batch, None)[0]))(
      policy.params)
  params = jax.tree.map(lambda p, g: p - 1e-2 * g, policy.params, grads)
  new = scoring.score_tokens(policy.config, params, jnp.asarray(tokens), jnp.ones((2, 12), bool))
  change = np.asarray((new["logprobs"] - old) * mask).sum(1)
  assert change[0] > 0 > change[1]


ON_POLICY = dict(iterations=1, num_questions=4, prompts_per_iteration=4, samples_per_prompt=8,
                 max_new_tokens=12, epochs=1, minibatch_size=None, log_every=100)
# eps >> |gradient|: the Adam step is ~ lr * gradient, so the updated params compare the gradients;
# two micro-batches: one optimizer step (still on-policy) over accumulated gradients.
ON_POLICY_OPTIMIZER = dict(learning_rate=1e-2, eps=1.0, grad_accum_steps=2)


def _count_scoring(monkeypatch) -> list:
  """Counts the calls of the scoring forward (`scoring.score_in_chunks`)."""
  calls, real = [], scoring.score_in_chunks
  monkeypatch.setattr(scoring, "score_in_chunks",
                      lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
  return calls


def test_on_policy_auto_update_equals_forward_without_the_scoring_forward(
    tmp_path_factory, monkeypatch):
  # One on-policy iteration: "auto" takes the old log-probs as the stop-gradient of the loss's
  # own forward; "forward" scores the batch first. Same samples, loss and updated params; the
  # drift is logged either way (a train metric in auto).
  policy, task = rl_fixtures.sft_start(rl_fixtures.session_base(tmp_path_factory))
  runs = {}
  for mode in ("auto", "forward"):
    cfg = GRPOConfig(old_logprobs=mode, **ON_POLICY)
    assert cfg.old_logprobs_source == ("loss" if mode == "auto" else "forward")
    calls = _count_scoring(monkeypatch)
    final, history = run_grpo(policy, task, cfg, OptimizerConfig(**ON_POLICY_OPTIMIZER),
                              str(tmp_path_factory.mktemp(f"grpo_{mode}")), progress=False)
    runs[mode] = (final, history[0], len(calls))
  (auto, a, auto_calls), (forward, f, forward_calls) = runs["auto"], runs["forward"]
  assert (auto_calls, forward_calls) == (0, 1)
  assert a["reward_mean"] == f["reward_mean"] and f["grad_norm"] > 0
  for key in ("loss", "policy_loss", "entropy"):
    assert a[key] == pytest.approx(f[key], rel=1e-5, abs=1e-7), key
  assert a["grad_norm"] == pytest.approx(f["grad_norm"], rel=1e-4)
  assert a["ratio_mean"] == 1.0 and a["clip_frac"] == 0.0
  rl_fixtures.assert_same_update(auto, forward, policy, a, f, drift_bound=1e-4)


def test_auto_loss_ignores_the_sampler_logprobs_but_logs_their_drift():
  policy = rl_fixtures.tiny_policy()
  cfg = GRPOConfig(kl_coef=0.1)
  assert cfg.old_logprobs_source == "loss"
  tokens = np.tile(np.arange(10, 22, dtype=np.int32), (2, 1))
  mask = np.zeros((2, 11), bool)
  mask[:, 5:] = True
  logprobs = scoring.score_tokens(policy.config, policy.params, jnp.asarray(tokens),
                                  jnp.ones((2, 12), bool))["logprobs"]
  batch = {"tokens": tokens, "attention_mask": np.ones((2, 12), bool), "completion_mask": mask,
           "old_logprobs": np.asarray(logprobs), "ref_logprobs": np.asarray(logprobs) - 0.1,
           "advantages": np.array([1.0, -1.0], np.float32)}
  loss_fn = jax.jit(grpo.grpo_loss(policy.config, cfg))
  loss, metrics = loss_fn(policy.params, batch, None)
  assert float(metrics["logprob_drift_max"]) < 1e-5
  shifted = dict(batch, old_logprobs=np.where(mask, logprobs - 0.5, 7.0).astype(np.float32))
  loss2, metrics2 = loss_fn(policy.params, shifted, None)
  assert float(loss2) == float(loss)
  assert float(metrics2["logprob_drift_mean"]) == pytest.approx(0.5, abs=1e-5)
  assert float(metrics2["logprob_drift_max"]) == pytest.approx(0.5, abs=1e-5)


@pytest.mark.parametrize("options,forwards", [
    (dict(), 0),                                          # on-policy: no scoring forward
    (dict(kl_coef=0.1), 1),                               # ... but the reference's
    (dict(minibatch_size=4), 1),                          # two steps: the old log-probs'
    (dict(epochs=2, kl_coef=0.1), 2),                     # two epochs: both
    (dict(old_logprobs="forward"), 1),
    (dict(old_logprobs="rollout"), 1),                    # the drift check's
])
def test_prepare_batch_scores_only_what_the_update_needs(options, forwards, monkeypatch):
  policy = rl_fixtures.tiny_policy()
  cfg = GRPOConfig(prompts_per_iteration=2, samples_per_prompt=4, **options)
  pairs = [([1, 10 + r], [20 + r, 30, 2]) for r in range(8)]
  rollouts = rl_fixtures.make_rollouts(pairs)
  calls = _count_scoring(monkeypatch)
  batch, stats = grpo.prepare_batch(policy.config, policy.params, policy.params, rollouts,
                                    np.arange(8, dtype=np.float32), cfg)
  assert len(calls) == forwards
  assert ("logprob_drift_max" in stats) == (cfg.old_logprobs_source != "loss")
  sampler = rollouts.train_arrays()["old_logprobs"]
  same = np.array_equal(batch["old_logprobs"], sampler)
  assert same == (cfg.old_logprobs_source in ("loss", "rollout"))
  assert ("ref_logprobs" in batch) == (cfg.kl_coef > 0)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="samples_per_prompt=1"):
    GRPOConfig(samples_per_prompt=1)
  with pytest.raises(ValueError, match="normalize='z'"):
    GRPOConfig(normalize="z")
  with pytest.raises(ValueError, match="aggregation='sum'"):
    GRPOConfig(aggregation="sum")


def test_checkpoint_every_saves_less_and_a_resume_repeats_the_iterations_since(runs, tmp_path):
  """checkpoint_every=2 over 3 iterations saves after 2 and 3; a run that lost iteration 3's
  save resumes from 2, runs iteration 3 again and ends as the uninterrupted run."""
  run = dict(RUN, iterations=3, samples_per_prompt=4, minibatch_size=16, checkpoint_every=2)
  cfg, optimizer = GRPOConfig(**run), OptimizerConfig(**OPTIMIZER)
  directory = str(tmp_path / "grpo")
  final, history = run_grpo(runs["policy"], runs["task"], cfg, optimizer, directory,
                            progress=False)
  checkpoints = os.path.join(directory, "checkpoints")
  assert sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit()) == [2, 3]
  shutil.rmtree(os.path.join(checkpoints, "3"))  # killed before iteration 3's checkpoint
  resumed, resumed_history = run_grpo(runs["policy"], runs["task"], cfg, optimizer, directory,
                                      progress=False)
  strip = lambda hs: [{k: v for k, v in h.items() if not k.startswith("time_")} for h in hs]
  assert strip(resumed_history) == strip(history)
  jax.tree.map(np.testing.assert_array_equal, resumed.params, final.params)
