"""The experiment runner behind `rlthink train`: build the model and every stage's task and config
from gin, run the stages parents first (each child starts from its parent's final parameters),
evaluate each, and write results, tables and plots.

Workdir layout:
  config.gin                the gin config of the run (written atomically at every start)
  <stage>/                  each stage's checkpoints, metrics.jsonl, TensorBoard events and
                            stage.json (its settings; "done" once finished, with its history; a
                            LoRA stage's "lora": what its adapters apply to, `lora_start`)
  eval/<stage>.json         the evaluation of the stage's final model (reused while the stage and
                            EvalConfig stay the same), eval/<stage>.predictions.jsonl
  results.json, results.md, pass_at_k.png, <stage>_history.png
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import gin

from rlthink import algorithms, distributed, files, gin_utils, locks
from rlthink.evaluation import EvalConfig, evaluate, evaluate_with_predictions, report
from rlthink.evaluation import cross_generation as cg
from rlthink.evaluation.evaluate import for_iterations, should_evaluate
from rlthink.evaluation.predictions import write_predictions
from rlthink.experiment import fingerprint, spec as spec_lib
from rlthink.experiment.mixture import materialize
from rlthink.models.tokenizer import experiment_tokenizer
from rlthink.rewards import sources
from rlthink.tasks.pipeline import check_truncation, truncation_stats
from rlthink.experiment.params import (attach_tokenizer, build_policy, check_stage_checkpoints,
                                       final_checkpoint_intact, load_stage_params, lora_start,
                                       tokenizer_spec)
from rlthink.train import OptimizerConfig
from rlthink.train import metrics
from rlthink.train.checkpoint import ensure_writable

_log = logging.getLogger(__name__)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Experiment:
  """What to run (see `rlthink.experiment.spec` for the stage forms).

  name: the experiment's name in reports (default: the task's).
  task / task_options: the default task of every stage (`rlthink.tasks.get(task, **options)`).
  stages: algorithm names (a chain) or stage dicts (a graph of named stages).
  tokenizer: "auto" (default: the model directory's own tokenizer when `ModelSpec.hf_path` names
    one, else "builtin"), "builtin" (the character-level tokenizer), "bpe" (a byte-level BPE
    tokenizer of `tokenizer_vocab_size` tokens trained on the stages' training texts, saved in
    <workdir>/tokenizer and reused on resume), a local tokenizer directory, or None to use the one
    saved with a Hugging Face model. A tokenizer that does not fit the model (more tokens than
    its vocab_size, a special id out of range) stops the run.
  max_truncated_fraction: an SFT stage whose data would have more than this share of sequences
    cut at its max_length stops the run before any training, with the numbers (fewer are
    counted and logged).
  seed: added to the model's init seed and to every stage's and EvalConfig's seed (data order,
    sampling); `rlthink sweep` runs one experiment per seed. Task data stays the same.
  evaluate_initial: also evaluate the model before the first stage.
  data_dir: where task datasets are built (default: <workdir>/data).
  references: a paper's numbers to show beside ours, {stage: {split: {metric: value}}}.
  only_stages: names of the stages to run, evaluate and report (`--stages` on the command line);
    the stages they need (parents, the reward models and readers they read) run too but are
    neither evaluated nor reported. Empty: every stage. One experiment split into chunks this
    way (each in its own workdir) is reported whole by `rlthink report chunk_a chunk_b ...`.
  """

  name: str | None = None
  task: str = "arithmetic"
  task_options: dict = dataclasses.field(default_factory=lambda: {"size": "tiny"})
  stages: tuple = ("sft", "ei")
  tokenizer: str | None = "auto"
  tokenizer_vocab_size: int | None = None
  seed: int = 0
  evaluate_initial: bool = False
  data_dir: str | None = None
  references: dict = dataclasses.field(default_factory=dict)
  max_truncated_fraction: float = 0.5
  only_stages: tuple = ()

  def __post_init__(self):
    object.__setattr__(self, "stages", tuple(self.stages) if isinstance(self.stages, (list, tuple))
                       else (self.stages,))
    object.__setattr__(self, "only_stages", (self.only_stages,) if isinstance(
        self.only_stages, str) else tuple(self.only_stages))
    names = {s.name for s in self.stage_specs()}  # algorithms, parents, cycles: checked now
    if set(self.only_stages) - names:
      raise spec_lib.ExperimentError(
          f"{_where()}: Experiment.only_stages names no stage: "
          f"{sorted(set(self.only_stages) - names)} (stages: {sorted(names)})")
    unknown = sorted(set(self.references) - names)
    if unknown:
      raise spec_lib.ExperimentError(f"{_where()}: Experiment.references names no stage: "
                                     f"{unknown}")

  def stage_specs(self) -> tuple[spec_lib.Stage, ...]:
    return spec_lib.parse_stages(self.stages, self.task, dict(self.task_options), _where())


def _where() -> str:
  """Where the experiment is bound (gin file:line), for error messages."""
  return gin_utils.where_bound("Experiment") or "Experiment.stages"


@dataclasses.dataclass
class _Plan:
  """One stage, resolved: its spec, task, configs (gin scope applied, seeds offset), directory."""

  stage: spec_lib.Stage
  task: object
  cfg: object
  optimizer: OptimizerConfig
  eval_cfg: EvalConfig
  directory: str
  fingerprint: dict = dataclasses.field(default_factory=dict)
  examples: list | None = None  # the split mixture, materialized when the stage is to run

  def training_examples(self) -> list:
    """What the stage trains on: its mixture, else its config's split (first num_examples)."""
    if self.examples is not None:
      return self.examples
    source = self.task.examples(getattr(self.cfg, "split", "train"))
    count = getattr(self.cfg, "num_examples", None) or len(source)
    return [source[i] for i in range(min(count, len(source)))]


