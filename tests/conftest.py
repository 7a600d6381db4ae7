"""Tests run JAX on the CPU with 8 simulated devices."""
import os

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from jaxmm import host_memory  # noqa: E402  pylint: disable=wrong-import-position

host_memory.keep_freed_memory()  # as `jaxmm train` does

import jax  # noqa: E402  pylint: disable=wrong-import-position

assert jax.device_count() == 8, jax.devices()

import pytest  # noqa: E402

from jaxmm import config_loading  # noqa: E402
from jaxmm import data  # noqa: E402

# A two-tower small enough that a train step compiles and runs in seconds.
TINY_OVERRIDES = ("batch_size=16", "total_steps=10", "optim.warmup_steps=1", "optim.lr=0.01",
                  "data.image_size=16", "data.max_len=8", "model.dtype=float32",
                  "model.embed_dim=16", "model.image.patch_size=8", "model.image.width=32",
                  "model.image.depth=1", "model.image.num_heads=2", "model.image.mlp_dim=64",
                  "model.text.width=32", "model.text.depth=1", "model.text.num_heads=2",
                  "model.text.mlp_dim=64", "eval.zero_shot.batch_size=256")


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory):
  """A data dir with the bundled `shapes` dataset built once per test session."""
  path = str(tmp_path_factory.mktemp("tfds"))
  data.data_source("shapes", "train", data_dir=path)  # builds both splits
  return path


@pytest.fixture
def tiny_overrides():
  return list(TINY_OVERRIDES)


@pytest.fixture
def tiny_config():
  """tiny_config(loss='siglip', *overrides) -> the shapes config shrunk to TINY_OVERRIDES."""

  def make(loss="siglip", *overrides):
    config = config_loading.load_config(f"configs/{loss}_shapes.py")
    return config_loading.apply_overrides(config, list(TINY_OVERRIDES) + list(overrides))

  return make
