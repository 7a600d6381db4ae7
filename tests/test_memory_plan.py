"""`jaxmm inspect --memory`: per-device memory of the compiled train step, nothing trained."""
import functools
import json
import math
import pathlib
import types

import flax.linen as nn
import jax
import pytest

from jaxmm import config_loading
from jaxmm import errors
from jaxmm import models
from jaxmm import parallel
from jaxmm.commands import cli
from jaxmm.commands import memory as memory_command
from jaxmm.commands import memory_plan
from jaxmm.train import model_init
from conftest import TINY_OVERRIDES, cli_error_line

SPEC = "configs/siglip_shapes.py"
FSDP = ("mesh.data=1", "mesh.fsdp=-1")  # every device shards the parameters


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
  monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def overrides(shapes_data_dir):
  return list(TINY_OVERRIDES) + [f"data.data_dir={shapes_data_dir}"]


@pytest.fixture(scope="module")
def row(overrides):
  """row(devices, batch, *more overrides) -> the plan's row, compiled once per module."""

  @functools.cache
  def measure(devices, batch, *more):
    [result] = memory_plan.plan(SPEC, overrides + list(more), [devices], [batch])
    return result

  return measure


def expected_param_bytes(mesh_sizes: dict[str, int]) -> int:
  """Per-device parameter bytes of the tiny two-tower, counted from its logical axis names.

  Each parameter's float32 bytes, divided by the size of every mesh axis that
  DEFAULT_RULES maps one of its axes to.
  """
  config = config_loading.apply_overrides(config_loading.load_config(SPEC), list(TINY_OVERRIDES))
  init = model_init.make_init_variables(models.get_model(config.model), config)
  params = jax.eval_shape(init, jax.random.key(0))["params"]
  rules = dict(parallel.DEFAULT_RULES)
  total = 0
  for leaf in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned)):
    shards = math.prod(mesh_sizes[rules[name]] for name in leaf.names if rules.get(name))
    assert leaf.value.size % shards == 0
    total += leaf.value.size * leaf.value.dtype.itemsize // shards
  return total


def test_parameter_bytes_are_this_devices_shards(row):
  replicated, sharded = row(8, 16), row(8, 16, *FSDP, "ema.decays=(0.999,)")
  assert replicated["mesh"] == dict(data=8, fsdp=1, tensor=1)
  assert sharded["mesh"] == dict(data=1, fsdp=8, tensor=1)
  assert replicated["params_bytes"] == expected_param_bytes(dict(fsdp=1, tensor=1))
  assert sharded["params_bytes"] == expected_param_bytes(dict(fsdp=8, tensor=1))
  for plan in (replicated, sharded):
    # AdamW's two moments are params-shaped and sharded alike; its step counts are scalars.
    assert 2 * plan["params_bytes"] <= plan["opt_state_bytes"] <= 2 * plan["params_bytes"] + 64
  assert 6 * sharded["params_bytes"] < replicated["params_bytes"] <= 8 * sharded["params_bytes"]
  assert 6 * sharded["opt_state_bytes"] < replicated["opt_state_bytes"]
  assert (replicated["ema_bytes"], sharded["ema_bytes"]) == (0, sharded["params_bytes"])


def test_xla_numbers_add_up(row):
  plan = row(8, 16)
  assert plan["batch_per_device"] == 2
  # XLA's arguments of the per-device program are exactly this device's state shards and
  # batch rows of the keys the loss reads: float32 images [2, 16, 16, 3], int32 tokens [2, 8].
  read = 2 * (16 * 16 * 3 * 4 + 8 * 4)
  assert plan["argument_bytes"] == plan["state_bytes"] + read
  assert plan["batch_bytes"] > read  # the class labels come along but the loss ignores them
  assert plan["alias_bytes"] == plan["state_bytes"]  # the donated state is updated in place
  assert plan["peak_bytes"] == (plan["argument_bytes"] + plan["temp_bytes"] +
                                plan["output_bytes"] - plan["alias_bytes"])


