"""gin at the edge: parse --gin_file / --gin_param strictly, and the dataclasses gin binds.

gin only ever fills in dataclass specs here (`ModelSpec`, `MeshSpec`, ... ) at start-up; the specs
are then passed as plain values into pure code, and nothing inside jitted code reads gin.

    gin_utils.parse(["experiments/quickstart.gin"], ["ModelSpec.preset = 'qwen2.5-0.5b'"])
    mesh = gin_utils.MeshSpec().build()
    policy = gin_utils.ModelSpec().build(mesh)

`parse` checks every binding before any compute: an unknown configurable or parameter, a syntax
error or a missing file raises one `GinConfigError` that names the file and line (or the
--gin_param) and the binding, and suggests the nearest known name. Files are looked up relative to
the working directory, then to each extra search path (`--gin_search_path`), then to the configs
shipped inside the package (`rlthink/configs/`, which the repository's top-level `configs/` links
to), so `include 'models/tiny.gin'` works from any gin file and any working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import contextlib
import inspect
import os
import re
import tokenize
from typing import Sequence

import gin

from rlthink import algorithms, policy, sharding
from rlthink.models.config import DTYPES, ModelConfig
from rlthink.models.presets import PRESETS, get_preset

# The gin files shipped with the package (package data, so a wheel install has them too).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

# Modules whose classes are `@gin.configurable` themselves (the specs below, the experiment);
# `register_configurables` imports them before parsing.
CONFIGURABLE_MODULES: tuple[str, ...] = (
    "rlthink.gin_utils",
    "rlthink.experiment",
)

# Plain config dataclasses ("module:Class"), bound by their class name (`OptimizerConfig.x = ...`)
# once `register_configurables` registers them; every algorithm's config (`ALGORITHMS`) is bound
# too. Add a config class here when it should be bindable.
CONFIG_CLASSES: tuple[str, ...] = (
    "rlthink.sampling.config:SampleConfig",
    "rlthink.train.optim:OptimizerConfig",
    "rlthink.train.metrics:LoggingConfig",
    "rlthink.models.lora:LoRAConfig",
    "rlthink.evaluation.evaluate:EvalConfig",
    "rlthink.evaluation.rerank:RerankConfig",
    "rlthink.evaluation.cross_generation:CrossGenConfig",
)


class GinConfigError(ValueError):
  """A gin file or binding that cannot be used; the message names the file/line and the binding."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Which model to build: a preset (random init) or a local Hugging Face directory.

  Attributes:
    preset: a name from `rlthink.models.presets.PRESETS` (ignored when `hf_path` is set).
    hf_path: a local Hugging Face directory (config.json + safetensors) to load instead.
    overrides: ModelConfig fields to replace, e.g. {"num_layers": 2, "remat": True}.
    dtype: the compute dtype ("float32", "bfloat16", "float16"); None keeps the config's.
    seed: parameter-init seed for presets.
  """

  preset: str = "tiny"
  hf_path: str | None = None
  overrides: dict = dataclasses.field(default_factory=dict)
  dtype: str | None = None
  seed: int = 0

  def __post_init__(self):
    if self.hf_path is None and self.preset not in PRESETS:
      raise ValueError(f"ModelSpec.preset={self.preset!r} is not a known preset; known presets: "
                       f"{sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(self.overrides) - fields)
    if unknown:
      raise ValueError(f"ModelSpec.overrides has unknown ModelConfig fields {unknown}"
                       f"{_suggest(unknown[0], fields)}")
    if self.dtype is not None and self.dtype not in DTYPES:
      raise ValueError(f"ModelSpec.dtype={self.dtype!r} is not one of {DTYPES}")

  def config(self):
    """The ModelConfig this spec builds (with overrides and dtype applied); for an hf_path spec,
    read from its config.json (no weights are read)."""
    if self.hf_path is not None:
      from rlthink.models import hf  # heavy: transformers loads only for an hf_path model
      return hf.read_config(self.hf_path).replace(**self._changes())
    return get_preset(self.preset, **self._changes())

  def build(self, mesh=None):
    """The `Policy`: `load_pretrained(hf_path)` or `init_policy(preset)`, on `mesh`."""
    if self.hf_path is not None:
      return policy.load_pretrained(self.hf_path, mesh=mesh, dtype=self.dtype,
                                    **dict(self.overrides))
    return policy.init_policy(self.preset, seed=self.seed, mesh=mesh, **self._changes())

  def _changes(self) -> dict:
    changes = dict(self.overrides)
    if self.dtype is not None:
      changes["dtype"] = self.dtype
    return changes


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshSpec:
  """The (data, fsdp, tensor) device mesh. `shape=None`: chosen from the device count and the
  model (`sharding.auto_mesh_shape`: FSDP first, tensor parallelism when the heads allow, data
  parallelism once the train state fits), or every device on fsdp when no model is given."""

  shape: tuple | None = None

  def __post_init__(self):
    if self.shape is not None:
      shape = tuple(self.shape)
      if len(shape) != 3 or not all(isinstance(s, int) for s in shape):
        raise ValueError(f"MeshSpec.shape={self.shape!r} must be 3 ints (data, fsdp, tensor), "
                         "one of them may be -1")
      object.__setattr__(self, "shape", shape)

  def build(self, devices=None, config=None):
    """The Mesh over `devices` (default all); `config` (a ModelConfig) picks the automatic shape
    and checks a given one against the model's dimensions."""
    return sharding.make_mesh(self.shape, devices, config=config)


