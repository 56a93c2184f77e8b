"""Experiments: named stages in a graph (each with its algorithm, parent, data and gin scope),
run, resumed and evaluated in a workdir; seed sweeps over whole experiments.

    exp = Experiment(task="arithmetic", stages=[
        {"name": "sft", "algorithm": "sft"},
        {"name": "ei", "algorithm": "ei", "parent": "sft"},
        {"name": "grpo", "algorithm": "grpo", "parent": "sft"},
    ])
    results = rlthink.experiment.run("runs/arms", exp)     # {stage: {split: metrics}}
"""

from rlthink.experiment.fingerprint import StageChangedError
from rlthink.experiment.params import (attach_tokenizer, build_policy, check_stage_checkpoints,
                                       load_stage_params)
from rlthink.experiment.runner import Experiment, evaluate_run, plan, run
from rlthink.experiment.spec import ExperimentError, Mixture, Stage, parse_stages

__all__ = ["Experiment", "ExperimentError", "Mixture", "Stage", "StageChangedError",
           "attach_tokenizer", "build_policy", "check_stage_checkpoints", "evaluate_run",
           "load_stage_params", "parse_stages", "plan", "run"]