def configured_in_scope(cls, scope: str):
  """`cls` built from the gin bindings in scope `scope` (unscoped bindings apply too)."""
  with gin.config_scope(scope):
    return gin_utils.configured(cls)


def _with_seed(cfg, seed: int):
  if seed and any(f.name == "seed" for f in dataclasses.fields(cfg)):
    return dataclasses.replace(cfg, seed=cfg.seed + seed)
  return cfg


def plan(exp: Experiment, workdir: str) -> list[_Plan]:
  """Every stage resolved and checked, before any compute: configs built (bad values fail
  here), splits checked against the tasks. Raises naming the stage and the gin file."""
  from rlthink import tasks  # TFDS and grain load only when an experiment runs
  where = _where()
  stages = exp.stage_specs()
  data_dir = exp.data_dir or os.path.join(workdir, "data")
  cache, plans = {}, []
  for stage in spec_lib.run_order(stages):
    key = json.dumps([stage.task, stage.task_options], sort_keys=True, default=str)
    if key not in cache:
      cache[key] = tasks.get(stage.task, data_dir=data_dir, **stage.task_options)
    cls = algorithms.get(stage.algorithm).config_class()
    try:
      cfg = _with_seed(configured_in_scope(cls, stage.name), exp.seed)
      optimizer = configured_in_scope(OptimizerConfig, stage.name)
      eval_cfg = _with_seed(configured_in_scope(EvalConfig, stage.name), exp.seed)
    except (ValueError, TypeError) as e:
      raise spec_lib.ExperimentError(f"{where}: stage {stage.name!r}: {e}") from None
    plans.append(_Plan(stage, cache[key], cfg, optimizer, eval_cfg,
                       os.path.join(workdir, stage.name)))
  spec_lib.check_splits(stages, {p.stage.name: p.task for p in plans}, where)
  _check_references(plans, where)
  return plans


def _references(p: _Plan) -> list[tuple[str, str]]:
  """(binding, stage) pairs: the other stages whose checkpoints stage `p` reads (its reward
  models, the ORM of its rerank@k, the readers of its cross-generation)."""
  return _training_references(p) + _evaluation_references(p.eval_cfg)


def _training_references(p: _Plan) -> list[tuple[str, str]]:
  """The reward models the stage trains on: they run before it."""
  cfg, refs = p.cfg, []
  if hasattr(cfg, "reward_source"):
    for name in sources.needed_models(cfg.reward_source, cfg.dense_reward):
      refs.append((f"{type(cfg).__name__}.{name}_stage", getattr(cfg, f"{name}_stage")))
  return refs


def _evaluation_references(ev: EvalConfig) -> list[tuple[str, str]]:
  """The stages an evaluation with `ev` reads: the ORM of rerank@k, the cross-generation
  readers. A stage's final evaluation waits for them, so they may run after it (e.g. an ORM
  trained on the stage's own samples); its per-iteration evaluations cannot."""
  refs = []
  if "rerank@k" in ev.metrics and ev.reward_model_stage:
    refs.append(("EvalConfig.reward_model_stage", ev.reward_model_stage))
  if "cross_generation" in ev.metrics:
    refs.extend(("EvalConfig.readers", r) for r in ev.readers)
  return refs


