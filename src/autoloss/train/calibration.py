"""Temperature scaling of the test predictions: calibration compared like with like.

A temperature ``T`` is fitted on the validation split (the logloss of ``logits / T`` minimised);
the test split's metrics then add ``logloss_ts`` (its logloss at that temperature) and
``temperature``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from autoloss.metrics import evaluate as evaluate_logits
from autoloss.metrics import evaluate_logloss, fit_temperature

Predictions = tuple[np.ndarray, np.ndarray]


def scaled_test_metrics(
    valid: Predictions, predict_test: Callable[[], Predictions], task: str
) -> dict[str, float]:
    """The test split's metrics (``predict_test()``'s logits and labels) with the temperature
    fitted on ``valid`` (its logits and labels)."""
    valid_logits, valid_y = valid
    t = fit_temperature(valid_y, valid_logits, task)
    test_logits, test_y = predict_test()
    test = evaluate_logits(test_y, test_logits, task)
    test["logloss_ts"] = evaluate_logloss(test_y, test_logits / t, task)
    test["temperature"] = t
    return test
