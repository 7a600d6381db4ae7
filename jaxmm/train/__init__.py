"""The generic training loop: state, step builder, optimizer, checkpoints, metrics."""
from jaxmm.train.loop import Evaluator, build_step, check_config, init_rng, run, train
from jaxmm.train.nonfinite import Diverged
from jaxmm.train.optim import check_optim_config, make_optimizer, make_schedule
from jaxmm.train.state import TrainState, abstract_state, init_state, state_shardings
from jaxmm.train.step import compile_train_step, make_train_step
