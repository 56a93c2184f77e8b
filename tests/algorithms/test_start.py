"""START: thinking/response spans against the SFT masks, zero gradient through masked spans, a
short run from the SFT start that raises the reward, and exact resume after SIGKILL."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlthink
from rlthink import gin_utils, tasks
from rlthink.algorithms import scoring, start
from rlthink.algorithms.start import STARTConfig, run_start
from rlthink.models import tokenizer as tokenizers
from rlthink.tasks.pipeline import encode_sft
from rlthink.train import OptimizerConfig

import rl_fixtures

RUN = dict(schedule=(("thinking", 4), ("response", 2)), num_questions=4, prompts_per_iteration=4,
           samples_per_prompt=16, max_new_tokens=12, epochs=1, minibatch_size=32, kl_coef=0.02,
           log_every=100)
OPTIMIZER = dict(learning_rate=5e-4, warmup_steps=4)  # no sign-like full-size first Adam steps
KILL_AFTER = 3


def sft_rollouts(task, examples, tok):
  """Rollouts of the reference completions, and the SFT masks of their completion tokens."""
  seqs = [encode_sft(task, ex, tok) for ex in examples]
  ro = rl_fixtures.make_rollouts([(s["tokens"][~s["loss_mask"]], s["tokens"][s["loss_mask"]])
                                  for s in seqs])
  return ro, [s["thinking_mask"][s["loss_mask"]] for s in seqs], [
      s["answer_mask"][s["loss_mask"]] for s in seqs]


@pytest.fixture(scope="module")
def tok():
  return tokenizers.builtin_tokenizer()


@pytest.mark.parametrize("family", ["arithmetic", "general_qa"])
@pytest.mark.parametrize("tokenizer_kind", ["builtin", "bpe_without_markers"])
def test_thinking_spans_match_the_sft_masks(family, tokenizer_kind, tok):
  task = tasks.get(family, size="tiny", seed=0)
  examples = [ex for _, ex in zip(range(5), task.generate("train"))]
  if tokenizer_kind == "builtin":
    tokenizer = tok
  else:  # "</think>" is several BPE pieces: the span is found from the decoded text
    tokenizer = tokenizers.train_bpe_tokenizer(
        [task.prompt(ex) + task.reference(ex) for ex in examples] * 4, vocab_size=320,
        special_tokens=tokenizers.SPECIAL_TOKENS)
    assert len(tokenizer.encode("</think>", add_special_tokens=False)) > 1
  ro, thinking_masks, answer_masks = sft_rollouts(task, examples, tokenizer)
  thinking, closed = start.thinking_spans(tokenizer, ro, task.format)
  assert closed.all()
  for row in range(len(examples)):
    n = int(ro.lengths[row])
    np.testing.assert_array_equal(thinking[row, :n], thinking_masks[row])
    response = ro.completion_mask[row] & ~thinking[row]
    np.testing.assert_array_equal(response[:n], answer_masks[row])
  train = start.span_train_mask(ro, thinking, "thinking")
  p = ro.prompt_tokens.shape[1]
  np.testing.assert_array_equal(train[:, p - 1:], thinking & ro.completion_mask)
  assert not train[:, :p - 1].any()


def test_unclosed_and_reopened_thinking(tok):
  fmt = tasks.get("arithmetic", size="tiny").format
  texts = ["<think>3+4=7", "<think>a</think>b</think>7", "", "<think>1</think>1<think>2"]
  pairs = [([1, 10], tok.encode(t, add_special_tokens=False) + [tok.eos_token_id]) for t in texts]
  ro = rl_fixtures.make_rollouts(pairs)
  thinking, closed = start.thinking_spans(tok, ro, fmt)
  np.testing.assert_array_equal(closed, [False, True, False, True])
  assert thinking[0, :int(ro.lengths[0])].all()  # never closed: all thinking, eos included
  ids = ro.completion(1)
  last_close = len(ids) - 3  # ..."</think>", "7", eos: the LAST marker ends the thinking
  assert thinking[1, :last_close + 1].all() and not thinking[1, last_close + 1:].any()
  assert thinking[2, 0] and thinking[2].sum() == 1  # eos only: never closed, so thinking


def _loss_batch(policy, tok, span, seed):
  task = tasks.get("arithmetic", size="tiny", seed=0)
  examples = [ex for _, ex in zip(range(6), task.generate("train"))]
  ro, _, _ = sft_rollouts(task, examples, tok)
  thinking, _ = start.thinking_spans(tok, ro, task.format)
  batch = ro.train_arrays()
  rng = np.random.default_rng(seed)
  logprobs = scoring.score_tokens(policy.config, policy.params, jnp.asarray(batch["tokens"]),
                                  jnp.asarray(batch["attention_mask"]))["logprobs"]
  shape = batch["completion_mask"].shape
  batch.update(train_mask=start.span_train_mask(ro, thinking, span),
               old_logprobs=np.asarray(logprobs) + rng.normal(0, 0.1, shape).astype(np.float32),
               ref_logprobs=np.asarray(logprobs) + rng.normal(0, 0.3, shape).astype(np.float32),
               advantages=rng.normal(size=shape).astype(np.float32))
  del batch["completion_mask"]
  return batch, ro, thinking


@pytest.fixture(scope="module")
def loss_grad():
  """(policy, jitted gradient of the START loss): one compile for both span tests."""
  policy = rlthink.init_policy("tiny", seed=1, num_layers=1, vocab_size=128, max_seq_len=128)
  cfg = STARTConfig(kl_coef=0.1, clip_eps=0.2)
  return policy, jax.jit(jax.grad(lambda p, b: start.start_loss(policy.config, cfg)(p, b, None)[0]))


@pytest.mark.parametrize("span", ["thinking", "response"])
def test_masked_spans_contribute_zero_gradient(span, tok, loss_grad):
  """Stage one (thinking): anything in the response tokens - their ids, advantages, old and
  reference log-probs - leaves the gradient bit-for-bit unchanged; and the other way round for
  the response stage (where the thinking tokens are still the context)."""
  policy, grad_fn = loss_grad
  batch, ro, thinking = _loss_batch(policy, tok, span, seed=0)
  masked = ~batch["train_mask"] & np.concatenate(
      [np.zeros((ro.num_rows, ro.prompt_tokens.shape[1] - 1), bool), ro.completion_mask], 1)
  assert masked.any() and batch["train_mask"].any()
  changed = dict(batch)
  rng = np.random.default_rng(1)
  for key in ("advantages", "old_logprobs", "ref_logprobs"):
    changed[key] = np.where(masked, rng.normal(0, 50, masked.shape), batch[key]).astype(np.float32)
  if span == "thinking":  # the response tokens themselves: no earlier position sees them
    p = ro.prompt_tokens.shape[1]
    response = ro.completion_mask & ~thinking
    tokens = changed["tokens"].copy()
    tokens[:, p:][response] = rng.integers(8, 100, int(response.sum()))
    changed["tokens"] = tokens
    assert (tokens != batch["tokens"]).any()
  base = grad_fn(policy.params, batch)
  jax.tree.map(np.testing.assert_array_equal, base, grad_fn(policy.params, changed))
  # The trained span does move the gradient (the check above is not vacuous).
  moved = dict(batch, advantages=np.where(batch["train_mask"], -batch["advantages"],
                                          batch["advantages"]))
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), base,
                      grad_fn(policy.params, moved))
  assert max(jax.tree.leaves(diff)) > 1e-4


def test_token_loss_gradient_is_zero_outside_the_span():
  rng = np.random.default_rng(0)
  shape = (3, 7)
  mask = rng.random(shape) < 0.5
  batch = {"train_mask": mask, "old_logprobs": np.where(mask, -1.0, -1e4).astype(np.float32),
           "advantages": np.where(mask, rng.normal(size=shape), 1e30).astype(np.float32),
           "ref_logprobs": np.where(mask, -1.2, 1e4).astype(np.float32)}
  cfg = STARTConfig(kl_coef=0.5)
  logprobs = jnp.asarray(np.where(mask, -0.9, -3e3), jnp.float32)
  loss, _ = start.start_token_loss(logprobs, batch, cfg)
  grad = np.asarray(jax.grad(lambda lp: start.start_token_loss(lp, batch, cfg)[0])(logprobs))
  assert np.isfinite(float(loss)) and np.isfinite(grad).all()
  assert (grad[~mask] == 0).all() and (grad[mask] != 0).all()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """An uninterrupted run, and (concurrently, in a subprocess) the same run killed after
  iteration KILL_AFTER's checkpoint, then resumed here."""
  return rl_fixtures.full_and_killed_runs(tmp_path_factory, "start", "run_start", "STARTConfig",
                                          RUN, OPTIMIZER, KILL_AFTER)