# The files, bindings and search paths of the last `parse`, for `where_bound`'s messages.
_PARSED: dict = {"files": (), "params": (), "search_paths": (CONFIGS_DIR,)}

# Specs that `parse` instantiates once after parsing, so bad values fail before any compute.
_SPECS = (ModelSpec, MeshSpec)


def register_configurables() -> None:
  """Imports every module in `CONFIGURABLE_MODULES` and registers every class of `CONFIG_CLASSES`
  and every algorithm's config, so all of them can be bound."""
  for name in CONFIGURABLE_MODULES:
    importlib.import_module(name)
  targets = CONFIG_CLASSES + tuple(a.config for a in algorithms.ALGORITHMS.values())
  for target in dict.fromkeys(targets):
    module, attr = target.split(":")
    register_config(getattr(importlib.import_module(module), attr))


def search_path(extra: Sequence[str] = ()) -> tuple[str, ...]:
  """Where relative gin file names are looked up, in order: the working directory, `extra` (the
  user's `--gin_search_path` folders), then the packaged configs (`CONFIGS_DIR`).

  Raises:
    GinConfigError: an `extra` folder that does not exist.
  """
  for path in extra:
    if not os.path.isdir(path):
      raise GinConfigError(f"--gin_search_path {path!r} is not a directory")
  return (os.getcwd(), *(os.path.abspath(p) for p in extra), CONFIGS_DIR)


def parse(gin_files: Sequence[str], gin_params: Sequence[str],
          search_paths: Sequence[str] | None = None) -> None:
  """Parses gin files then bindings (later ones win) and locks the config.

  Any earlier config is cleared first. Relative file names (and `include`s) are looked up in
  `search_paths`, by default `search_path()`: the cwd, then the packaged configs.

  Raises:
    GinConfigError: a file is missing or malformed, or a binding names an unknown configurable or
      parameter, or a spec gets a bad value; the message names the file:line or the --gin_param.
  """
  register_configurables()
  gin.clear_config(clear_constants=True)
  paths = tuple(search_paths) if search_paths is not None else search_path()
  _PARSED.update(files=tuple(gin_files), params=tuple(gin_params), search_paths=paths)
  for path in gin_files:
    try:
      with _plain_file_lookup(paths):
        gin.parse_config_file(path)
    except (OSError, IOError) as e:
      raise GinConfigError(f"{path}: cannot read gin file ({e})") from None
    except (ValueError, SyntaxError, tokenize.TokenError) as e:
      raise GinConfigError(_describe(e, source=path)) from None
  for param in gin_params:
    try:
      gin.parse_config(param)
    except (ValueError, SyntaxError, tokenize.TokenError) as e:
      raise GinConfigError(_describe(e, source=f"--gin_param {param!r}")) from None
  gin.finalize()
  for spec in _SPECS:  # bind-time value checks (cheap: builds the dataclasses, no arrays)
    try:
      spec()
    except (ValueError, TypeError) as e:
      where = _where_bound(spec.__name__, gin_files, gin_params)
      raise GinConfigError(f"{where}{str(e).splitlines()[0]}") from None


