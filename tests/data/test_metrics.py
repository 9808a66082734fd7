import math

import pytest

from edgeft.data import metrics as M
from edgeft.data.tasks import load_task


def test_glue_metrics_on_known_values():
    assert M.accuracy([1, 0, 1, 1], [1, 0, 0, 1]) == 0.75
    assert M.f1_binary([1, 0, 1, 1], [1, 0, 0, 1]) == pytest.approx(0.8)
    assert M.matthews([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert M.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert M.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_rouge_l_and_final_number():
    assert M.rouge_l(["the cat sat"], ["the cat sat"]) == pytest.approx(1.0)
    assert 0 < M.rouge_l(["the cat"], ["the cat sat on the mat"]) < 1
    assert M.final_number("so 3 + 4 = 7\n#### 7") == "7"
    assert M.final_number("The answer is 1,200.") == "1200"
    assert M.exact_match_number(["it is 72"], ["...\n#### 72"]) == 1.0
    assert M.perplexity(math.log(10) * 5, 5) == pytest.approx(10.0)


def test_task_score_uses_the_main_metric():
    assert "mcc" in load_task("cola").score([1, 0], [1, 0])
    assert "f1" in load_task("mrpc").score([1, 0], [1, 0])


def test_final_number_is_the_one_after_the_marker_not_what_the_model_wrote_next():
    """A model that goes on after '#### 72' (a next question of its own) was scored on that text's last number."""
    answer = "Natalia sold 48/2 = 24 clips.\n#### 72\n\nQuestion: Weng earns $12 an hour for 50 minutes"
    assert M.final_number(answer) == "72"
    assert M.exact_match_number([answer], ["...\n#### 72"]) == 1.0
    assert M.final_number("#### 1,200.") == "1200" and M.final_number("the total is 9, not 8") == "8"
