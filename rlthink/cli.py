"""The `rlthink` command line: train | sweep | report | sample | eval | convert | bench | data | list.

Every subcommand but `bench` takes repeatable `--gin_file` / `--gin_param` and `--workdir`; gin
binds the dataclass configs (ModelSpec, MeshSpec, Experiment, SFTConfig, EIConfig, EvalConfig,
OptimizerConfig, SampleConfig, ...) before any compute, and a bad binding stops the command with
one message naming the binding and the file. A `--workdir` holding a run's `config.gin` (written
by `train`) supplies that run's bindings first; --gin_file / --gin_param override them. `bench`
passes its arguments to the benchmark (it must run where gin is not installed, e.g. the GPU
image).

    rlthink train --workdir workdir/quickstart            # configs/experiments/quickstart.gin
    rlthink train --gin_file experiments/grpo_tiny.gin --workdir workdir/grpo
    rlthink sample --gin_file models/tiny.gin --prompt "Tom has 3 apples."
    rlthink eval --workdir workdir/quickstart --stage ei     # reads <workdir>/config.gin
    rlthink convert --workdir workdir/quickstart --stage ei --out exported_hf_dir
    rlthink bench train --model qwen2.5-0.5b
    rlthink data build arithmetic --option size=tiny
    rlthink list                                          # experiments, models, tasks, algorithms
    rlthink --version

Gin file names are looked up in the cwd, then in each `--gin_search_path DIR` (repeatable), then
in the configs shipped inside the package (`rlthink list` names them).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from importlib import metadata

from rlthink import __version__, distributed
from rlthink.locks import LockHeldError
from rlthink.sampling.config import SampleConfig
from rlthink.sampling.text import sample_text

DEFAULT_EXPERIMENT = "experiments/quickstart.gin"
BENCHMARKS = {"train": "rlthink.bench.train", "sample": "rlthink.bench.sample",
              "ei": "rlthink.bench.ei", "ppo": "rlthink.bench.ppo",
              "check_decode": "rlthink.bench.check_decode", "rollout": "rlthink.bench.rollout",
              "grpo": "rlthink.bench.grpo"}


def _common(p: argparse.ArgumentParser, workdir_required: bool = False) -> None:
  p.add_argument("--gin_file", action="append", default=[],
                 help="gin file (repeatable); relative to the cwd, a --gin_search_path or the "
                 "packaged configs (see `rlthink list`)")
  p.add_argument("--gin_param", action="append", default=[],
                 help="gin binding (repeatable), e.g. \"SFTConfig.steps = 10\"")
  _search_path(p)
  p.add_argument("--workdir", required=workdir_required, help="run directory")
  p.add_argument("--coordinator", help="multi-host: coordinator address host:port")
  p.add_argument("--num_processes", type=int, help="multi-host: number of processes")
  p.add_argument("--process_id", type=int, help="multi-host: this process's id")


def _search_path(p: argparse.ArgumentParser) -> None:
  p.add_argument("--gin_search_path", action="append", default=[], metavar="DIR",
                 help="a folder to look gin files (and their includes) up in, after the cwd and "
                 "before the packaged configs (repeatable)")


def _override(p: argparse.ArgumentParser) -> None:
  p.add_argument("--override", action="append", default=[], metavar="BINDING",
                 help="a binding (e.g. GRPOConfig.iterations, or rl_comp.GRPOConfig.iterations) "
                 "that may differ from what a stage already in the workdir was run with "
                 "(repeatable); any other difference is an error")


def _stages(p: argparse.ArgumentParser) -> None:
  p.add_argument("--stages", default="", metavar="NAME[,NAME...]",
                 help="run, evaluate and report only these stages (the stages they need run too, "
                 "unreported); sets Experiment.only_stages. Chunks of one experiment run in their "
                 "own workdirs are reported together by `rlthink report DIR...`")


def _stages_binding(args) -> None:
  """--stages a,b as the binding it stands for, after any other (so it wins)."""
  names = [n.strip() for n in args.stages.split(",") if n.strip()]
  if names:
    args.gin_param = list(args.gin_param) + [f"Experiment.only_stages = {names!r}"]


def _model(p: argparse.ArgumentParser) -> None:
  p.add_argument("--model", help="a Hugging Face model: a local directory or a Hub id already in "
                 "the local Hugging Face cache (sets ModelSpec.hf_path)")


def _model_binding(args) -> None:
  """--model DIR_OR_ID as the binding it stands for, after any other (so it wins)."""
  if getattr(args, "model", None):
    args.gin_param = list(args.gin_param) + [f"ModelSpec.hf_path = {args.model!r}"]


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="rlthink", description=__doc__.split("\n")[0])
  parser.add_argument("--version", action="version", version=f"rlthink {_version()}")
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("train", help="run an experiment (default: the quickstart)")
  _common(p)
  p.add_argument("--no_progress", action="store_true", help="no progress bars")
  _stages(p)
  _override(p)

  p = sub.add_parser("sweep", help="run an experiment once per seed, each in <workdir>/seed_<s>")
  _common(p, workdir_required=True)
  p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the sweep's recorded "
                 "ones, else 0 1 2)")
  p.add_argument("--processes", type=int, default=0, help="0: the seeds one after another in "
                 "this process; N: N concurrent subprocesses")
  p.add_argument("--devices", default="", help="GPUs to spread the subprocesses over, e.g. "
                 "'0,1' (CUDA_VISIBLE_DEVICES each)")
  p.add_argument("--no_progress", action="store_true", help="no progress bars")
  p.add_argument("--no_report", action="store_true", help="skip the report at the end")
  _stages(p)
  _override(p)

  p = sub.add_parser("report", help="one table over runs and sweeps: stages x seeds x splits "
                     "(mean ± std), markdown, JSON and PNG")
  from rlthink.evaluation import tables  # argparse only: no JAX or TFDS
  tables.add_arguments(p)

  p = sub.add_parser("sample", help="sample completions of text prompts")
  _common(p)
  p.add_argument("--prompt", action="append", default=[], help="prompt text (repeatable)")
  p.add_argument("--prompts_file", help="a text file with one prompt per line")
  p.add_argument("--out", help="write JSON lines here instead of stdout")
  p.add_argument("--stage", help="sample from the final checkpoint of this stage of --workdir")
  _model(p)
  p.add_argument("--max_new_tokens", type=int, help="the most tokens per completion "
                 "(SampleConfig.max_new_tokens)")
  p.add_argument("--temperature", type=float, help="0 for greedy (SampleConfig.temperature)")
  p.add_argument("--top_p", type=float, help="nucleus sampling (SampleConfig.top_p)")
  p.add_argument("--top_k", type=int, help="top-k sampling (SampleConfig.top_k)")
  p.add_argument("-n", "--num_samples", type=int, help="completions per prompt "
                 "(SampleConfig.num_samples)")
  p.add_argument("--seed", type=int, help="sampling seed (SampleConfig.seed)")
  p.add_argument("--chat_template", action="store_true", help="render each prompt as a user "
                 "message through the tokenizer's chat template (with the generation prompt)")

  p = sub.add_parser("eval", help="maj@1 / maj@k / pass@k of a model on the experiment's task")
  _common(p, workdir_required=True)
  p.add_argument("--stage", help="evaluate the final checkpoint of this stage of the workdir's "
                 "run (default: the model that ModelSpec names)")
  _model(p)
  p.add_argument("--cross_generation", action="store_true", help="cross-generation: each "
                 "--thinkers stage's thinking answered by each --readers stage")
  p.add_argument("--thinkers", default="", help="comma-separated stages whose thinking is read")
  p.add_argument("--readers", default="", help="comma-separated stages that read and answer")

  p = sub.add_parser("convert", help="export a stage's checkpoint (or a model) to a Hugging Face "
                     "directory")
  _common(p)
  p.add_argument("--stage", help="the stage whose final checkpoint to export (needs --workdir)")
  p.add_argument("--out", required=True, help="the Hugging Face directory to write (new or empty)")
  p.add_argument("--overwrite", action="store_true", help="replace --out when it holds an earlier "
                 "export (as a whole: other files in it are not kept)")
  _model(p)

  p = sub.add_parser("bench", help="benchmarks: " + ", ".join(BENCHMARKS))
  p.add_argument("name", choices=sorted(BENCHMARKS))
  p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own arguments")

  p = sub.add_parser("data", help="build a task dataset and print its statistics")
  p.add_argument("action", choices=("build",))
  p.add_argument("name", help="task name, e.g. arithmetic")
  p.add_argument("--option", action="append", default=[],
                 help="task option key=value (repeatable), e.g. size=tiny")
  p.add_argument("--gin_file", action="append", default=[])
  p.add_argument("--gin_param", action="append", default=[],
                 help="e.g. \"Experiment.task_options = {'size': 'tiny'}\"")
  p.add_argument("--data_dir", help="where to build (default $RLTHINK_DATA_DIR or "
                 "~/tensorflow_datasets)")
  _search_path(p)

  p = sub.add_parser("list", help="the experiments and models (packaged gin files), tasks and "
                     "algorithms")
  _search_path(p)

  debug = "on an error, show the traceback (also RLTHINK_DEBUG=1)"
  parser.add_argument("--debug", action="store_true", help=debug)
  for name, command in sub.choices.items():
    if name != "bench":  # bench passes every argument on to the benchmark
      command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
  return parser


def _version() -> str:
  """The installed distribution's version (the package's own when run from a bare checkout)."""
  try:
    return metadata.version("rlthink")
  except metadata.PackageNotFoundError:
    return __version__


def run_config(workdir: str | None) -> str | None:
  """<workdir>/config.gin, the bindings a run in `workdir` was started with, if there is one."""
  if not workdir:
    return None
  path = os.path.join(workdir, "config.gin")
  return path if os.path.isfile(path) else None


def _check_run_config(workdir: str | None) -> None:
  """A workdir whose stages hold checkpoints must still have its config.gin: without it the
  default experiment would quietly run (and overwrite) there."""
  if not workdir or not os.path.isdir(workdir) or run_config(workdir):
    if run_config(workdir) and os.path.getsize(run_config(workdir)) == 0:
      raise ValueError(f"{workdir}/config.gin is empty; the run's settings are lost (restore "
                       "the file, or start a new workdir)")
    return
  stages = sorted(name for name in os.listdir(workdir)
                  if os.path.isdir(os.path.join(workdir, name, "checkpoints")))
  if stages:
    raise ValueError(f"{workdir} holds checkpoints of stages {stages} but no config.gin; the "
                     "run's settings are lost (restore the file, or start a new workdir)")


def _with_run_config(args, default: str | None) -> None:
  """Gin files for a command on `--workdir`: the run's own config.gin first (so `rlthink train
  --workdir W` resumes the run as it was started, and eval/sample/convert see its model and task),
  then the --gin_file / --gin_param given, which override it. Without a run config and without
  --gin_file, `default`."""
  _check_run_config(getattr(args, "workdir", None))
  saved = run_config(getattr(args, "workdir", None))
  if saved:
    logging.getLogger("rlthink").info("using the run's bindings in %s", saved)
    args.gin_file = [saved] + list(args.gin_file)
  elif not args.gin_file and default:
    args.gin_file = [default]


def _setup(args, writable: bool = True) -> None:
  """Multi-host init, then gin: everything is checked before any compute. writable=False: the
  command only reads --workdir (sample, convert), which may then be read-only."""
  # gin loads only for commands that parse a config: `rlthink bench` runs without it
  from rlthink import gin_utils
  distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                         process_id=args.process_id)
  distributed.configure_logging()
  gin_utils.parse(args.gin_file, args.gin_param, gin_utils.search_path(args.gin_search_path))
  if getattr(args, "workdir", None):
    args.workdir = (distributed.prepare_workdir(args.workdir) if writable
                    else os.path.abspath(args.workdir))


def _policy_with_tokenizer():
  # rlthink.experiment loads gin, grain and transformers: `rlthink bench` runs without them
  from rlthink.experiment import Experiment, attach_tokenizer, build_policy
  return attach_tokenizer(build_policy(), Experiment().tokenizer)


def cmd_train(args) -> int:
  # rlthink.experiment loads gin, grain and transformers: `rlthink bench` runs without them
  from rlthink import experiment
  args.workdir = args.workdir or "workdir/quickstart"
  _with_run_config(args, DEFAULT_EXPERIMENT)
  _stages_binding(args)
  _setup(args)
  experiment.run(args.workdir, progress=not args.no_progress, overrides=args.override)
  return 0


def cmd_sweep(args) -> int:
  # rlthink.experiment loads gin, grain and transformers: `rlthink bench` runs without them
  from rlthink.experiment import sweep
  saved = os.path.join(args.workdir, sweep.CONFIG)
  if os.path.isfile(saved):
    args.gin_file = [saved] + list(args.gin_file)
  elif not args.gin_file:
    raise ValueError(f"rlthink sweep: {args.workdir} holds no sweep; give --gin_file")
  _stages_binding(args)
  _setup(args)
  devices = [d for d in args.devices.split(",") if d.strip()]
  sweep.run_sweep(args.workdir, args.seeds, processes=args.processes, devices=devices,
                  progress=not args.no_progress, overrides=args.override)
  if not args.no_report:
    from rlthink.evaluation import tables  # loads grain, absent where `rlthink bench` runs
    tables.run(tables.build_parser().parse_args([args.workdir, "--out", args.workdir]))
  return 0


def cmd_report(args) -> int:
  from rlthink.evaluation import tables  # loads grain, absent where `rlthink bench` runs
  return tables.run(args)


def cmd_sample(args) -> int:
  _model_binding(args)
  _with_run_config(args, "models/tiny.gin")
  _setup(args, writable=False)
  prompts = list(args.prompt)
  if args.prompts_file:
    with open(args.prompts_file) as f:
      prompts += [line.rstrip("\n") for line in f if line.strip()]
  if not prompts:
    raise ValueError("rlthink sample: give --prompt TEXT (repeatable) or --prompts_file FILE")
  policy = _policy_with_tokenizer()
  if args.stage:
    from rlthink.experiment import load_stage_params  # gin, grain: see _policy_with_tokenizer
    if not args.workdir:
      raise ValueError("rlthink sample --stage needs --workdir (the run to sample from)")
    policy = policy.replace(params=load_stage_params(args.workdir, args.stage, policy))
  from rlthink.gin_utils import configured  # gin: absent where `rlthink bench` runs
  flags = {name: getattr(args, name) for name in ("max_new_tokens", "temperature", "top_p",
                                                  "top_k", "num_samples", "seed")}
  texts = _chat_prompts(policy.tokenizer, prompts) if args.chat_template else prompts
  records = sample_text(policy, texts, configured(SampleConfig),
                        **{k: v for k, v in flags.items() if v is not None})
  for record in records:
    record["prompt"] = prompts[record["prompt_index"]]
  lines = "".join(json.dumps(r) + "\n" for r in records)
  if args.out:
    with open(args.out, "w") as f:
      f.write(lines)
  else:
    sys.stdout.write(lines)
  return 0


def _chat_prompts(tokenizer, prompts: list[str]) -> list[str]:
  """Each prompt as one user message through the tokenizer's chat template, ready for the
  assistant's reply; without a <bos> the tokenizer adds again on encoding."""
  if not getattr(tokenizer, "chat_template", None):
    raise ValueError("rlthink sample --chat_template: the tokenizer has no chat template")
  bos = tokenizer.bos_token if tokenizer.bos_token_id in tokenizer("")["input_ids"] else None
  out = []
  for p in prompts:
    text = tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                         add_generation_prompt=True)
    out.append(text[len(bos):] if bos and text.startswith(bos) else text)
  return out


def cmd_eval(args) -> int:
  # rlthink.experiment loads gin, grain and transformers: `rlthink bench` runs without them
  from rlthink import experiment
  _model_binding(args)
  _with_run_config(args, None)
  _setup(args)
  if args.cross_generation:
    split = lambda value: [n.strip() for n in value.split(",") if n.strip()]
    result = experiment.runner.cross_generation_run(args.workdir, split(args.thinkers),
                                                    split(args.readers))
    # loads grain, absent where `rlthink bench` runs
    from rlthink.evaluation.cross_generation import cross_generation_markdown
    print(cross_generation_markdown(result))
    return 0
  results = experiment.evaluate_run(args.workdir, args.stage)
  print(json.dumps(results, indent=2))
  return 0


def cmd_convert(args) -> int:
  from rlthink.models import hf  # heavy: transformers, for this command only
  if args.workdir and not args.stage:
    raise ValueError("rlthink convert --workdir needs --stage (which stage's final checkpoint "
                     "to export)")
  if args.stage and not args.workdir:
    raise ValueError("rlthink convert --stage needs --workdir (the run to export)")
  hf.check_export_target(args.out, args.overwrite)  # before anything is loaded
  _model_binding(args)
  _with_run_config(args, None)
  _setup(args, writable=False)
  from rlthink.gin_utils import ModelSpec  # gin: absent where `rlthink bench` runs
  source = ModelSpec().hf_path
  if not args.stage and source is None:
    raise ValueError("rlthink convert: nothing to export: give --workdir W --stage STAGE (a "
                     "stage's final checkpoint) or a model to convert (--model DIR_OR_HUB_ID); "
                     "a preset alone holds random weights")
  policy = _policy_with_tokenizer()
  if args.stage:
    from rlthink.experiment import load_stage_params  # gin, grain: see _policy_with_tokenizer
    policy = policy.replace(params=load_stage_params(args.workdir, args.stage, policy))
  # The source's generation_config.json (sampling defaults, every eos id) comes along.
  policy.save_pretrained(args.out, overwrite=args.overwrite,
                         generation_config=hf.read_generation_config(source) if source else None)
  print(f"wrote {args.out}")
  return 0


def cmd_bench(args) -> int:
  module = importlib.import_module(BENCHMARKS[args.name])
  return module.main(list(args.args))


def cmd_data(args) -> int:
  from rlthink import gin_utils  # gin: absent where `rlthink bench` runs
  from rlthink.tasks import data_cli  # loads TFDS, absent where `rlthink bench` runs
  gin_utils.parse(args.gin_file, args.gin_param, gin_utils.search_path(args.gin_search_path))
  from rlthink.experiment import Experiment  # gin, grain: see _policy_with_tokenizer
  options = dict(Experiment().task_options) if (args.gin_file or args.gin_param) else {}
  options.update(data_cli.parse_options(args.option))
  print(data_cli.format_statistics(data_cli.build(args.name, options, args.data_dir)))
  return 0


def cmd_list(args) -> int:
  """Prints the gin experiments and models (packaged, and under --gin_search_path), the tasks and
  the algorithms, each as the name that selects it."""
  from rlthink import algorithms, gin_utils, tasks  # gin: absent where `rlthink bench` runs
  roots = gin_utils.search_path(args.gin_search_path)[1:]  # the cwd is no catalogue
  configs = gin_utils.config_names(roots)
  sections = [("experiments (--gin_file)", configs.get("experiments", [])),
              ("models (--gin_file)", configs.get("models", [])),
              ("tasks (Stage.task, rlthink data build)", tasks.names()),
              ("algorithms (Stage.algorithm)", sorted(algorithms.ALGORITHMS))]
  for other in sorted(set(configs) - {"experiments", "models"}):
    sections.append((f"{other + '/' if other else 'other'} (--gin_file)", configs[other]))
  for title, names in sections:
    print(f"{title}:")
    for name in names:
      print(f"  {name}")
  return 0


COMMANDS = {"train": cmd_train, "sweep": cmd_sweep, "report": cmd_report, "sample": cmd_sample,
            "eval": cmd_eval, "convert": cmd_convert, "bench": cmd_bench, "data": cmd_data,
            "list": cmd_list}


def main(argv: list[str] | None = None) -> int:
  """Runs one command. Any error ends it with one line on stderr naming the command (exit 2 for
  bad input, 1 for a failed run or an internal error); --debug or RLTHINK_DEBUG=1 re-raises it
  with its traceback instead."""
  args = build_parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  for noisy in ("absl", "jax._src", "orbax", "tensorflow_datasets"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  if args.command == "bench":
    return cmd_bench(args)
  debug = getattr(args, "debug", False) or os.environ.get("RLTHINK_DEBUG", "") not in ("", "0")
  try:
    return COMMANDS[args.command](args)
  except KeyboardInterrupt:
    if debug:
      raise
    print(f"rlthink {args.command}: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # noqa: BLE001  (every error becomes one line; --debug re-raises)
    if debug:
      raise
    message, status = _error_line(e)
    print(f"rlthink {args.command}: error: {message}", file=sys.stderr)
    return status


def _error_line(e: Exception) -> tuple[str, int]:
  """(one-line message, exit status) of an error reaching the user."""
  from rlthink.gin_utils import GinConfigError  # gin: absent where `rlthink bench` runs
  from rlthink.train.step import NonFiniteLossError  # optax/orbax: load only on an error
  if isinstance(e, NonFiniteLossError):
    return _one_line(e), 1
  if isinstance(e, (GinConfigError, ValueError, OSError, LockHeldError)):
    return _one_line(e), 2  # bad input: the message says what to change
  # Anything else is a failure the message alone may not explain: name its type.
  return f"{type(e).__name__}: {_one_line(e) or '(no message)'} (--debug shows the traceback)", 1


def _one_line(e: Exception) -> str:
  """The message on one line, without gin's "In call to configurable ..." trailer (added when a
  configurable's own check raises, e.g. an unknown name in `Experiment.stages`)."""
  lines = [line.strip() for line in str(e).splitlines()]
  return " ".join(line for line in lines if line and not line.startswith("In call to configurable"))


if __name__ == "__main__":
  sys.exit(main())
