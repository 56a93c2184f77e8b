"""Evaluation: maj@k / pass@k / rerank@k estimators, `evaluate`, reports and plots."""

from rlthink.evaluation.estimators import maj_at_k, majority_vote, pass_at_k, rerank_at_k
from rlthink.evaluation.evaluate import EvalConfig, evaluate, evaluate_examples
