"""Cross-generation evaluation (START, Li, Pang, Yu 2026): the quality of one model's thinking,
measured apart from its own answer.

A thinker (policy A) writes completions; the thinking span of each (the text between the opening
and the last closing marker) is handed to a reader (policy B, any tokenizer): B's prompt is the
task's prompt followed by `think_open + thinking + think_close`, tokenized piece by piece as SFT
sequences are (`tasks.pipeline.encode_sft`), and B writes the answer. The task's verifier scores
B's answer (on the reconstructed completion, so the usual answer-span rules apply). Readers of
different strengths give a profile of the thinking; the thinker's own accuracy is reported too.

Thinkers can also be "reference" (the task's reference thinking: the readers' ceiling), "empty"
(no thinking: their floor) or a function example -> thinking text. A thinker's completion whose
thinking never closes scores 0 for every reader (`unclosed="zero"`, as the verifier would), or is
closed and handed over as it is (`unclosed="close"`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from rlthink.evaluation.report import write_json
from rlthink.rewards.dense import thinking_bounds
from rlthink.rollout import rollout_examples
from rlthink.sampling import sample
from rlthink.sampling.text import decode_completions
from rlthink.tasks.pipeline import encode_prompt

UNCLOSED = ("zero", "close")


@dataclasses.dataclass(frozen=True)
class CrossGenConfig:
  """num_samples: completions per question from each policy thinker; temperature /
  max_new_tokens: the thinkers' sampling; reader_*: the readers' (greedy by default).
  split / max_examples: the questions `cross_generation_matrix` uses."""

  num_samples: int = 1
  max_new_tokens: int = 128
  temperature: float = 1.0
  reader_max_new_tokens: int = 32
  reader_temperature: float = 0.0
  unclosed: str = "zero"
  split: str = "test"
  max_examples: int | None = 100
  seed: int = 2024
  batch_size: int = 64

  def __post_init__(self):
    if self.unclosed not in UNCLOSED:
      raise ValueError(f"CrossGenConfig.unclosed={self.unclosed!r} is not one of {UNCLOSED}")
    if self.num_samples < 1 or self.max_new_tokens < 1 or self.reader_max_new_tokens < 1:
      raise ValueError(f"CrossGenConfig: num_samples and token budgets must be >= 1: {self}")


@dataclasses.dataclass
class Thoughts:
  """A thinker's output: rows (example index, thinking text or None when unusable), its own
  rewards (None for non-policy thinkers) and the fraction of closed thinking spans."""

  rows: list[tuple[int, str | None]]
  own_rewards: np.ndarray | None
  closed_rate: float


def think(thinker: Any, task, examples: Sequence[dict], cfg: CrossGenConfig) -> Thoughts:
  """The thinking texts of `thinker` (a policy, "reference", "empty" or example -> text)."""
  if not (hasattr(thinker, "params") and hasattr(thinker, "config")):  # not a policy
    if thinker == "reference":
      write = task.thinking
    elif thinker == "empty":
      write = lambda example: ""
    elif callable(thinker):
      write = thinker
    else:
      raise ValueError(f"thinker {thinker!r}: expected a policy, 'reference', 'empty' or a "
                       "function example -> thinking text")
    return Thoughts([(i, write(ex)) for i, ex in enumerate(examples)], None, 1.0)
  scored = rollout_examples(thinker, task, examples, num_samples=cfg.num_samples,
                            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            seed=cfg.seed, batch_size=cfg.batch_size)
  return thoughts_of(scored.texts, cfg.num_samples, task, cfg.unclosed, scored.rewards)


def thoughts_of(texts: Sequence[str], num_samples: int, task, unclosed: str = "zero",
                own_rewards: np.ndarray | None = None) -> Thoughts:
  """The thinking spans of completions already drawn (row i * num_samples + j is sample j of
  example i); an unclosed span is None (`unclosed="zero"`) or kept as it is ("close")."""
  rows, closed = [], 0
  for row, text in enumerate(texts):
    start, end, is_closed = thinking_bounds(text, task.format)
    closed += is_closed
    usable = is_closed or unclosed == "close"
    rows.append((row // num_samples, text[start:end] if usable else None))
  return Thoughts(rows, own_rewards, closed / max(len(texts), 1))


def reader_prompt(task, example: dict, thinking: str, tokenizer) -> list[int]:
  """The reader's prompt ids: the task prompt, then the thinking span closed (piecewise, as in
  `encode_sft`; the opener is left out when the prompt format already opens the thinking)."""
  fmt = task.format
  piece = lambda text: list(tokenizer.encode(text, add_special_tokens=False)) if text else []
  opener = [] if fmt.open_thinking_in_prompt else piece(fmt.think_open)
  return (encode_prompt(task, example, tokenizer).tolist() + opener + piece(thinking)
          + piece(fmt.think_close))


def read(reader, task, examples: Sequence[dict], rows: Sequence[tuple[int, str | None]],
         cfg: CrossGenConfig) -> tuple[np.ndarray, list[str | None]]:
  """(float32[len(rows)] verifier scores of the reader's answers, the answers); rows whose
  thinking is None score 0 without being read."""
  if reader.tokenizer is None:
    raise ValueError("a cross-generation reader needs a policy with a tokenizer attached")
  todo = [r for r, (_, thinking) in enumerate(rows) if thinking is not None]
  scores, answers = np.zeros(len(rows), np.float32), [None] * len(rows)
  for chunk, start in enumerate(range(0, len(todo), cfg.batch_size)):
    part = todo[start:start + cfg.batch_size]
    prompts = [reader_prompt(task, examples[rows[r][0]], rows[r][1], reader.tokenizer)
               for r in part]
    ro = sample(reader, prompts, max_new_tokens=cfg.reader_max_new_tokens,
                temperature=cfg.reader_temperature, seed=cfg.seed + 7 + chunk)
    for r, answer in zip(part, decode_completions(reader.tokenizer, ro)):
      example, thinking = examples[rows[r][0]], rows[r][1]
      answers[r] = answer
      scores[r] = task.verify(task.format.completion(thinking, answer), example)
  return scores, answers


def cross_generation(thinkers: dict[str, Any], readers: dict[str, Any], task,
                     examples: Sequence[dict], cfg: CrossGenConfig | None = None) -> dict:
  """Every thinker's thinking read by every reader.

  Returns {"accuracy": {thinker: {reader: mean verifier score of the reader's answers}},
  "own_accuracy": {thinker: its own answers' accuracy (None unless a policy)},
  "closed_rate": {thinker: fraction of closed thinking spans}, "num_examples": n}.
  """
  cfg = cfg or CrossGenConfig()
  examples = list(examples)
  out = {"accuracy": {}, "own_accuracy": {}, "closed_rate": {}, "num_examples": len(examples)}
  for name, thinker in thinkers.items():
    thoughts = think(thinker, task, examples, cfg)
    out["own_accuracy"][name] = (None if thoughts.own_rewards is None
                                 else float(np.mean(thoughts.own_rewards)))
    out["closed_rate"][name] = thoughts.closed_rate
    out["accuracy"][name] = {reader_name: float(np.mean(read(reader, task, examples,
                                                             thoughts.rows, cfg)[0]))
                             for reader_name, reader in readers.items()}
  return out


def cross_generation_matrix(thinkers: dict[str, Any], readers: dict[str, Any], task,
                            cfg: CrossGenConfig | None = None) -> dict:
  """`cross_generation` over the first `cfg.max_examples` examples of `cfg.split` (what
  `rlthink eval --cross_generation` runs); the result also names the "split"."""
  cfg = cfg or CrossGenConfig()
  source = task.examples(task.check_split(cfg.split))
  count = len(source) if cfg.max_examples is None else min(cfg.max_examples, len(source))
  result = cross_generation(thinkers, readers, task, [source[i] for i in range(count)], cfg)
  return dict(result, split=cfg.split)


def cross_generation_markdown(result: dict) -> str:
  """A thinker x reader table of the readers' accuracy, with each thinker's own accuracy and
  closed-thinking rate."""
  readers = list(next(iter(result["accuracy"].values()), {}))
  fmt = lambda v: "-" if v is None else f"{v:.3f}"
  lines = [f"Cross-generation ({result.get('split', '?')}, {result['num_examples']} examples): "
           "rows think, columns read and answer.", "",
           "| thinker | " + " | ".join(readers) + " | own answers | closed thinking |",
           "|---|" + "---|" * (len(readers) + 2)]
  for thinker, row in result["accuracy"].items():
    cells = [fmt(row[r]) for r in readers]
    cells += [fmt(result["own_accuracy"][thinker]), fmt(result["closed_rate"][thinker])]
    lines.append(f"| {thinker} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_cross_generation(result: dict, directory: str,
                           name: str = "cross_generation") -> dict[str, str]:
  """Writes `<name>.json`, `<name>.md` and `<name>.png` (the heatmap) under `directory`;
  returns {"json", "markdown", "png"}: their paths."""
  os.makedirs(directory, exist_ok=True)
  paths = {ext: os.path.join(directory, f"{name}.{suffix}")
           for ext, suffix in (("json", "json"), ("markdown", "md"), ("png", "png"))}
  write_json(paths["json"], result)
  with open(paths["markdown"], "w") as f:
    f.write(cross_generation_markdown(result))
  import matplotlib.pyplot as plt  # heavy: matplotlib loads only when plotting
  plt.close(plot_cross_generation(result, paths["png"]))
  return paths


def plot_cross_generation(result: dict, path: str | None = None, title: str = "cross-generation"):
  """A thinker x reader heatmap of the readers' accuracy; saved as PNG when `path` is given.
  Returns the matplotlib figure (close it, or show it in a notebook)."""
  import matplotlib.pyplot as plt  # heavy: matplotlib loads only when plotting
  thinkers = list(result["accuracy"])
  readers = list(next(iter(result["accuracy"].values())))
  grid = np.asarray([[result["accuracy"][t][r] for r in readers] for t in thinkers])
  fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(readers), 1.2 + 0.6 * len(thinkers)))
  ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
  ax.set_xticks(range(len(readers)), [f"reader: {r}" for r in readers], fontsize=7, rotation=20,
                ha="right")
  ax.set_yticks(range(len(thinkers)), [f"thinker: {t}" for t in thinkers], fontsize=7)
  for (i, j), v in np.ndenumerate(grid):
    ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 else "k")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  if path is not None:
    fig.savefig(path, dpi=120)
  return fig