def test_temporaries_grow_with_the_global_batch(row):
  small, large = row(8, 16), row(8, 1024)
  assert large["batch_bytes"] == 64 * small["batch_bytes"]
  assert large["temp_bytes"] > 10 * small["temp_bytes"]
  assert large["loss_temp_bytes"] > small["loss_temp_bytes"]
  assert large["params_bytes"] == small["params_bytes"]


def test_rematerialisation_counts_on_the_cpu_too(row):
  # XLA:CPU would merge jax.checkpoint's recomputation away unless the plan keeps its barriers.
  plain, remat = row(8, 1024), row(8, 1024, "model.remat=True")
  assert remat["temp_bytes"] < 0.95 * plain["temp_bytes"]
  assert remat["params_bytes"] == plain["params_bytes"]


def test_ring_siglip_temporaries_shrink_as_devices_are_added(row):
  two, eight = row(2, 1024), row(8, 1024)
  # The ring's [b, b] logits blocks, b = B / devices, shrink with the square of the device
  # count (measured: 8.5x from 2 to 8 devices); 'gather' [b, B] rows only linearly (3.8x).
  assert two["loss_temp_bytes"] > 6 * eight["loss_temp_bytes"]
  assert two["temp_bytes"] > 3 * eight["temp_bytes"]  # activations: linearly
  assert two["peak_bytes"] > 3 * eight["peak_bytes"]


def test_text_names_every_part(row):
  text = memory_command.parts_text(SPEC, row(8, 16))
  assert "global batch 16 on 8 cpu devices (data=8, fsdp=1, tensor=1)" in text
  for _, label, _ in memory_command.FIELDS:
    assert label.strip() in text
  table = memory_command.table_text(SPEC, [row(8, 16), row(8, 1024)]).splitlines()
  assert len(table) == 4 and "peak" in table[1] and "loss temps" in table[1]
  assert table[3].split()[:4] == ["8", "8,1,1", "1024", "128"]


def test_cli_prints_the_plan(overrides, capsys):
  cli.main(["inspect", "--memory", "--config", SPEC, "--devices", "1"] +
           [f"--config.{o}" for o in overrides])
  out = capsys.readouterr().out
  assert "global batch 16 on 1 cpu devices" in out
  for _, label, _ in memory_command.FIELDS:
    assert f"  {label} " in out
  params = memory_command.human_bytes(expected_param_bytes(dict(fsdp=1, tensor=1)))
  assert f" {params}  this device's shards of the parameters" in out


@pytest.mark.slow
def test_cli_json_simulates_more_devices_than_present(overrides, capsys):
  # This session's CPU backend has 8 devices; 16 are measured by a child process.
  cli.main(["inspect", "--memory", "--json", "--config", SPEC, "--devices", "16"] +
           [f"--config.{o}" for o in overrides + list(FSDP)])
  captured = capsys.readouterr()
  assert "in a child process with 16 simulated CPU devices" in captured.err
  [plan] = json.loads(captured.out)["rows"]
  assert plan["mesh"] == dict(data=1, fsdp=16, tensor=1) and plan["batch_per_device"] == 1
  assert plan["params_bytes"] == expected_param_bytes(dict(fsdp=16, tensor=1))
  for key, _, _ in memory_command.FIELDS:
    assert isinstance(plan[key], int) and plan[key] >= 0, key
  assert 0 < plan["loss_temp_bytes"] < plan["temp_bytes"]


def siglip_b16_parameters(depth: int) -> int:
  """Parameters of big_vision's SigLIP B/16 at 224 with `depth` blocks in each tower, counted
  from its sizes: width 768, MLP 3072, 196 patches of 16 x 16 x 3, a MAP head and no image
  projection; 64 text ids of 32,000 and a 768 -> 768 text projection; t and b. Each dense layer
  has a bias, but the attention's key (jaxmm's attention has none)."""
  width, mlp = 768, 3072
  attention = 4 * width * width + 3 * width  # query, key, value and out kernels, 3 biases
  mlp_block = 2 * width * mlp + mlp + width
  layer_norm = 2 * width
  block = layer_norm + attention + layer_norm + mlp_block
  map_head = width + attention + layer_norm + mlp_block  # the probe token first
  image = (16 * 16 * 3 * width + width) + 196 * width + depth * block + layer_norm + map_head
  text = 32_000 * width + 64 * width + depth * block + layer_norm + (width * width + width)
  return image + text + 2


