"""The experiment runner behind `rlthink train`: build the model and task from gin, run the stages
(e.g. SFT then Expert Iteration), evaluate after each, and write results, tables and plots.

Workdir layout:
  config.gin        the operative gin config of the run
  sft/, ei/         each stage's checkpoints, metrics.jsonl and TensorBoard events
  eval/<stage>.json evaluation after each stage (reused when a resumed run gets there again)
  results.json, results.md, pass_at_k.png, ei_history.png
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import gin

from rlthink import algorithms
from rlthink.evaluation import EvalConfig, evaluate
from rlthink.evaluation import report
from rlthink.gin_utils import MeshSpec, ModelSpec
from rlthink.train import OptimizerConfig
from rlthink.train.checkpoint import ensure_writable

_log = logging.getLogger(__name__)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Experiment:
  """What to run.

  task / task_options: `rlthink.tasks.get(task, **task_options)`.
  stages: algorithms run in order, each starting from the previous one's policy: "sft", "ei".
  tokenizer: "builtin" (the character-level tokenizer), a local tokenizer directory, or None to
    use the one saved with a Hugging Face model.
  evaluate_initial: also evaluate the model before the first stage.
  data_dir: where task datasets are built (default: <workdir>/data).
  """

  task: str = "arithmetic"
  task_options: dict = dataclasses.field(default_factory=lambda: {"size": "tiny"})
  stages: tuple[str, ...] = ("sft", "ei")
  tokenizer: str | None = "builtin"
  evaluate_initial: bool = False
  data_dir: str | None = None

  def __post_init__(self):
    object.__setattr__(self, "stages", tuple(self.stages))
    if not self.stages:
      raise ValueError("Experiment.stages is empty")
    for stage in self.stages:
      algorithms.check_stage(stage)


def _tokenizer(spec: str | None, policy):
  from rlthink.models import tokenizer as tok
  if spec is None:
    if policy.tokenizer is None:
      raise ValueError("Experiment.tokenizer=None but the model directory has no tokenizer")
    return policy.tokenizer
  return tok.builtin_tokenizer() if spec == "builtin" else tok.load_tokenizer(spec)


def run(workdir: str, experiment: Experiment | None = None, progress: bool = True) -> dict:
  """Runs (or resumes) the experiment in `workdir`; returns {stage: eval results}."""
  from rlthink import tasks  # TFDS and grain load only when an experiment runs
  from rlthink.algorithms.expert_iteration import EIConfig, run_expert_iteration
  from rlthink.algorithms.sft import SFTConfig, run_sft

  exp = experiment or Experiment()
  workdir = ensure_writable(workdir)
  with open(os.path.join(workdir, "config.gin"), "w") as f:
    f.write(gin.config_str())
  task = tasks.get(exp.task, data_dir=exp.data_dir or os.path.join(workdir, "data"),
                   **dict(exp.task_options))
  eval_cfg, opt_cfg = EvalConfig(), OptimizerConfig()
  mesh = MeshSpec().build()
  policy = ModelSpec().build(mesh)
  tokenizer = _tokenizer(exp.tokenizer, policy)
  if len(tokenizer) > policy.config.vocab_size:
    raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                     f"{policy.config.vocab_size}")
  policy = policy.replace(tokenizer=tokenizer)
  if policy.config.pad_token_id is None and tokenizer.pad_token_id is not None:
    policy = policy.replace(config=policy.config.replace(
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id))

  def evaluated(name: str, current) -> dict:
    path = os.path.join(workdir, "eval", f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        return json.load(f)
    results = evaluate(current, task, eval_cfg)
    report.write_json(path, results)
    return results

  rows = []
  if exp.evaluate_initial:
    rows.append(("init", evaluated("init", policy)))
  history = []
  for stage in exp.stages:
    if stage == "sft":
      policy = run_sft(policy, task, SFTConfig(), opt_cfg, workdir, progress=progress)
    elif stage == "ei":
      on_iteration = lambda i, p: {f"eval_{k}": v for k, v in _headline(evaluate(
          p, task, eval_cfg)).items()}
      policy, history = run_expert_iteration(policy, task, EIConfig(), opt_cfg, workdir,
                                             on_iteration=on_iteration, progress=progress)
    rows.append((stage, evaluated(stage, policy)))

  results = dict(rows)
  report.write_json(os.path.join(workdir, "results.json"), {"results": results,
                                                            "ei_history": history})
  table = report.markdown_table(rows)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(f"# {exp.task}: {' -> '.join(exp.stages)}\n\n{table}")
  report.plot_pass_curves(rows, os.path.join(workdir, "pass_at_k.png"))
  if history:
    keys = ["solve_rate"] + sorted(k for k in history[0] if k.startswith("eval_"))
    report.plot_history(history, keys, os.path.join(workdir, "ei_history.png"))
  print(table, flush=True)
  return results


def _headline(results: dict) -> dict:
  """maj@1 / maj@k / pass@k of the first split: the per-iteration curve."""
  split, metrics = next(iter(results.items()))
  return {k: v for k, v in metrics.items() if k.startswith(("maj@", "pass@"))}
