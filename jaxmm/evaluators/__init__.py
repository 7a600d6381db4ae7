"""Evaluators: callables (params, step) -> {metric: value}, run by the train loop."""
from jaxmm.evaluators.prompts import zero_shot_tasks
from jaxmm.evaluators.zero_shot import ZeroShotTask, accuracy, class_scores, make_evaluator
