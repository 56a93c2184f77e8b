"""Evaluation: maj@k / pass@k / rerank@k estimators, `evaluate` (per split, per example-field
breakdown, per-example predictions), cross-generation, and reports across runs (`tables`)."""

from rlthink.evaluation.estimators import maj_at_k, majority_vote, pass_at_k, rerank_at_k
from rlthink.evaluation.evaluate import (EvalConfig, conditioned_task, evaluate,
                                         evaluate_examples, evaluate_with_predictions,
                                         should_evaluate)
from rlthink.evaluation.predictions import read_predictions, write_predictions
