"""Tests run JAX on the CPU with 8 simulated devices."""
import os
import sys

# Must happen before jax is imported anywhere.
# The tests' programs are tiny: LLVM's optimisation of their machine code costs
# more time than it saves (it more than halves the suite's compile time). XLA's
# own HLO passes (fusion, layout, sharding) run as in any `jaxmm` command.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_backend_optimization_level=0").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same small programs, in this process and in the
# `jaxmm` processes they start (which inherit this environment): JAX's
# persistent compilation cache serves the repeats from disk. Keys cover the
# program, XLA_FLAGS and jaxlib's version, so a hit is the program XLA would
# build. A size limit turns on the cache's file lock, which keeps processes
# that compile at once from reading each other's half-written entries.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2**30))
# A cache entry that cannot be read or written (processes racing on one key)
# only costs a compilation: keep JAX's warning about it out of the stderr
# that tests read.
os.environ["PYTHONWARNINGS"] = ",".join(
    filter(None, [os.environ.get("PYTHONWARNINGS")] + [
        f"ignore:Error {verb} persistent compilation cache entry:UserWarning"
        for verb in ("reading", "writing")
    ]))

from jaxmm import host  # noqa: E402  pylint: disable=wrong-import-position

assert host.configure()  # the CPU settings of every `jaxmm` command

import jax  # noqa: E402  pylint: disable=wrong-import-position
import numpy as np  # noqa: E402

assert jax.device_count() == 8, jax.devices()

import filelock  # noqa: E402
import pytest  # noqa: E402

from jaxmm import analysis  # noqa: E402
from jaxmm import config_loading  # noqa: E402
from jaxmm import data  # noqa: E402
from jaxmm import parallel  # noqa: E402
from jaxmm import train  # noqa: E402
from jaxmm.data.shards import export  # noqa: E402
from jaxmm.experiments import image_text  # noqa: E402

# Every image-text run evaluates at its last step; of its evaluators only zero-shot stays in the
# tiny runs (the others cost a compilation each, and test_representation tests them).
_COSTLY_EVALUATORS = ("retrieval", "linear_probe", "knn")
EVALUATORS_OFF = tuple(f"evals.{name}.every=0" for name in _COSTLY_EVALUATORS)
EVALUATORS_ON = tuple(f"evals.{name}.every=None" for name in _COSTLY_EVALUATORS)
# A two-tower small enough that a train step compiles and runs in seconds.
TINY_OVERRIDES = ("batch_size=16", "total_steps=10", "optim.warmup_steps=1", "optim.lr=0.01",
                  "data.image_size=16", "data.max_len=8", "model.dtype=float32",
                  "model.embed_dim=16", "model.image.patch_size=8", "model.image.width=32",
                  "model.image.depth=1", "model.image.num_heads=2", "model.image.mlp_dim=64",
                  "model.text.width=32", "model.text.depth=1", "model.text.num_heads=2",
                  "model.text.mlp_dim=64", "evals.zero_shot.batch_size=256",
                  "evals.linear_probe.train_examples=512", "evals.knn.train_examples=512",
                  *EVALUATORS_OFF)

def assert_same_bits(first, again) -> None:
  """Two trees of float32 parameters hold the same bits, leaf by leaf (paths and dtypes too)."""
  leaves = [jax.tree_util.tree_flatten_with_path(tree)[0] for tree in (first, again)]
  for (path, a), (other, b) in zip(*leaves, strict=True):
    assert path == other and a.dtype == b.dtype, (path, other)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), path


def short_train_config(spec: str, shapes_data_dir: str, *overrides: str):
  """The config `spec` ('configs/x.py:ARG') for two steps of batch 16 on the session's shapes
  data, evaluators off, with `overrides` ('key=value')."""
  config = config_loading.load_config(spec)
  return config_loading.apply_overrides(
      config, ["batch_size=16", "total_steps=2", "eval_every=0", "optim.warmup_steps=1",
               f"data.data_dir={shapes_data_dir}", *overrides])


def cli_error_line(capsys, args) -> str:
  """Runs `jaxmm ARGS` in this process; returns its last stderr line after checking exit status 2
  and that no traceback was printed."""
  from jaxmm.commands import cli  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit) as e:
    cli.main(args)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "Traceback" not in err
  return err.strip().splitlines()[-1]


# A TFDS builder of the kind a user brings: its own module, feature names
# other than 'image' / 'caption', and not registered with tfds, so that jaxmm
# finds it from its prepared files alone.
_TOY_BUILDER = """
import numpy as np
import tensorflow_datasets as tfds

class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "img": tfds.features.Tensor(shape=(8, 8, 3), dtype=np.uint8),
        "text": tfds.features.Text(),
        "label": tfds.features.ClassLabel(num_classes=3),
    }))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(12)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"img": np.full((8, 8, 3), 10 * i, np.uint8), "text": f"item {i}", "label": i % 3}
"""


