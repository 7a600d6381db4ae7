"""The generic training loop: state, step builder, optimizer, checkpoints, metrics."""
from jaxmm.train.loop import Evaluator, build_step, init_rng, run
from jaxmm.train.optim import make_optimizer, make_schedule
from jaxmm.train.state import TrainState, abstract_state, init_state, state_shardings
from jaxmm.train.step import compile_train_step, make_train_step
