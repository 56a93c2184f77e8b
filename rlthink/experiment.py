"""The experiment runner behind `rlthink train`: build the model and task from gin, run the stages
(e.g. SFT then Expert Iteration), evaluate after each, and write results, tables and plots.

Workdir layout:
  config.gin        the operative gin config of the run
  sft/, ei/         each stage's checkpoints, metrics.jsonl and TensorBoard events
  eval/<stage>.json evaluation after each stage (reused when a resumed run gets there again)
  results.json, results.md, pass_at_k.png, <stage>_history.png
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys

import gin
import jax
import numpy as np

from rlthink import algorithms, distributed
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
  stages: algorithms run in order, each starting from the previous one's policy (names from
    `rlthink.algorithms.STAGES`: "sft", "ei", ...).
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


def build_policy():
  """The gin-bound `ModelSpec` built on the gin-bound `MeshSpec`'s mesh (its automatic shape is
  chosen for that model when `MeshSpec.shape` is None)."""
  spec = ModelSpec()
  return spec.build(MeshSpec().build(config=spec.config()))


def attach_tokenizer(policy, spec: str | None):
  """The policy with its tokenizer ("builtin", a local directory, or None: the model's own) and
  the tokenizer's special ids in its config."""
  from rlthink.models import tokenizer as tok
  if spec is None:
    if policy.tokenizer is None:
      raise ValueError("Experiment.tokenizer=None but the model directory has no tokenizer")
    tokenizer = policy.tokenizer
  else:
    tokenizer = tok.builtin_tokenizer() if spec == "builtin" else tok.load_tokenizer(spec)
  if len(tokenizer) > policy.config.vocab_size:
    raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                     f"{policy.config.vocab_size}")
  config = policy.config
  if config.pad_token_id is None and tokenizer.pad_token_id is not None:
    config = config.replace(pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id,
                            bos_token_id=tokenizer.bos_token_id)
  return policy.replace(tokenizer=tokenizer, config=config)


def load_stage_params(workdir: str, stage: str, policy):
  """The policy parameters of the latest checkpoint of `stage` in `workdir`, on the policy's
  devices and shardings. Raises naming the directory when there is none or it does not match."""
  from rlthink.train import Checkpointer
  directory = os.path.join(workdir, algorithms.check_stage(stage))
  if not os.path.isdir(os.path.join(directory, "checkpoints")):
    raise FileNotFoundError(f"no checkpoints of stage {stage!r} under {directory}")
  ckpt = Checkpointer(directory, policy.config)
  meta = ckpt.read_meta()
  if meta is None:
    raise FileNotFoundError(f"no checkpoints of stage {stage!r} under {directory}")
  ckpt.check_compatible(meta)
  tree = ckpt.restore_raw()
  # Drivers save a TrainState ({"params", ...}) or {"state": TrainState, ...}.
  node = tree.get("state", tree) if isinstance(tree, dict) else tree
  node = node.get("policy", node) if isinstance(node, dict) and "params" not in node else node
  params = node["params"]
  shardings = jax.tree.map(lambda x: x.sharding, policy.params)
  return jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), params, shardings)


def check_stage_configs(stages) -> None:
  """Builds the config dataclasses of each stage's driver module (e.g. `EIConfig()`) from the gin
  bindings, so a bad value fails before the first stage computes, not when its stage starts."""
  for stage in stages:
    module = sys.modules[algorithms.stage_runner(stage).__module__]
    for value in vars(module).values():
      if (isinstance(value, type) and dataclasses.is_dataclass(value)
          and value.__module__ == module.__name__ and _all_defaults(value)):
        value()


def _all_defaults(cls) -> bool:
  missing = dataclasses.MISSING
  return all(f.default is not missing or f.default_factory is not missing
             for f in dataclasses.fields(cls))


def check_stage_checkpoints(workdir: str, stages, model_config) -> None:
  """Raises `CheckpointMismatchError` when a stage's checkpoints in `workdir` belong to a model
  other than `model_config` (reads only; nothing is written)."""
  from rlthink.train import Checkpointer
  for stage in stages:
    directory = os.path.join(workdir, stage)
    if os.path.isdir(os.path.join(directory, "checkpoints")):
      ckpt = Checkpointer(directory, model_config)
      meta = ckpt.read_meta()
      if meta is not None:
        ckpt.check_compatible(meta)


