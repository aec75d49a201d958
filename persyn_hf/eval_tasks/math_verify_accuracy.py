"""Accuracy of responses against gold answers, checked with math-verify: an `evaluate` metric loaded by path.

>>> import evaluate
>>> from persyn_hf.eval_tasks import METRIC_PATH
>>> metric = evaluate.load(METRIC_PATH)
>>> metric.compute(predictions=["12 + 7 = 19. The answer is 19.", "The answer is 20."], references=["19", "19"])
{'accuracy': 0.5, 'unparseable_gold': 0}
"""

import datasets
import evaluate

from persyn_hf.verify import CORRECT, TIMEOUT, UNPARSEABLE_GOLD, check_answer

_DESCRIPTION = """The share of responses whose final answer math-verify finds equal to the gold answer.
A check that runs out of time counts as wrong, and is counted in `timeouts`; so does a gold answer math-verify
cannot parse, counted in `unparseable_gold` (a data problem to fix, never a free point)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): model responses.
    references (`list[str]`): gold answers.
    timeout_s (`float`, *optional*, defaults to 5.0): time math-verify may take per response.
Returns:
    accuracy (`float`): share of correct responses, in [0, 1].
    timeouts (`int`): checks that ran out of time.
    unparseable_gold (`int`): gold answers math-verify could not parse.
"""


class MathVerifyAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, timeout_s=5.0):
        verdicts = [check_answer(gold, response, timeout_s) for gold, response in zip(references, predictions)]
        return {
            "accuracy": verdicts.count(CORRECT) / len(verdicts),
            "timeouts": verdicts.count(TIMEOUT),
            "unparseable_gold": verdicts.count(UNPARSEABLE_GOLD),
        }