def _check_references(plans: list[_Plan], where: str) -> None:
  """Raises when a stage reads a stage that is not in the experiment, or trains on (or
  evaluates per iteration with) one that does not run before it."""
  position = {p.stage.name: i for i, p in enumerate(plans)}
  for i, p in enumerate(plans):
    # Reward-model stages train no policy, so they evaluate nothing while they train.
    evaluates_early = p.stage.evaluate and p.stage.algorithm not in ("orm", "prm")
    during = _evaluation_references(for_iterations(p.eval_cfg)) if evaluates_early else []
    for binding, other in _references(p):
      if other not in position:
        raise spec_lib.ExperimentError(
            f"{where}: stage {p.stage.name!r}: {binding} = {other!r} names no stage of the "
            f"experiment (stages: {', '.join(position)})")
    for refs, why in ((_training_references(p), ""), (during, (
        " and its evaluations during training read it (EvalConfig.iteration_metrics, default: "
        "EvalConfig.metrics; only its final evaluation may wait for a later stage)"))):
      for binding, other in refs:
        if position[other] >= i:
          raise spec_lib.ExperimentError(
              f"{where}: stage {p.stage.name!r}: {binding} = {other!r} names a stage that runs "
              f"after it{why}; list {other!r} earlier")


def select(plans: list[_Plan], names) -> tuple[list[_Plan], set[str]]:
  """The plans that running the stages `names` needs (those stages, their ancestors and the
  stages they read, in run order) and the names to evaluate and report; all for no names. A
  stage run only for another is not evaluated, so what its evaluation reads is not needed."""
  if not names:
    return plans, {p.stage.name for p in plans}
  by_name, needed, todo = {p.stage.name: p for p in plans}, set(), list(names)
  while todo:
    name = todo.pop()
    if name not in needed:
      needed.add(name)
      p = by_name[name]
      todo.extend([p.stage.parent] if p.stage.parent else [])
      reads = _references(p) if name in names else _training_references(p)
      todo.extend(other for _, other in reads)
  return [p for p in plans if p.stage.name in needed], set(names)


def _fingerprints(plans: list[_Plan], exp: Experiment) -> None:
  by_name = {p.stage.name: p for p in plans}
  root = {**fingerprint.flat("ModelSpec", gin_utils.ModelSpec()),
          "Experiment.tokenizer": tokenizer_spec(exp.tokenizer), "Experiment.seed": exp.seed}
  for p in plans:  # parents first
    fp = {**fingerprint.flat("stage", p.stage.to_json()),
          **fingerprint.flat(type(p.cfg).__name__, p.cfg),
          **fingerprint.flat("OptimizerConfig", p.optimizer)}
    parent = p.stage.parent
    fp["parent"] = fingerprint.digest(by_name[parent].fingerprint if parent else root)
    p.fingerprint = fp


def run(workdir: str, experiment: Experiment | None = None, progress: bool = True,
        overrides=()) -> dict:
  """Runs (or resumes) the experiment in `workdir`; returns {stage: eval results}.

  overrides: bindings (e.g. "GRPOConfig.iterations" or "rl_comp.GRPOConfig.iterations") that may
  differ from what a stage already in the workdir was run with; any other difference is an error.
  """
  exp = experiment or Experiment()
  workdir = ensure_writable(workdir)
  # Log lines and W&B (LoggingConfig) for every stage's MetricsLogger.
  with metrics.using(gin_utils.configured(metrics.LoggingConfig)):
    if not distributed.is_main_process():  # hosts of one multi-host run share the workdir
      return _run(workdir, exp, progress, overrides)
    with locks.workdir_lock(workdir):  # a second run on the same workdir fails at once
      return _run(workdir, exp, progress, overrides)