def test_start_raises_the_reward_from_sft(runs):
  history = runs["history"]
  assert [h["span"] for h in history] == ["thinking"] * 4 + ["response"] * 2
  # The per-iteration rewards come from 64 samples each (noisy); compare the SFT start and the
  # final policy on the same 4 training questions with 256 samples each.
  from rlthink.rollout import rollout_examples
  examples = runs["task"].examples("train")[:RUN["num_questions"]]
  measure = lambda policy: float(np.mean(rollout_examples(
      policy, runs["task"], examples, num_samples=64, max_new_tokens=RUN["max_new_tokens"],
      seed=123).rewards))
  before, after = measure(runs["policy"]), measure(runs["final"])
  assert after > before + 0.1, (before, after, [h["reward_mean"] for h in history])
  for h in history:
    assert h["train_reward_mean"] == h["reward_mean"]  # the verifier is the reward source
    assert 0 <= h["thinking_accuracy"] <= 1 and 0 < h["closed_rate"] <= 1
    assert h["logprob_drift_max"] < 1e-3
  # Thinking iterations train more tokens per row than response iterations (answer + eos).
  assert history[0]["span_tokens_per_row"] > history[-1]["span_tokens_per_row"]


def test_resume_after_sigkill_is_exact(runs):
  assert runs["returncode"] == -9, runs["stderr"][-3000:]
  killed_dir = runs["killed_dir"]
  steps = sorted(int(d) for d in os.listdir(os.path.join(killed_dir, "checkpoints"))
                 if d.isdigit())
  total = sum(n for _, n in RUN["schedule"])
  assert KILL_AFTER <= steps[-1] < total, steps
  final, history = run_start(runs["policy"], runs["task"], STARTConfig(**RUN),
                             OptimizerConfig(**OPTIMIZER), killed_dir, progress=False)
  strip = lambda hs: [{k: v for k, v in h.items() if not k.startswith("time_")} for h in hs]
  assert strip(history) == strip(runs["history"])
  jax.tree.map(np.testing.assert_array_equal, final.params, runs["final"].params)
  full, _ = rl_fixtures.saved_tree(runs["full_dir"], total)
  resumed, _ = rl_fixtures.saved_tree(killed_dir, total)
  assert set(full) == {"state", "reference"}
  jax.tree.map(np.testing.assert_array_equal, full, resumed)


