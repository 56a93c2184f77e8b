"""Outcome and process reward models: labels, the loss against numpy, training from the SFT start
(better than chance on held-out questions), exact resume after SIGKILL, rerank@k against a brute
force recomputation, and START using them (reward-model state resumes exactly)."""

import os
import shutil
import sys
import threading

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlthink
from rlthink import gin_utils, tasks
from rlthink.algorithms.reward_model import RewardModelConfig, train_reward_model
from rlthink.algorithms.start import STARTConfig, run_start
from rlthink.evaluation.estimators import rerank_at_k
from rlthink.evaluation.rerank import RerankConfig, evaluate_rerank
from rlthink.models import tokenizer as tokenizers
from rlthink.rewards import reward_model as rm_lib
from rlthink.rewards.reward_model import load_reward_model
from rlthink.rollout import rollout_examples
from rlthink.sampling.rollouts import ScoredRollouts
from rlthink.tasks.pipeline import encode_prompt
from rlthink.train import OptimizerConfig

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "algorithms"))
import rl_fixtures  # noqa: E402  (the shared SFT start of the RL tests)

ORM = dict(kind="outcome", num_questions=32, samples_per_question=4, max_new_tokens=12,
           holdout_fraction=0.25, epochs=12.0, max_steps=40, batch_size=32, max_length=96,
           log_every=100, checkpoint_every=10)
PRM = dict(ORM, kind="process")
OPTIMIZER = dict(learning_rate=1e-3)
KILL_AFTER = 3  # a checkpoint in the middle of the ORM's training


def test_loss_is_binary_cross_entropy_of_the_target_logits():
  policy = rlthink.init_policy("tiny", seed=0, num_layers=1, vocab_size=128, max_seq_len=64)
  rm = rm_lib.init_reward_model(policy, "outcome")
  assert "lm_head" not in rm.params and float(rm.params["reward_bias"]) == 0.0
  params = dict(rm.params, reward_head=jax.random.normal(jax.random.key(1), (128,)) * 0.5)
  rm = rm.__class__(rm.config, params, "outcome")
  rng = np.random.default_rng(0)
  rows = [{"prompt": [1] + list(rng.integers(8, 100, 5)), "completion": list(rng.integers(8, 100, n)),
           "targets": [[j, float(rng.random())] for j in range(0, n, 2)]} for n in (3, 7, 4)]
  batch = rm_lib.make_batch(rows, 16, 0)
  assert batch["target_mask"].sum() == sum(len(r["targets"]) for r in rows)
  loss, metrics = rm_lib.reward_model_loss(rm.config)(rm.params, jax.tree.map(jnp.asarray, batch),
                                                      None)
  z = rm_lib.reward_logits(rm, batch["tokens"], batch["attention_mask"]).astype(np.float64)
  y, m = batch["labels"], batch["target_mask"]
  p = 1 / (1 + np.exp(-z))
  reference = -(y * np.log(p) + (1 - y) * np.log(1 - p))[m].mean()
  assert float(loss) == pytest.approx(reference, rel=1e-5)
  assert float(metrics["accuracy"]) == pytest.approx(np.mean((z[m] > 0) == (y[m] >= 0.5)))


def test_rows_label_outcomes_and_steps():
  tok = tokenizers.builtin_tokenizer()
  task = tasks.get("arithmetic", size="tiny", seed=0)
  ex = [e for _, e in zip(range(10), task.generate("train")) if len(e["steps"]) == 2][0]
  first, second = ex["steps"]
  bad = first.rsplit("=", 1)[0] + "=99"
  texts = [task.reference(ex), f"<think>{first}\n{bad}</think>{ex['answer']}",
           f"<think>{bad}\n{second}</think>1"]
  prompt = encode_prompt(task, ex, tok).tolist()
  completions = [tok.encode(t, add_special_tokens=False) + [2] for t in texts]
  ro = rl_fixtures.make_rollouts([(prompt, c) for c in completions])
  scored = ScoredRollouts([ex], 3, texts, np.asarray([task.verify(t, ex) for t in texts],
                                                     np.float32), ro)
  outcome = rm_lib.outcome_rows(scored)
  assert [r["targets"] for r in outcome] == [[[len(c) - 1, float(task.verify(t, ex))]]
                                             for c, t in zip(completions, texts)]
  assert outcome[1]["targets"][0][1] == 1.0  # right answer after a wrong step: the ORM says 1
  assert len(rm_lib.outcome_rows(scored, "all")[0]["targets"]) == len(completions[0])
  process = rm_lib.process_rows(task, scored, tok)
  assert [[label for _, label in r["targets"]] for r in process] == [[1, 1], [1, 0], [0, 0]]
  for row, text in zip(process, texts):  # each target is the token that completes its step
    for (j, _), step in zip(row["targets"], text.split("</think>")[0][7:].split("\n")):
      assert tok.decode(row["completion"][:j + 1]).endswith(step)
  refs = rm_lib.reference_rows(task, [ex], tok, "process")
  assert refs[0]["completion"] == completions[0] and [l for _, l in refs[0]["targets"]] == [1, 1]


