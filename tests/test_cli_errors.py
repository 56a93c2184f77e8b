"""Errors reach the user as one line naming the command (a traceback only with --debug or
RLTHINK_DEBUG=1), and `convert` never destroys a directory or exports random weights by
accident."""

import os

import pytest

import rlthink
from rlthink import cli, locks
from rlthink.models.tokenizer import builtin_tokenizer
from rlthink.train.step import NonFiniteLossError


@pytest.fixture(autouse=True)
def _restore_global_state(monkeypatch, cli_state):
  monkeypatch.delenv("RLTHINK_DEBUG", raising=False)



def _main(argv, capsys):
  code = cli.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


@pytest.mark.parametrize("error, status, line", [
    (ZeroDivisionError("division by zero"), 1,
     "rlthink data: error: ZeroDivisionError: division by zero (--debug shows the traceback)"),
    (TypeError("'<' not supported"), 1,
     "rlthink data: error: TypeError: '<' not supported (--debug shows the traceback)"),
    (ValueError("max() arg is an empty sequence"), 2,
     "rlthink data: error: max() arg is an empty sequence"),
    (NonFiniteLossError("training became non-finite at step 3:\nloss nan"), 1,
     "rlthink data: error: training became non-finite at step 3: loss nan"),
    (locks.LockHeldError("workdir W is in use by process 7 on host h", {}), 2,
     "rlthink data: error: workdir W is in use by process 7 on host h"),
])
def test_every_error_is_one_line_naming_the_command(monkeypatch, capsys, error, status, line):
  def fail(args):
    raise error
  monkeypatch.setitem(cli.COMMANDS, "data", fail)
  code, out, err = _main(["data", "build", "arithmetic"], capsys)
  assert (code, out, err) == (status, "", line + "\n")
  with pytest.raises(type(error)):  # --debug: the traceback, before or after the command
    cli.main(["data", "build", "arithmetic", "--debug"])
  with pytest.raises(type(error)):
    cli.main(["--debug", "data", "build", "arithmetic"])
  monkeypatch.setenv("RLTHINK_DEBUG", "1")
  with pytest.raises(type(error)):
    cli.main(["data", "build", "arithmetic"])


def test_convert_refuses_a_non_empty_out_before_loading_anything(tmp_path, capsys):
  out = tmp_path / "export"
  out.mkdir()
  (out / "config.json").write_text("{}")
  (out / "notes.txt").write_text("mine")
  code, _, err = _main(["convert", "--gin_param", "ModelSpec.hf_path = '/nonexistent'",
                        "--out", out], capsys)
  assert code == 2 and err.count("\n") == 1
  assert "is not empty (2 entries); pass overwrite=True (rlthink convert --overwrite)" in err
  assert sorted(os.listdir(out)) == ["config.json", "notes.txt"]


@pytest.mark.parametrize("flags, message", [
    ([], "nothing to export: give --workdir W --stage STAGE"),
    (["--stage", "sft"], "--stage needs --workdir"),
    (["--workdir", "W"], "--workdir needs --stage"),
])
def test_convert_without_a_checkpoint_or_a_model_is_an_error(tmp_path, capsys, flags, message):
  flags = [str(tmp_path / f) if f == "W" else f for f in flags]
  code, _, err = _main(["convert", "--gin_file", "models/tiny.gin", *flags,
                        "--out", tmp_path / "out"], capsys)
  assert code == 2 and message in err and err.count("\n") == 1
  assert not (tmp_path / "out").exists()


def test_convert_of_a_model_overwrites_only_with_overwrite(tmp_path, capsys):
  source = tmp_path / "source"
  rlthink.init_policy("tiny", seed=0, num_layers=1, tokenizer=builtin_tokenizer()
                      ).save_pretrained(str(source))
  args = ["convert", "--gin_param", f"ModelSpec.hf_path = '{source}'",
          "--gin_param", "ModelSpec.dtype = 'bfloat16'", "--out", tmp_path / "out"]
  code, out, err = _main(args, capsys)
  assert code == 0, err
  assert "config.json" in os.listdir(tmp_path / "out")
  code, _, err = _main(args, capsys)
  assert code == 2 and "--overwrite" in err
  code, _, err = _main(args + ["--overwrite"], capsys)
  assert code == 0, err