def _run(workdir: str, exp: Experiment, progress: bool, overrides) -> dict:
  plans = plan(exp, workdir)
  for p in plans:
    if p.stage.splits is not None:
      p.examples = materialize(p.task, p.stage.splits, getattr(p.cfg, "seed", exp.seed))[0]
  policy = build_policy(exp.seed)
  policy = attach_tokenizer(policy, exp.tokenizer, tokenizer=experiment_tokenizer(
      exp.tokenizer, lambda: _corpus(plans), os.path.join(workdir, "tokenizer"),
      exp.tokenizer_vocab_size) if exp.tokenizer == "bpe" else None)
  # Bad input (another model's checkpoints, changed settings) stops the run before it writes
  # anything into the workdir, so a resumable run there keeps its config.gin.
  _fingerprints(plans, exp)
  plans, reported = select(plans, exp.only_stages)  # after the tokenizer saw every stage's data
  check_stage_checkpoints(workdir, [p.stage.name for p in plans], policy.config)
  records = {}
  for p in plans:
    saved = fingerprint.read(p.directory)
    if saved is not None:
      changed = fingerprint.check(p.stage.name, p.directory, saved["fingerprint"], p.fingerprint,
                                  overrides)
      saved["done"] = saved.get("done", False) and not changed
      if saved["done"] and not final_checkpoint_intact(workdir, p.stage.name, policy.config):
        _log.warning("stage %s: its final checkpoint is corrupt or missing; running the stage "
                     "again from its last good checkpoint", p.stage.name)
        saved["done"] = False
    records[p.stage.name] = saved
  for p in plans:
    if p.stage.algorithm == "sft" and not (records[p.stage.name] or {}).get("done"):
      stats = truncation_stats(p.task, policy.tokenizer, p.cfg.max_length,
                               examples=p.training_examples())
      check_truncation(stats, exp.max_truncated_fraction,
                       where=f"stage {p.stage.name!r} (SFTConfig.max_length={p.cfg.max_length})")
  main = distributed.is_main_process()  # one process writes the shared workdir's reports
  if main:
    files.atomic_write_text(os.path.join(workdir, "config.gin"), gin.config_str())

  init_params = policy.params
  finals: dict[str, object] = {}  # final params of stages whose children have not all run
  pending_children = {p.stage.name: sum(q.stage.parent == p.stage.name for q in plans)
                      for p in plans}
  evaluator = _Evaluator(workdir, main)
  rows, histories, ran, waiting = [], {}, set(), []  # waiting: final evaluations not yet run
  if exp.evaluate_initial:
    first = plans[0]
    rows.append(("init", evaluator.final("init", policy, first.task, first.eval_cfg, {})))
  for p in plans:
    name, parent = p.stage.name, p.stage.parent
    record = records[name]
    if record is not None and record.get("done"):
      _log.info("stage %s: finished earlier, not run again", name)
      histories[name] = record.get("history", [])
      params = None
    else:
      start = init_params if parent is None else finals.get(parent)
      if start is None:
        start = load_stage_params(workdir, parent, policy, init_params)
      # A LoRA stage checkpoints only its adapters: its record says what they apply to.
      base = lora_start(p.optimizer.lora, parent, exp.seed)
      extra = {} if base is None else {"lora": base}
      if main:
        fingerprint.write(p.directory, {"fingerprint": p.fingerprint, "done": False, **extra})
      current, histories[name] = _run_stage(p, policy.replace(params=start), workdir, evaluator,
                                            progress, exp.seed)
      params = current.params
      if main:
        fingerprint.write(p.directory, {"fingerprint": p.fingerprint, "done": True,
                                        "history": histories[name], **extra})
    if parent is not None:
      pending_children[parent] -= 1
      if pending_children[parent] == 0:
        finals.pop(parent, None)
    if pending_children[name] and params is None:
      params = load_stage_params(workdir, name, policy, init_params)
    if pending_children[name]:
      finals[name] = params
    ran.add(name)
    if p.stage.evaluate and name in reported:
      needs = {other for _, other in _evaluation_references(p.eval_cfg)}
      waiting.append((p, needs, params if needs <= ran else None))
    # This stage's own evaluation first: it may reuse its last evaluation while training.
    for item in sorted([w for w in waiting if w[1] <= ran], key=lambda w: w[0] is not p):
      waiting.remove(item)
      rows.append((item[0].stage.name, _final_evaluation(item[0], item[2], plans, policy,
                                                         init_params, workdir, evaluator)))
  order = {p.stage.name: i for i, p in enumerate(plans)}
  rows.sort(key=lambda row: order.get(row[0], -1))  # "init" first, then the run order
  return _write_results(workdir, exp, [p for p in plans if p.stage.name in reported], rows,
                        {k: v for k, v in histories.items() if k in reported}, main)


