"""LiT: a new run copies a subtree of another run's parameters once and keeps it frozen."""
import os
import shutil

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest

from jaxmm import analysis
from jaxmm import config_loading
from jaxmm.errors import UserError
from jaxmm.models import get_model
from jaxmm.train import init_from
from jaxmm.train import model_init
from jaxmm.train import partition
from jaxmm.train.state import TrainState

LOCKED = "image_tower"


@pytest.fixture(scope="module")
def source(tiny_siglip_run):
  """A finished two-step SigLIP run: the workdir that LiT runs copy their image tower from."""
  return tiny_siglip_run


def lit_config(tiny_config, shapes_data_dir, source, *overrides):
  config = tiny_config("siglip", "seed=1", "checkpoint_every=1", "eval_every=0",
                       "ema.decays=(0.9,)", f"data.data_dir={shapes_data_dir}", *overrides)
  config.init_from.workdir = source
  config.init_from.subtrees = {LOCKED: LOCKED}
  config.optim.partition = ((f"{LOCKED}/.*", "frozen"),)
  return config


def assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def nbytes(tree):
  return sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(tree))


def test_copied_tower_stays_frozen_while_the_rest_trains(tiny_config, shapes_data_dir, source,
                                                         run_image_text, tmp_path):
  config = lit_config(tiny_config, shapes_data_dir, source, "total_steps=3")
  run_image_text(config, str(tmp_path / "lit"))
  lit, first, trained = (analysis.load_run(str(tmp_path / "lit"), step=1),
                         analysis.load_run(source), analysis.load_run(str(tmp_path / "lit")))
  assert trained.step == 3
  assert_trees_equal(trained.params[LOCKED], first.params[LOCKED])
  assert_trees_equal(trained.ema["decay_0.9"][LOCKED], first.params[LOCKED])
  for before, after in zip(jax.tree.leaves(lit.params["text_tower"]),
                           jax.tree.leaves(trained.params["text_tower"])):
    assert not np.array_equal(before, after)
  # The frozen tower keeps no AdamW moments: the source run's state is larger by two copies.
  assert (nbytes(first.opt_state) - nbytes(trained.opt_state) == 2 * nbytes(
      first.params[LOCKED]))


@pytest.mark.slow  # two more runs
def test_resume_does_not_copy_again(tiny_config, shapes_data_dir, source, run_image_text,
                                    tmp_path):
  moved = str(tmp_path / "source")
  shutil.copytree(source, moved)
  workdir = str(tmp_path / "lit")
  config = lit_config(tiny_config, shapes_data_dir, moved, "total_steps=2")
  config.optim.partition = ()  # the copied tower trains, so a second copy would show
  run_image_text(config, workdir)
  shutil.rmtree(moved)  # copying again would now fail
  config.total_steps = 3
  run_image_text(config, workdir)
  resumed, first = analysis.load_run(workdir), analysis.load_run(source)
  assert resumed.step == 3
  for copied, trained in zip(jax.tree.leaves(first.params[LOCKED]),
                             jax.tree.leaves(resumed.params[LOCKED])):
    assert not np.array_equal(copied, trained)


def host_state(params):
  """A TrainState of host arrays and its shardings, enough for `init_from.apply`."""
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  state = TrainState(step=0, params=params, opt_state={}, model_state={}, ema={}, skipped_steps=0)
  return state, state.replace(params=jax.tree.map(lambda _: sharding, params))


def spec(workdir, subtrees, step=None):
  return ml_collections.ConfigDict(dict(workdir=workdir, step=step, subtrees=subtrees))


def test_copies_a_source_subtree_exactly_to_another_path(source):
  saved = analysis.load_run(source).params
  zeros = jax.tree.map(np.zeros_like, saved)
  state, shardings = host_state(zeros)
  # The image tower's patch embedding into the text tower's first block would not fit; the
  # first block of each tower, both 2x32 wide, is the same shape.
  mapping = {"text_tower/encoder/block_0/mlp": "image_tower/encoder/block_0/mlp"}
  new = init_from.apply(state, spec(source, mapping), shardings)
  assert_trees_equal(new.params["text_tower"]["encoder"]["block_0"]["mlp"],
                     saved["image_tower"]["encoder"]["block_0"]["mlp"])
  assert_trees_equal(new.params["image_tower"], zeros["image_tower"])
  assert init_from.apply(state, spec(None, {}), shardings) is state


@pytest.mark.parametrize("workdir,subtrees,message", [
    ("missing", {LOCKED: LOCKED}, r"no run in|not a run"),
    (None, {"vision": LOCKED}, r"'vision' is not a subtree of this run's parameters"),
    (None, {LOCKED: "image_tower/block_9"}, r"'image_tower/block_9' is not a subtree of the "
     r"parameters of"),
    (None, {LOCKED: "text_tower"}, r"differ in structure or shapes"),
    (None, {}, r"names no subtrees"),
])
def test_bad_init_from_fails_with_one_line(source, tmp_path, workdir, subtrees, message):
  state, shardings = host_state(jax.tree.map(np.zeros_like, analysis.load_run(source).params))
  workdir = source if workdir is None else str(tmp_path / workdir)
  with pytest.raises(UserError, match=message) as error:
    init_from.apply(state, spec(workdir, subtrees), shardings)
  assert "\n" not in str(error.value)


def test_lit_config_locks_the_image_side_of_the_siglip_run():
  config = config_loading.load_config("configs/lit_shapes.py")
  model = get_model(config.model)
  shapes = jax.eval_shape(model_init.make_init_variables(model, config), jax.random.key(0))
  params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), nn.unbox(shapes)["params"])
  labels = partition.labels_fn(config.optim.partition)(params)
  for name, tree in labels.items():
    want = "frozen" if name in ("image_tower", "image_proj") else "default"
    assert set(jax.tree.leaves(tree)) == {want}, name
  if not os.path.isdir(config.init_from.workdir):
    pytest.skip(f"no {config.init_from.workdir}: `make train` writes it")
  state, shardings = host_state(params)
  copied = init_from.apply(state, config.init_from, shardings).params
  saved = analysis.load_run(config.init_from.workdir).params
  for name in ("image_tower", "image_proj"):
    assert_trees_equal(copied[name], saved[name])
