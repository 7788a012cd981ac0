"""The runner: ``generation`` (checkpoint × benchmarks → generations) and ``judging`` (the verdicts stored
generations lack), both batched, resumable and writing through the store only."""

from capsafe_core.runner.generation import RunResult, RunSpec, decoding_from_options, run_checkpoint, run_spec
from capsafe_core.runner.judging import JudgeResult, evaluator_plan, judge, judge_options, judge_stored

__all__ = [
    "JudgeResult",
    "RunResult",
    "RunSpec",
    "decoding_from_options",
    "evaluator_plan",
    "judge",
    "judge_options",
    "judge_stored",
    "run_checkpoint",
    "run_spec",
]
