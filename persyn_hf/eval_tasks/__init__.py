"""lm-eval tasks and the math-verify accuracy metric shipped with persyn-hf.

`TASKS_DIR` is passed to `lm_eval.tasks.TaskManager(include_path=...)`; it holds
`persyn_heldout` (a held-out split of prompts with gold answers, e.g. the demo world's test split) and
`svamp` (SVAMP, which lm-eval does not ship); both judge answers with math-verify (`persyn_hf.verify`) and keep
each problem's verdict in lm-eval's logged samples. `METRIC_PATH` is the same check as an `evaluate` metric, for
scoring responses outside lm-eval.
"""

from pathlib import Path

TASKS_DIR = str(Path(__file__).parent)
METRIC_PATH = str(Path(__file__).with_name("math_verify_accuracy.py"))