# Plain config dataclasses registered with gin here (`register_config`), by class.
_CONFIGURABLES: dict[type, object] = {}


def register_config(cls: type) -> type:
  """Makes the plain dataclass `cls` bindable as `<cls.__name__>.<field>` (once)."""
  if cls not in _CONFIGURABLES:
    _CONFIGURABLES[cls] = gin.external_configurable(cls, name=cls.__name__)
  return cls


def configured(cls: type):
  """An instance of the config dataclass `cls` built from the gin bindings of the current scope
  (`with gin.config_scope('rl_comp'): configured(GRPOConfig)` also applies `rl_comp/GRPOConfig.*`
  bindings, and unscoped ones apply in every scope); a class decorated with `@gin.configurable`
  itself is simply called.

  Raises:
    GinConfigError: a bound value the class refuses; one line naming the class, the scope, where
      it was bound and the class's own message (which names the field and value).
  """
  try:
    return _CONFIGURABLES[cls]() if cls in _CONFIGURABLES else cls()
  except (ValueError, TypeError) as e:
    scope = gin.current_scope_str()
    where = where_bound(cls.__name__)
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    if cls.__name__ not in message:
      message = f"{cls.__name__}: {message}"
    raise GinConfigError(f"{where + ': ' if where else ''}{message}"
                         f"{f' (in gin scope {scope!r})' if scope else ''}") from None


def where_bound(configurable: str) -> str | None:
  """"file:line" (or "--gin_param '...'") of the last binding of `configurable` in the last
  `parse`, for error messages; None when it is not bound there."""
  where = _where_bound(configurable, _PARSED["files"], _PARSED["params"])
  return where.rstrip(": ") or None


def config_str() -> str:
  """Every binding parsed so far, as gin text."""
  return gin.config_str()


def operative_config_str() -> str:
  """The bindings that were actually used so far, as gin text (save it into the workdir)."""
  return gin.operative_config_str()


@contextlib.contextmanager
def _plain_file_lookup(search_paths: Sequence[str]):
  """Makes gin look files up as plain paths only (each of `search_paths` + name, then `open`).

  gin keeps its search paths in a module global that only grows; setting them for the duration of
  one `parse` keeps an earlier parse's `--gin_search_path` out of the next. gin's second reader
  also treats 'models/tiny.gin' as a file inside a Python package `models`, which crashes when
  some directory named `models` on sys.path is a namespace package.
  """
  readers = getattr(gin.config, "_FILE_READERS", None)
  prefixes = getattr(gin.config, "_LOCATION_PREFIXES", None)
  if not isinstance(readers, list) or not isinstance(prefixes, list):
    for path in search_paths:  # other gin versions: keep their lookup, add the paths
      if path not in (prefixes or ()):
        gin.add_config_file_search_path(path)
    yield
    return
  saved_readers, saved_prefixes = list(readers), list(prefixes)
  readers[:] = [(open, os.path.isfile)]
  prefixes[:] = ["", *search_paths]
  try:
    yield
  finally:
    readers[:], prefixes[:] = saved_readers, saved_prefixes