def evaluate_run(workdir: str, stage: str | None = None) -> dict:
  """`rlthink eval`: evaluates the gin-named model (or a stage's final checkpoint of `workdir`)
  on the experiment's task; writes eval/<name>.json and .md under `workdir`."""
  from rlthink import tasks
  exp = Experiment()
  workdir = ensure_writable(workdir)
  task = tasks.get(exp.task, data_dir=exp.data_dir or os.path.join(workdir, "data"),
                   **dict(exp.task_options))
  policy = attach_tokenizer(build_policy(), exp.tokenizer)
  name = "model"
  if stage:
    policy = policy.replace(params=load_stage_params(workdir, stage, policy))
    name = f"{stage}_final"
  results = evaluate(policy, task, EvalConfig())
  report.write_json(os.path.join(workdir, "eval", f"{name}.json"), results)
  with open(os.path.join(workdir, "eval", f"{name}.md"), "w") as f:
    f.write(report.markdown_table([(name, results)]))
  return results


def run(workdir: str, experiment: Experiment | None = None, progress: bool = True) -> dict:
  """Runs (or resumes) the experiment in `workdir`; returns {stage: eval results}."""
  from rlthink import tasks  # TFDS and grain load only when an experiment runs

  exp = experiment or Experiment()
  check_stage_configs(exp.stages)
  workdir = ensure_writable(workdir)
  eval_cfg, opt_cfg = EvalConfig(), OptimizerConfig()
  policy = attach_tokenizer(build_policy(), exp.tokenizer)
  # Bad input (another model's checkpoints, an unknown task) stops the run before it writes
  # anything into the workdir, so a resumable run there keeps its config.gin.
  check_stage_checkpoints(workdir, exp.stages, policy.config)
  task = tasks.get(exp.task, data_dir=exp.data_dir or os.path.join(workdir, "data"),
                   **dict(exp.task_options))
  main = distributed.is_main_process()  # one process writes the shared workdir's reports
  if main:
    with open(os.path.join(workdir, "config.gin"), "w") as f:
      f.write(gin.config_str())

  # The stage drivers evaluate after each iteration (`headline`); the final model of a stage is
  # usually the last one they evaluated, so its full results are kept and reused below.
  last = {"params": None, "results": None}

  def evaluate_once(current) -> dict:
    if current.params is not last["params"]:
      last.update(params=current.params, results=evaluate(current, task, eval_cfg))
    return last["results"]

  def evaluated(name: str, current) -> dict:
    path = os.path.join(workdir, "eval", f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        return json.load(f)
    results = evaluate_once(current)
    if main:
      report.write_json(path, results)
    return results

  rows = []
  if exp.evaluate_initial:
    rows.append(("init", evaluated("init", policy)))
  histories = {}
  headline = lambda p: _headline(evaluate_once(p))
  for stage in exp.stages:
    runner = algorithms.stage_runner(stage)
    policy, histories[stage] = runner(policy, task, opt_cfg, workdir, evaluate_fn=headline,
                                      progress=progress)
    rows.append((stage, evaluated(stage, policy)))

  results = dict(rows)
  table = report.markdown_table(rows)
  if main:
    report.write_json(os.path.join(workdir, "results.json"), {"results": results,
                                                              "history": histories})
    with open(os.path.join(workdir, "results.md"), "w") as f:
      f.write(f"# {exp.task}: {' -> '.join(exp.stages)}\n\n{table}")
    report.plot_pass_curves(rows, os.path.join(workdir, "pass_at_k.png"))
    for stage, history in histories.items():
      if history:
        keys = sorted(k for k in history[0] if k == "solve_rate" or k.startswith("eval_"))
        report.plot_history(history, keys, os.path.join(workdir, f"{stage}_history.png"))
  print(table, flush=True)
  return results


def _headline(results: dict) -> dict:
  """maj@1 / maj@k / pass@k of the first split: the per-iteration curve."""
  split, metrics = next(iter(results.items()))
  return {k: v for k, v in metrics.items() if k.startswith(("maj@", "pass@"))}