def _final_evaluation(p: _Plan, params, plans: list[_Plan], policy, init_params, workdir: str,
                      evaluator: "_Evaluator") -> dict:
  """The stage's final evaluation (cached under its settings, its EvalConfig and the settings
  of the stages the evaluation reads); params None: loaded from its final checkpoint."""
  name = p.stage.name
  key = {"stage": fingerprint.digest(p.fingerprint), **fingerprint.flat("EvalConfig",
                                                                           p.eval_cfg)}
  reads = {other for _, other in _evaluation_references(p.eval_cfg)}
  if reads:
    key["reads"] = {q.stage.name: fingerprint.digest(q.fingerprint) for q in plans
                    if q.stage.name in reads}
  load = (lambda: policy.replace(params=params if params is not None else
                                 load_stage_params(workdir, name, policy, init_params)))
  return evaluator.final(name, load, p.task, p.eval_cfg, key,
                         _eval_extras(p, policy, workdir, p.eval_cfg))


def _run_stage(p: _Plan, policy, workdir: str, evaluator: "_Evaluator", progress: bool,
               seed: int):
  by_dir = lambda name: _stage_directory(workdir, name)
  during = for_iterations(p.eval_cfg)  # the evaluations while the stage trains
  ctx = algorithms.StageContext(
      name=p.stage.name, directory=p.directory, task=p.task, examples=p.examples,
      optimizer=p.optimizer, seed=seed, progress=progress, stage_directory=by_dir,
      evaluate=(evaluator.per_iteration(p.task, during, _eval_extras(p, policy, workdir, during))
                if p.stage.evaluate else None))
  runner = algorithms.get(p.stage.algorithm).runner()
  return runner(policy, p.cfg, ctx)


def _eval_extras(p: _Plan, policy, workdir: str, cfg: EvalConfig):
  """() -> the keyword arguments of a stage's evaluation with `cfg`: its config (for RCRL's
  conditioned prompts), the ORM of another stage for rerank@k, reader stages for
  cross-generation. Loaded only when an evaluation runs."""

  def extras() -> dict:
    out = {"stage_config": p.cfg}
    if cfg.reward_model_stage and "rerank@k" in cfg.metrics:  # as `_evaluation_references`
      from rlthink.rewards import load_reward_model  # only rerank@k needs it
      out["reward_model"] = load_reward_model(_stage_directory(workdir, cfg.reward_model_stage),
                                              "outcome", policy)
    if cfg.readers and "cross_generation" in cfg.metrics:  # as `_references` reads them
      out["readers"] = {n: policy.replace(params=load_stage_params(workdir, n, policy))
                        for n in cfg.readers}
    return out
  return extras


def _corpus(plans: list[_Plan]):
  """The texts a "bpe" tokenizer is trained on: every stage's training prompts and reference
  completions (each distinct example once)."""
  seen = set()
  for p in plans:
    for example in p.training_examples():
      key = (p.stage.task, example["id"])
      if key not in seen:
        seen.add(key)
        yield p.task.prompt(example) + p.task.reference(example)


def _stage_directory(workdir: str, name: str) -> str:
  directory = os.path.join(workdir, name)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"stage {name!r} has no directory in {workdir} (has it run? a stage "
                            "that reads another's output must list it as an earlier stage)")
  return directory