def config_names(search_paths: Sequence[str] = (CONFIGS_DIR,)) -> dict[str, list[str]]:
  """The gin files under each folder of `search_paths` by kind (the first-level folder:
  "experiments", "models", "algorithms", "mesh"), as the names `--gin_file` takes
  ("experiments/quickstart.gin"); a name found in two paths is listed once."""
  kinds: dict[str, set[str]] = {}
  for root in search_paths:
    for folder, _, names in os.walk(root):
      for name in names:
        if name.endswith(".gin"):
          rel = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
          kind = rel.split("/")[0] if "/" in rel else ""
          kinds.setdefault(kind, set()).add(rel)
  return {kind: sorted(names) for kind, names in sorted(kinds.items())}


# ------------------------------------------------------------------------------------------------
# Error messages.

_LOCATION = re.compile(r'In file "(?P<file>[^"]+)", line (?P<line>\d+)\n\s*(?P<text>.*)')
_BINDINGS = re.compile(r"In bindings string line \d+\n\s*(?P<text>.*)")


def _describe(e: Exception, source: str) -> str:
  """One line `file:line: problem 'binding' (gin's words) hint` from a gin parse exception."""
  message = str(e)
  where, text = source, None
  if isinstance(e, SyntaxError) and e.filename:
    where, text = f"{e.filename}:{e.lineno}", (e.text or "").strip()
  elif (m := _LOCATION.search(message)):
    where, text = f"{m['file']}:{m['line']}", m["text"].strip()
  elif (m := _BINDINGS.search(message)):
    text = m["text"].strip()
  if isinstance(e, tokenize.TokenError):
    return f"{where}: gin syntax error ({e.args[0]}) in {source}"
  if isinstance(e, SyntaxError):
    return f"{where}: gin syntax error ({e.msg}): {text!r}"
  first = message.splitlines()[0].rstrip(".") if message else type(e).__name__
  binding = text.split("=")[0].strip() if text else None
  unknown = "doesn't have a parameter named" in first or "No configurable matching '" in first
  label = f"{'unknown' if unknown else 'bad'} binding" + (f" {binding!r}" if binding else "")
  return f"{where}: {label}: {first}{_hint(first)}"


def _hint(gin_message: str) -> str:
  """' Did you mean ...?' for gin's unknown-parameter / unknown-configurable messages."""
  if (m := re.search(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'",
                     gin_message)):
    params = _parameters_of(m[1])
    return _suggest(m[2], params) + (f"; its parameters: {sorted(params)}" if params else "")
  if (m := re.search(r"No configurable matching '([^']+)'", gin_message)):
    names = _configurable_names()
    return _suggest(m[1], names) + f"; registered configurables: {sorted(names)}"
  return ""


def _configurable_names() -> set[str]:
  try:
    return {c.name for _, c in gin.config._REGISTRY.items()
            if c.module != "gin" and not c.module.startswith("gin.")}
  except Exception:  # a hint only: gin internals may differ between versions
    return set()


def _parameters_of(name: str) -> set[str]:
  try:
    target = gin.config._REGISTRY.get_match(name).wrapped
    return set(inspect.signature(target).parameters) - {"self"}
  except Exception:  # a hint only: gin internals may differ between versions
    return set()


def _suggest(name: str, candidates) -> str:
  close = difflib.get_close_matches(name, list(candidates), n=1)
  return f". Did you mean {close[0]!r}?" if close else ""


def _where_bound(configurable: str, gin_files: Sequence[str], gin_params: Sequence[str]) -> str:
  """'file:line: ' (or "--gin_param '...': ") of the last binding of `configurable`, if found."""
  pattern = re.compile(rf"^\s*([\w./]+/)?(\w+\.)*{configurable}\.\w+\s*=")
  where = ""
  roots = [""] + [p for p in _PARSED["search_paths"] if p != os.getcwd()]
  for path in gin_files:
    for candidate in (os.path.join(root, path) for root in roots):
      if os.path.isfile(candidate):
        with open(candidate, encoding="utf-8") as f:
          for i, line in enumerate(f, 1):
            if pattern.match(line):
              where = f"{path}:{i}: "
        break
  for param in gin_params:
    if pattern.match(param):
      where = f"--gin_param {param!r}: "
  return where