def test_binary_auc_counts_ordered_pairs():
  assert rm_lib.binary_auc([0.9, 0.8, 0.1, 0.8], [1, 1, 0, 0]) == pytest.approx((2 + 1.5) / 4)
  assert rm_lib.binary_auc([0.1, 0.2], [1, 1]) is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """ORM and PRM trained from the SFT start; the ORM's run also killed (SIGKILL) mid-training in
  a subprocess and resumed here."""
  base = rl_fixtures.session_base(tmp_path_factory)
  policy, task = rl_fixtures.sft_start(base)
  root = tmp_path_factory.mktemp("reward_models")
  full_dir, killed_dir = str(root / "full"), str(root / "killed" / "orm")
  proc = rl_fixtures.start_driver(rl_fixtures.driver_script(
      base, killed_dir, "rlthink.algorithms.reward_model", "train_reward_model",
      "RewardModelConfig", ORM, OPTIMIZER))
  watcher = threading.Thread(target=rl_fixtures.kill_after_checkpoint, args=(
      proc, os.path.join(killed_dir, "checkpoints", str(KILL_AFTER))))
  watcher.start()
  try:
    orm, orm_history = train_reward_model(policy, task, RewardModelConfig(**ORM),
                                          OptimizerConfig(**OPTIMIZER),
                                          os.path.join(full_dir, "orm"), progress=False)
  finally:
    watcher.join()
  prm, prm_history = train_reward_model(policy, task, RewardModelConfig(**PRM),
                                        OptimizerConfig(**OPTIMIZER),
                                        os.path.join(full_dir, "prm"), progress=False)
  stderr = proc.stderr.read()
  proc.stderr.close()
  return dict(policy=policy, task=task, orm=orm, prm=prm, orm_history=orm_history,
              prm_history=prm_history, full_dir=full_dir, killed_dir=killed_dir,
              returncode=proc.returncode, stderr=stderr)


def test_reward_models_learn_their_training_rows(trained):
  """Both models fit the labels of their training rows far better than the base rate does.
  (At this size they do not generalize to held-out questions - that needs arithmetic the tiny
  policy lacks - so the held-out metrics are only checked to be reported.)"""
  for name in ("orm", "prm"):
    record = trained[f"{name}_history"][-1]
    assert record["train_rows"] == 96 and record["holdout_rows"] == 32  # 24 / 8 questions x 4
    assert record["samples"] == 128
    p = record["fit_positive_rate"]
    base_rate_loss = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert record["fit_loss"] < 0.8 * base_rate_loss, (name, record)
    assert record["fit_auc"] > 0.8, (name, record)
    assert 0 <= record["holdout_auc"] <= 1 and record["holdout_targets"] >= 8


def test_reward_model_resume_after_sigkill_is_exact(trained):
  assert trained["returncode"] == -9, trained["stderr"][-3000:]
  killed_dir = trained["killed_dir"]
  _, meta = rl_fixtures.saved_tree(killed_dir, max(
      int(d) for d in os.listdir(os.path.join(killed_dir, "checkpoints")) if d.isdigit()))
  assert meta["phase"] == "train" and 0 < meta["position"] < meta["steps"]
  model, history = train_reward_model(trained["policy"], trained["task"],
                                      RewardModelConfig(**ORM), OptimizerConfig(**OPTIMIZER),
                                      killed_dir, progress=False)
  assert history == trained["orm_history"]
  jax.tree.map(np.testing.assert_array_equal, model.params, trained["orm"].params)
  loaded = load_reward_model(killed_dir, "outcome", trained["policy"])
  jax.tree.map(np.testing.assert_array_equal, loaded.params, trained["orm"].params)


def test_rerank_matches_a_brute_force_pick(trained):
  policy, task, orm = trained["policy"], trained["task"], trained["orm"]
  cfg = RerankConfig(k=4, split="test", max_examples=16, max_new_tokens=12, seed=5)
  results = evaluate_rerank(policy, task, orm, cfg)["test"]
  examples = [task.examples("test")[i] for i in range(16)]
  scored = rollout_examples(policy, task, examples, num_samples=4, max_new_tokens=12, seed=5)
  scores = rm_lib.score_rollouts(orm, scored.rollouts)
  picks = [np.argmax(s) for s in scored.per_example(scores)]  # brute force: best of each group
  correct = scored.per_example(scored.rewards >= 1)
  assert results["rerank@4"] == pytest.approx(np.mean([c[p] for c, p in zip(correct, picks)]))
  assert results["rerank_curve"]["1"] == pytest.approx(np.mean([c[0] for c in correct]))
  assert results["sample_accuracy"] == pytest.approx(np.mean(scored.rewards >= 1))
  assert min(results["maj@4"], results["rerank@4"]) <= results["pass@4"] + 1e-9
  assert rerank_at_k([0.1, 0.9], [False, True], 2) == 1.0