class _Evaluator:
  """Evaluations of one run: per iteration (every `eval_every`-th and the last), and of each
  stage's final model, cached in eval/<stage>.json under a key of the stage's settings and the
  EvalConfig (the last per-iteration evaluation of the same params is reused)."""

  def __init__(self, workdir: str, main: bool):
    self.workdir, self.main = workdir, main
    self.last = {"params": None, "cfg": None, "results": None}

  def _evaluate(self, policy, task, cfg, extras) -> tuple[dict, dict]:
    if policy.params is not self.last["params"] or cfg != self.last["cfg"]:
      self.last.update(params=policy.params, cfg=cfg, results=evaluate_with_predictions(
          policy, task, cfg, **(extras() if extras else {})))
    return self.last["results"]

  def per_iteration(self, task, cfg, extras=None):
    def run(policy, iteration: int, last: bool) -> dict:
      if not should_evaluate(cfg, iteration, last):
        return {}
      return _headline(self._evaluate(policy, task, cfg, extras)[0])
    return run

  def final(self, name: str, policy_or_loader, task, cfg, key: dict, extras=None) -> dict:
    """The stage's final evaluation (cached under `key`), with its per-example predictions.
    extras() -> keyword arguments of `evaluate` (reward model, readers, stage config)."""
    path = os.path.join(self.workdir, "eval", f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        saved = json.load(f)
      if isinstance(saved, dict) and saved.get("key") == key and "results" in saved:
        return saved["results"]
    policy = policy_or_loader() if callable(policy_or_loader) else policy_or_loader
    results, predictions = self._evaluate(policy, task, cfg, extras)
    if self.main:
      if cfg.save_predictions:
        write_predictions(os.path.join(self.workdir, "eval", f"{name}.predictions.jsonl"),
                          predictions)
      report.write_json(path, {"key": key, "results": results})
    return results


def _write_results(workdir, exp: Experiment, plans, rows, histories, main: bool) -> dict:
  results = dict(rows)
  stages = {p.stage.name: {"algorithm": p.stage.algorithm, "parent": p.stage.parent,
                           "task": p.stage.task, "results": results.get(p.stage.name),
                           "history": histories.get(p.stage.name, [])} for p in plans}
  name = exp.name or plans[0].stage.task
  table = report.markdown_table(rows) if rows else ""
  if main:
    report.write_json(os.path.join(workdir, "results.json"), {
        "experiment": name, "seed": exp.seed, "order": [p.stage.name for p in plans],
        "stages": stages, "initial": results.get("init"), "references": exp.references})
    chain = " -> ".join(p.stage.name for p in plans)
    files.atomic_write_text(os.path.join(workdir, "results.md"), f"# {name}: {chain}\n\n{table}")
    if rows:
      report.plot_pass_curves(rows, os.path.join(workdir, "pass_at_k.png"))
    parents = {p.stage.name: p.stage.parent for p in plans}
    for stage, history in histories.items():
      keys = sorted({k for h in history for k in h if k == "solve_rate" or k.startswith("eval_")})
      start = results.get(parents.get(stage) or "init")  # iteration 0: the model it starts from
      initial = {f"eval_{k}": v for k, v in _headline(start).items()} if start else None
      if keys:
        report.plot_history(history, keys, os.path.join(workdir, f"{stage}_history.png"),
                            title=stage, initial=initial)
  print(table, flush=True)
  return results


def _headline(results: dict) -> dict:
  """maj@1 / maj@k / pass@k of the first split: the per-iteration curve."""
  split, metrics = next(iter(results.items()))
  return {k: v for k, v in metrics.items() if k.startswith(("maj@", "pass@"))}


def evaluate_run(workdir: str, stage: str | None = None) -> dict:
  """`rlthink eval`: evaluates the gin-named model (or a stage's final checkpoint of `workdir`)
  on the stage's task with the stage's EvalConfig; writes eval/<name>_final.json and .md."""
  exp = Experiment()
  workdir = ensure_writable(workdir)
  plans = {p.stage.name: p for p in plan(exp, workdir)}
  if stage is not None and stage not in plans:
    raise ValueError(f"the experiment in {workdir} has no stage {stage!r} (stages: "
                     f"{sorted(plans)})")
  chosen = plans[stage] if stage else next(iter(plans.values()))
  policy = attach_tokenizer(build_policy(exp.seed), exp.tokenizer)
  name = "model"
  if stage:
    policy = policy.replace(params=load_stage_params(workdir, stage, policy))
    name = f"{stage}_final"
  results = evaluate(policy, chosen.task, chosen.eval_cfg)
  report.write_json(os.path.join(workdir, "eval", f"{name}.json"), results)
  files.atomic_write_text(os.path.join(workdir, "eval", f"{name}.md"), report.markdown_table([(name, results)]))
  return results


def cross_generation_run(workdir: str, thinkers, readers) -> dict:
  """`rlthink eval --cross_generation`: each thinker stage's thinking read and answered by each
  reader stage, on the first thinker's task (`CrossGenConfig` picks the split and sizes);
  writes eval/cross_generation.{json,md,png}."""
  exp = Experiment()
  workdir = ensure_writable(workdir)
  plans = {p.stage.name: p for p in plan(exp, workdir)}
  names = list(thinkers) + list(readers)
  if not thinkers or not readers:
    raise ValueError("cross-generation needs at least one thinker and one reader stage")
  unknown = sorted(set(names) - set(plans))
  if unknown:
    raise ValueError(f"the experiment in {workdir} has no stage(s) {unknown} (stages: "
                     f"{sorted(plans)})")
  policy = attach_tokenizer(build_policy(exp.seed), exp.tokenizer)
  loaded = {n: policy.replace(params=load_stage_params(workdir, n, policy)) for n in set(names)}
  result = cg.cross_generation_matrix({n: loaded[n] for n in thinkers},
                                      {n: loaded[n] for n in readers}, plans[thinkers[0]].task,
                                      gin_utils.configured(cg.CrossGenConfig))
  if distributed.is_main_process():
    cg.write_cross_generation(result, os.path.join(workdir, "eval"))
  return result