def _bundled(tmp_path_factory, name: str) -> str:
  """A data dir holding the bundled dataset `name`, built once per `pytest` run: the first of the
  xdist workers to take the lock builds it, the others wait and read it. Tests only read it."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # this run's folder, above each worker's own
  path = root / f"bundled_{name}"
  with filelock.FileLock(str(root / f"bundled_{name}.lock")):
    data.data_source(name, "train", data_dir=str(path))  # builds both splits, or opens them
  return str(path)


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory):
  """A data dir with the bundled `shapes` dataset (20,000 + 2,000 examples)."""
  return _bundled(tmp_path_factory, "shapes")


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory):
  """A data dir with the bundled `digits` dataset (scikit-learn's 1,797 digits, captioned)."""
  return _bundled(tmp_path_factory, "digits")


@pytest.fixture(scope="session")
def shapes_shards(shapes_data_dir, tmp_path_factory):
  """The `shapes` test split (2,000 examples) as `jaxmm data export` writes it, 300 examples a
  file: {'wds': glob of its .tar files, 'parquet': glob of its .parquet files}."""
  globs = {}
  for fmt, ext in (("wds", "tar"), ("parquet", "parquet")):
    out = str(tmp_path_factory.mktemp(f"shapes_{fmt}"))
    export.export("shapes", "test", fmt, out, shard_size=300, data_dir=shapes_data_dir)
    globs[fmt] = f"{out}/*.{ext}"
  return globs


def shard_overrides(shards: dict, source: str) -> list[str]:
  """Overrides that train and evaluate a shapes config on the test split of `shapes_shards`."""
  return [f"data.source={source}", f"data.files={shards[source]}",
          f"data.eval_files={shards[source]}", "data.train_split=test", "data.image_key=png",
          "data.text_key=txt"]


@pytest.fixture
def tiny_overrides():
  return list(TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_config():
  """tiny_config(loss='siglip', *overrides) -> the shapes config shrunk to TINY_OVERRIDES."""

  def make(loss="siglip", *overrides):
    config = config_loading.load_config(f"configs/{loss}_shapes.py")
    return config_loading.apply_overrides(config, list(TINY_OVERRIDES) + list(overrides))

  return make


@pytest.fixture(scope="session")
def toy_pairs_data_dir(tmp_path_factory):
  """A data dir holding `toy_pairs`, prepared from builder code that jaxmm never imports.

  12 train examples i = 0..11: 'img' uint8 [8, 8, 3] all 10·i, 'text' "item i",
  'label' i % 3.
  """
  root = tmp_path_factory.mktemp("toy_pairs")
  package = root / "code" / "toy_pairs"
  package.mkdir(parents=True)
  (package / "__init__.py").write_text("")
  (package / "toy_pairs_dataset_builder.py").write_text(_TOY_BUILDER)
  sys.path.insert(0, str(root / "code"))
  try:
    from toy_pairs import toy_pairs_dataset_builder  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.remove(str(root / "code"))
  data_dir = str(root / "tfds")
  toy_pairs_dataset_builder.Builder(data_dir=data_dir,
                                    file_format="array_record").download_and_prepare()
  return data_dir


class _AtBatch:
  """Wraps a train iterator; `action(batch)` replaces the batch of step `step` (1-based)."""

  def __init__(self, iterator, step, action):
    self._iterator, self._left, self._action = iterator, step - 1, action

  def __next__(self):
    batch = next(self._iterator)
    if self._left == 0:
      batch = self._action(batch)
    self._left -= 1
    return batch

  def get_state(self):
    return self._iterator.get_state()

  def set_state(self, state):
    self._iterator.set_state(state)


@pytest.fixture(scope="session")
def run_image_text():
  """run_image_text(config, workdir, at_step=None, action=None) -> final state, via jaxmm.train.run.

  With `at_step`, `action(batch) -> batch` is applied to that step's batch when
  it is read (it may also raise or send a signal).
  """

  def run(config, workdir, at_step=None, action=None):
    mesh = parallel.make_mesh(config.mesh)
    parts = image_text.build(config, workdir, mesh)
    if at_step is not None:
      parts["train_data"] = _AtBatch(parts["train_data"], at_step, action)
    return train.run(config, workdir, mesh=mesh, **parts)

  return run


class InjectedCrash(Exception):
  """The fault `crash_and_resume` injects."""


def _crash(batch):
  raise InjectedCrash()


def crash_and_resume(run, config, workdir: str, at_step: int):
  """Runs `config` with `run` (`run_image_text`) in `workdir` until it dies reading step
  `at_step`'s batch, then again to the end; returns the resumed run's final state."""
  with pytest.raises(InjectedCrash):
    run(config, workdir, at_step=at_step, action=_crash)
  assert analysis.checkpoint_steps(workdir)[-1] < at_step
  resumed = run(config, workdir)
  assert int(resumed.step) == config.total_steps
  return resumed


@pytest.fixture(scope="session")
def tiny_siglip_run(tiny_config, shapes_data_dir, run_image_text, tmp_path_factory):
  """A finished two-step tiny SigLIP run: the workdir that LiT and text-to-image runs copy a
  tower from."""
  workdir = str(tmp_path_factory.mktemp("source"))
  run_image_text(tiny_config("siglip", "total_steps=2", "checkpoint_every=2", "eval_every=0",
                             f"data.data_dir={shapes_data_dir}"), workdir)
  return workdir