def test_on_policy_auto_update_equals_forward_without_the_scoring_forward(
    tmp_path_factory, monkeypatch):
  # One on-policy iteration (one optimizer step): "auto" takes the old log-probs as the
  # stop-gradient of the loss's own forward, "forward" scores the batch first. Same loss and
  # updated params; the drift is logged either way (a train metric in auto).
  policy, task = rl_fixtures.sft_start(rl_fixtures.session_base(tmp_path_factory))
  run = dict(RUN, schedule=(("thinking", 1),), samples_per_prompt=8, minibatch_size=None)
  calls, real = [], scoring.score_in_chunks
  monkeypatch.setattr(scoring, "score_in_chunks",
                      lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
  out = {}
  for mode in ("auto", "forward"):
    cfg = STARTConfig(old_logprobs=mode, **run)
    assert cfg.old_logprobs_in_loss == (mode == "auto")
    calls.clear()
    final, history = run_start(policy, task, cfg,
                               OptimizerConfig(learning_rate=1e-2, eps=1.0),  # step ~ lr * grad
                               str(tmp_path_factory.mktemp(f"start_{mode}")), progress=False)
    out[mode] = (final, history[0], len(calls))
  (auto, a, auto_calls), (forward, f, forward_calls) = out["auto"], out["forward"]
  assert (auto_calls, forward_calls) == (1, 2)  # the reference's forward (kl_coef > 0) stays
  assert f["grad_norm"] > 0
  for key in ("loss", "policy_loss", "kl", "grad_norm"):
    assert a[key] == pytest.approx(f[key], rel=1e-5, abs=1e-7), key
  assert a["ratio_mean"] == 1.0
  rl_fixtures.assert_same_update(auto, forward, policy, a, f, drift_bound=1e-3)


def test_config_errors_name_the_option():
  with pytest.raises(ValueError, match="schedule span"):
    STARTConfig(schedule=(("answer", 2),))
  with pytest.raises(ValueError, match="'response' has 0 iterations"):
    STARTConfig(schedule=(("thinking", 1), ("response", 0)))
  with pytest.raises(ValueError, match="reward_source"):
    STARTConfig(reward_source="human")
  with pytest.raises(ValueError, match="dense_reward"):
    STARTConfig(dense_reward="always")
  with pytest.raises(TypeError, match="iterations"):  # derived from the schedule
    STARTConfig(iterations=3)
  with pytest.raises(ValueError, match="old_logprobs='rollout'"):
    STARTConfig(old_logprobs="rollout")
  cfg = STARTConfig(schedule=[["thinking", 2], ["both", 1]])
  assert cfg.iterations == 3 and [cfg.span_at(i) for i in range(3)] == [
      "thinking", "thinking", "both"]


@pytest.mark.parametrize("path", ["algorithms/start.gin", "experiments/start_tiny.gin"])
def test_gin_files_bind_a_valid_config(path):
  import gin
  try:
    gin_utils.parse([path], [])
    cfg = gin_utils.configured(STARTConfig)  # runs the config's checks on the bound values
    assert cfg.schedule[0][0] == "thinking" and cfg.iterations >= 2
  finally:
    gin.clear_config(clear_constants=True)