def test_a_big_vision_siglip_plans_without_its_vocabulary(shapes_data_dir):
  spec = "configs/siglip_big_vision.py:B/16"
  assert config_loading.load_config(spec).data.tokenizer == "big_vision:"  # no vocabulary path
  # One block per tower keeps the compile short; every other size is B/16's.
  [plan] = memory_plan.plan(spec, [f"data.data_dir={shapes_data_dir}", "model.image.depth=1",
                                   "model.text.depth=1"], [1], [2])
  assert plan["params_bytes"] == 4 * siglip_b16_parameters(depth=1)  # float32, one device
  # The step reads B/16's inputs besides its state: float32 images [2, 224, 224, 3] and int32
  # tokens [2, 64].
  assert plan["argument_bytes"] == plan["state_bytes"] + 2 * (224 * 224 * 3 * 4 + 64 * 4)


@pytest.mark.parametrize("args,expected", [
    (["--devices", "8", "--batch-sizes", "12"],
     "global batch 12 does not split over --devices 8 (batch axes data=8 x fsdp=1 = 8 shards); "
     "give --batch-sizes that are multiples of 8"),
    (["--devices", "3"], "set --config.batch_size to a multiple of 3"),
    (["--devices", "3", "--config.mesh.fsdp=2"],
     "--devices 3: mesh.data=-1, mesh.fsdp=2, mesh.tensor=1: the fixed axes take 2 devices"),
    (["--devices", "2,0"], "--devices 2,0: give positive integers separated by commas"),
    (["--batch-sizes", "a"], "--batch-sizes a: give positive integers separated by commas"),
    (["--config.optim.lr=-1"], "optim.lr=-1.0 must be a number > 0"),
])
def test_bad_memory_plans_fail_in_one_line(capsys, args, expected):
  line = cli_error_line(capsys, ["inspect", "--memory", "--config", SPEC] + args)
  assert line.startswith("jaxmm inspect: error: ") and expected in line


@pytest.mark.parametrize("args,expected", [
    (["--config", SPEC, "--devices", "2"], "--devices goes with --memory"),
    (["--config", SPEC, "--batch-sizes", "64"], "--batch-sizes goes with --memory"),
    (["--memory", "--run", "runs/x"], "--memory plans a config's train step: give --config"),
])
def test_memory_flags_need_each_other(capsys, args, expected):
  assert expected in cli_error_line(capsys, ["inspect"] + args)


def test_an_accelerator_is_not_simulated():
  config = memory_plan.planning_config(SPEC, TINY_OVERRIDES)
  gpus = [types.SimpleNamespace(platform="gpu")] * 2
  memory_plan.check(config, [1, 2], [16], gpus)
  with pytest.raises(errors.UserError, match="--devices 4: only 2 gpu devices are present; "
                     "give at most 2"):
    memory_plan.check(config, [2, 4], [16], gpus)


def test_more_devices_than_one_process_simulates_fail_before_any_compile(capsys):
  memory_plan.check_simulated_counts([1, memory_plan.MAX_SIMULATED_CPU_DEVICES])
  line = cli_error_line(capsys, [
      "inspect", "--memory", "--config", SPEC, "--devices", "8,4096", "--batch-sizes", "4096"
  ])
  assert line == ("jaxmm inspect: error: --devices 4096: one process simulates at most 2048 CPU "
                  "devices; give at most 2048 (memory per device follows the batch per device and "
                  "the fsdp and tensor sizes, so a smaller data axis with the same of those plans "
                  "the same)")