def test_start_with_learned_rewards_resumes_exactly(trained, tmp_path):
  """START with the ORM as reward and PRM dense rewards: the frozen reward models are part of the
  checkpoint, and a run resumed from an earlier checkpoint ends exactly where the full one does."""
  policy, task = trained["policy"], trained["task"]
  cfg = STARTConfig(schedule=(("thinking", 1), ("response", 1)), num_questions=4,
                    prompts_per_iteration=4, samples_per_prompt=4, max_new_tokens=12,
                    minibatch_size=16, reward_source="orm", dense_reward="prm", dense_coef=0.3,
                    log_every=100)
  opt = OptimizerConfig(learning_rate=5e-4)
  models = {"orm": trained["orm"], "prm": trained["prm"]}
  with pytest.raises(ValueError, match="reward_source='orm' needs the outcome reward model"):
    run_start(policy, task, cfg, opt, str(tmp_path / "none"), progress=False)
  final, history = run_start(policy, task, cfg, opt, str(tmp_path), reward_models=models,
                             progress=False)
  assert all(h["train_reward_mean"] != h["reward_mean"] for h in history)  # ORM probabilities
  assert all(h["dense_reward_mean"] != 0 for h in history)
  tree, _ = rl_fixtures.saved_tree(str(tmp_path), 2)
  assert set(tree) == {"state", "orm", "prm"}
  jax.tree.map(np.testing.assert_array_equal, tree["orm"], trained["orm"].params)
  jax.tree.map(np.testing.assert_array_equal, tree["prm"], trained["prm"].params)
  shutil.rmtree(os.path.join(tmp_path, "checkpoints", "2"))
  # resuming needs no reward models: the checkpoint holds them
  resumed, again = run_start(policy, task, cfg, opt, str(tmp_path), progress=False)
  strip = lambda hs: [{k: v for k, v in h.items() if not k.startswith("time_")} for h in hs]
  assert strip(again) == strip(history)
  jax.tree.map(np.testing.assert_array_equal, resumed.params, final.params)


def test_loading_a_missing_or_unfinished_model_names_the_directory(trained, tmp_path):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}/prm"):
    load_reward_model(str(tmp_path / "prm"), "process", trained["policy"])
  half = str(tmp_path / "half")  # the finished run without its last checkpoint
  shutil.copytree(os.path.join(trained["full_dir"], "orm"), half)
  last = max(int(d) for d in os.listdir(os.path.join(half, "checkpoints")) if d.isdigit())
  shutil.rmtree(os.path.join(half, "checkpoints", str(last)))
  with pytest.raises(FileNotFoundError, match="has not finished training"):
    load_reward_model(half, "outcome", trained["policy"])


@pytest.mark.parametrize("path", ["algorithms/orm.gin", "algorithms/prm.gin",
                                  "experiments/orm_tiny.gin"])
def test_gin_files_bind_valid_scoped_configs(path):
  try:
    gin_utils.parse([path], [])
    for scope in ("orm", "prm"):
      with gin.config_scope(scope):
        cfg = gin_utils.configured(RewardModelConfig)
      assert cfg.max_length >= 64 and cfg.num_questions >= 1
    assert gin_utils.configured(RerankConfig).k >= 1
    if "tiny" in path:
      with gin.config_scope("orm"):
        # the experiment's, not orm.gin's
        assert gin_utils.configured(RewardModelConfig).learning_rate == 1e-3
      assert gin_utils.configured(STARTConfig).reward_source == "orm"
  finally:
    gin.clear_config(clear_constants=True)


def test_an_orm_of_an_rcrl_policy_samples_with_its_correct_label(tmp_path, monkeypatch):
  """condition='rcrl': the reward model's training samples are drawn from prompts that carry
  RCRL's '<correct>' label, as the RCRL policy it reranks is evaluated."""
  from rlthink.algorithms import reward_model as stage
  prompts = []

  class Sampled(Exception):
    """Stops the stage once the prompts it samples from are recorded."""

  def sampling(policy, task, questions, **kwargs):
    prompts.extend(task.prompt(q) for q in questions)
    raise Sampled

  monkeypatch.setattr(stage, "rollout_examples", sampling)
  tok = tokenizers.builtin_tokenizer()
  policy = rlthink.init_policy("tiny", seed=0, num_layers=1, tokenizer=tok,
                               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                               bos_token_id=tok.bos_token_id)
  task = tasks.get("arithmetic", size="tiny", seed=0, num_train=8, num_test=4,
                   data_dir=str(tmp_path / "data"))
  for condition, label in ((None, ""), ("rcrl", "<correct>")):
    prompts.clear()
    with pytest.raises(Sampled):
      train_reward_model(policy, task, RewardModelConfig(num_questions=8, condition=condition),
                         OptimizerConfig(), str(tmp_path / f"orm_{condition}"), progress=False)
    assert prompts and set(prompts) <= {label + task.prompt(q) for q in task.examples("train")}
  with pytest.raises(ValueError, match="RewardModelConfig.condition='correct' is not one of"):
    RewardModelConfig(condition="correct")
