"""Evaluators, built by name from `config.evals` (`registry`): the train loop calls
evaluator(state, step) -> {metric: value}; each type is made from parameters,
evaluate(params, step), and the registry hands it what `Parts.variables` takes from the state."""
from jaxmm.evaluators.prompts import zero_shot_tasks
from jaxmm.evaluators.zero_shot import ZeroShotTask, accuracy, class_scores, make_evaluator
from jaxmm.evaluators.features import SplitEmbeddings, embed_batches, embed_inputs
from jaxmm.evaluators.frechet import frechet_distance
from jaxmm.evaluators.judge import (Judge, held_out_mask, judge_held_out, judge_samples, make_judge,
                                    real_image_features)
from jaxmm.evaluators.representation import (chosen_labels, make_knn_evaluator,
                                              make_linear_probe_evaluator, make_retrieval_evaluator)
from jaxmm.evaluators.registry import EVALUATORS, Parts, build_evaluators
