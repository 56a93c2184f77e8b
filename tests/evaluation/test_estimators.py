import itertools

import numpy as np
import pytest

from rlthink.evaluation.estimators import maj_at_k, majority_vote, pass_at_k, rerank_at_k


def brute_force_pass_at_k(correct, k):
  subsets = list(itertools.combinations(range(len(correct)), k))
  return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("seed", range(40))
def test_pass_at_k_equals_enumeration_over_all_k_subsets(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(1, 11))
  correct = list(rng.random(n) < rng.random())
  for k in range(1, n + 1):
    assert pass_at_k(n, sum(correct), k) == pytest.approx(brute_force_pass_at_k(correct, k),
                                                          abs=1e-12)


def test_pass_at_k_edge_cases_and_bad_input():
  assert pass_at_k(96, 0, 96) == 0.0
  assert pass_at_k(96, 1, 96) == 1.0
  assert pass_at_k(1000, 3, 1) == pytest.approx(0.003)
  with pytest.raises(ValueError, match="k <= n"):
    pass_at_k(4, 1, 5)
  with pytest.raises(ValueError):
    pass_at_k(4, 5, 1)


def test_majority_vote_ties_go_to_earliest_first_occurrence():
  assert majority_vote(["7", "5", "5", "7"]) == "7"
  assert majority_vote(["5", "7", "7", "5"]) == "5"
  assert majority_vote([None, "3", None, "4", "4"]) == "4"
  assert majority_vote([None, None]) is None


def test_maj_at_k_uses_first_k_samples():
  answers = ["1", "2", "2", "1", "1"]
  correct = [a == "1" for a in answers]
  assert maj_at_k(answers, correct, 1) == 1.0
  assert maj_at_k(answers, correct, 3) == 0.0
  assert maj_at_k(answers, correct, 5) == 1.0
  assert maj_at_k([None, None], [False, False], 2) == 0.0


def test_rerank_picks_highest_score_earliest_on_ties():
  assert rerank_at_k([0.1, 0.9, 0.9], [False, True, False], 3) == 1.0
  assert rerank_at_k([0.1, 0.9, 0.9], [False, True, False], 1) == 0.0
