"""MetricsLogger: plain log lines without a progress bar, and the optional W&B writer (a fake
`wandb` module here: the real one is an optional extra)."""

import logging
import sys
import types

import jax.numpy as jnp
import pytest

from rlthink.train import metrics
from rlthink.train.metrics import LoggingConfig, MetricsLogger
from rlthink.train.optim import OptimizerConfig, learning_rate_of, make_optimizer


def _lines(caplog):
  return [r.getMessage() for r in caplog.records if r.name == "rlthink.train"]


def test_without_a_terminal_it_logs_plain_lines_with_loss_lr_rates_and_eta(tmp_path, caplog):
  caplog.set_level(logging.INFO, logger="rlthink.train")
  # progress=True, but stderr is not a terminal under pytest: lines, not a bar
  logger = MetricsLogger(str(tmp_path), total=20, desc="sft", config=LoggingConfig(3600))
  for step in range(1, 11):
    logger.log(step, {"loss": 2.0 - step / 10, "tokens": 100.0, "grad_norm": 1.0}, "sft/")
  first = logger.report(10, learning_rate=lambda: 3e-3)
  for step in range(11, 16):
    logger.log(step, {"loss": 1.0, "tokens": 100.0}, "sft/")
  assert logger.report(15) is None  # not due: line_every_s not passed
  for step in range(16, 21):
    logger.log(step, {"loss": 0.5, "tokens": 100.0, "reward_mean": 0.25}, "sft/")
  last = logger.report(20)
  logger.close()
  assert _lines(caplog) == [first, last]
  assert first.startswith("sft step 10/20 | loss 1 | lr 3.00e-03 | ") and "ETA 0:00:" in first
  assert "tok/s | " in first and " s/step" in first
  assert last.startswith("sft step 20/20 | loss 0.5 | reward_mean 0.25 | ")
  assert "ETA" not in last


def test_learning_rate_of_reads_the_schedule_of_the_last_step():
  cfg = OptimizerConfig(learning_rate=1e-2, warmup_steps=10, schedule="constant")
  opt = make_optimizer(cfg, 100)
  params = {"w": jnp.zeros(3)}
  state = types.SimpleNamespace(opt_state=opt.init(params))
  for _ in range(5):
    _, state.opt_state = opt.update({"w": jnp.ones(3)}, state.opt_state, params)
  assert learning_rate_of(cfg)(state) == pytest.approx(1e-2 * 4 / 10)  # step 5 ran at count 4


@pytest.fixture
def fake_wandb(monkeypatch):
  calls = []

  class Run:
    def log(self, values, step):
      calls.append(("log", step, dict(values)))

    def finish(self):
      calls.append(("finish",))

  module = types.ModuleType("wandb")
  module.init = lambda **kwargs: calls.append(("init", kwargs)) or Run()
  monkeypatch.setitem(sys.modules, "wandb", module)
  return calls


def test_wandb_writer_logs_each_new_record_once_at_its_step(tmp_path, fake_wandb):
  config = LoggingConfig(wandb_project="rlthink-test")
  with metrics.using(config):  # what the experiment runner does with the gin-bound config
    logger = MetricsLogger(str(tmp_path / "run" / "sft"), progress=False)
  logger.log(1, {"loss": 2.0}, "sft/")
  logger.log(2, {"loss": 1.5}, "sft/")
  logger.close()
  resumed = MetricsLogger(str(tmp_path / "run" / "sft"), progress=False, config=config)
  resumed.log(2, {"loss": 1.5}, "sft/")  # repeated after a resume: already written
  resumed.log(3, {"loss": 1.0}, "sft/")
  resumed.close()
  (_, first), *_ = fake_wandb
  assert first["project"] == "rlthink-test" and first["resume"] == "allow"
  assert (first["group"], first["name"]) == ("run", "sft")
  assert fake_wandb[1:] == [("log", 1, {"sft/loss": 2.0}), ("log", 2, {"sft/loss": 1.5}),
                            ("finish",), ("init", first), ("log", 3, {"sft/loss": 1.0}),
                            ("finish",)]


def test_wandb_is_off_by_default_and_never_imported(tmp_path, monkeypatch):
  monkeypatch.delitem(sys.modules, "wandb", raising=False)
  logger = MetricsLogger(str(tmp_path), progress=False)
  logger.log(1, {"loss": 1.0})
  logger.close()
  assert "wandb" not in sys.modules


def test_wandb_on_but_not_installed_is_one_clear_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
  with pytest.raises(ValueError, match=r"^LoggingConfig.wandb_project is set but wandb is not "
                     r"installed: pip install 'rlthink\[wandb\]'"):
    with metrics.using(LoggingConfig(wandb_project="p")):
      pass  # entering the block is what must fail


def test_a_notebook_without_ipywidgets_gets_the_text_bar_without_a_warning(monkeypatch, recwarn):
  import tqdm
  monkeypatch.setattr(metrics, "_in_notebook", lambda: True)
  monkeypatch.setattr(metrics.importlib.util, "find_spec",
                      lambda name: None if name == "ipywidgets" else object())
  bar = metrics._bar_class()(total=3, disable=True)
  assert type(bar) is tqdm.std.tqdm
  assert not [w for w in recwarn if "IProgress" in str(w.message)]
