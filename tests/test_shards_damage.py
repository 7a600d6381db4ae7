"""Damaged shards: a cut tar member, an undecodable image, a missing caption or label are skipped,
counted and named; past data.max_skipped_fraction of a shard, the run stops naming it."""
import io
import json
import logging
import tarfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest

from jaxmm import data
from jaxmm import errors
from jaxmm import parallel
from jaxmm import train
from jaxmm.data.shards import skips

from conftest import cli_error_line
from test_generic_loop import toy_config

N = 40  # examples, 20 a shard
# Example i has a 4x4 image of grey level 5·i, the caption "caption i" and the label i % 3, except:
DAMAGED = {3: "does not decode", 7: "no caption", 11: "lacks the label", 39: "cut short"}
SEED = 2


def _png(i):
  buffer = io.BytesIO()
  Image.fromarray(np.full((4, 4, 3), 5 * i, np.uint8)).save(buffer, format="PNG")
  return buffer.getvalue()


def _members(i):
  members = [(f"k{i:02d}.json", json.dumps({} if i == 11 else {"label": i % 3}).encode())]
  if i != 7:
    members.append((f"k{i:02d}.txt", f"caption {i}".encode()))
  members.append((f"k{i:02d}.png", b"not an image" if i == 3 else _png(i)))  # the image last
  return members


def _tar(members) -> bytes:
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w") as tar:
    for name, payload in members:
      info = tarfile.TarInfo(name)
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  return buffer.getvalue()


@pytest.fixture(scope="module")
def damaged_shards(tmp_path_factory):
  """Two tars of 20 examples with the damage of DAMAGED; the second ends 10 bytes into the data of
  its last member, example 39's image. Returns the glob of the two."""
  folder = tmp_path_factory.mktemp("damaged")
  (folder / "00000.tar").write_bytes(_tar([m for i in range(20) for m in _members(i)]))
  whole = _tar([m for i in range(20, N) for m in _members(i)])
  with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
    last = tar.getmembers()[-1]
  assert last.name == "k39.png"
  (folder / "00001.tar").write_bytes(whole[:last.offset_data + 10])
  return str(folder / "*.tar")


def _config(files, **overrides):
  config = dict(name="toy", train_split="train", eval_split="test", image_size=4, max_len=12,
                tokenizer="bytes", augment=False, source="wds", files=files, eval_files=files,
                image_key="png", text_key="txt", max_skipped_fraction=0.2)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def _example_of(batch, row) -> int:
  """The example a batch row holds, read from its caption; its image and label must agree."""
  caption = data.get_tokenizer("bytes").decode(batch["tokens"][row])
  i = int(caption.split()[1])
  np.testing.assert_allclose(batch["image"][row], 5 * i / 127.5 - 1, atol=1e-6)
  assert batch["label"][row] == i % 3
  return i


def test_the_reader_says_what_is_wrong_with_each_damaged_example(damaged_shards):
  reader = data.split_reader(_config(damaged_shards), "train")
  assert reader.num_examples == N
  _, problems = reader.read_checked(np.arange(N))
  assert {i for i, p in enumerate(problems) if p} == set(DAMAGED)
  for i, what in DAMAGED.items():
    assert what in problems[i], problems[i]


# Random-resized crops of the uniform images keep their grey level: the stand-ins come cropped.
@pytest.mark.parametrize("crop", [{}, dict(crop_scale=(0.5, 1.0), host_threads=2)])
def test_training_batches_replace_damaged_examples_deterministically(damaged_shards, caplog, crop):
  config = _config(damaged_shards, max_skipped_fraction=0.5, **crop)
  caplog.set_level(logging.WARNING, logger="jaxmm")
  iterator = data.train_iterator(config, global_batch_size=8, seed=SEED)
  batches = [next(iterator) for _ in range(15)]  # three epochs of 5 batches
  skipped = iterator.metrics()["skipped"]
  met = 0
  for epoch in range(3):
    order = np.random.default_rng([SEED, epoch]).permutation(N)  # the documented order
    for position, example in enumerate(order):
      got = _example_of(batches[5 * epoch + position // 8], position % 8)
      if example in DAMAGED:
        met += 1
        assert got not in DAMAGED
      else:
        assert got == example
  # Each damaged example is met once an epoch; a stand-in may itself be damaged and replaced.
  assert met == 12 and skipped >= met
  named = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
  assert len(named) == skips.NAMED_IN_LOG
  assert "/00000.tar:k03: its image does not decode" in "\n".join(named)

  again = data.train_iterator(config, global_batch_size=8, seed=SEED)
  halves = [data.train_iterator(config, global_batch_size=8, seed=SEED, process_index=p,
                                process_count=2) for p in range(2)]
  resumed = data.train_iterator(config, global_batch_size=8, seed=SEED)
  resumed.set_state({"next_index": 6})
  for step, batch in enumerate(batches):
    for key, value in next(again).items():
      np.testing.assert_array_equal(value, batch[key])
    parts = [next(half) for half in halves]
    for key, value in batch.items():
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), value)
    if step >= 6:
      for key, value in next(resumed).items():
        np.testing.assert_array_equal(value, batch[key])


def test_evaluation_leaves_damaged_examples_out(damaged_shards):
  batches = list(data.eval_batches(_config(damaged_shards), batch_size=16))
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.shape == (48,)  # 3 batches of 16, the last padded
  np.testing.assert_array_equal(np.flatnonzero(~mask[:N]), sorted(DAMAGED))
  assert not mask[N:].any()
  rows = [(b, r) for b in batches for r in np.flatnonzero(b["mask"])]
  assert [_example_of(b, r) for b, r in rows] == [i for i in range(N) if i not in DAMAGED]


class _FakeReader:
  """A reader of `n` examples whose `damaged` ones are reported so; records what it reported."""

  def __init__(self, n, damaged):
    self.num_examples, self.damaged, self.reported = n, set(damaged), 0
    self.shards = [type("Shard", (), {"num_examples": n, "path": "fake", "error": ""})]

  def shard_numbers(self, indices):
    return np.zeros(len(indices), np.int64)

  def name(self, index):
    return f"fake:{index}"

  def read_checked(self, indices, **decoding):
    del decoding  # no images to crop
    problems = ["broken" if int(i) in self.damaged else None for i in indices]
    self.reported += sum(p is not None for p in problems)
    return {"x": np.array(indices, np.int64)}, problems


def test_skipped_counts_every_damaged_example_read(caplog):
  # Half the examples damaged: stand-ins are often damaged too, and each one read counts.
  reader = _FakeReader(100, range(0, 100, 2))
  counter = skips.Skips(reader, max_fraction=1.0)
  index = np.arange(0, 40)
  examples, read, skipped = skips.read_replacing(reader, counter, index, np.zeros(40, np.int64), 7)
  assert skipped == reader.reported > 20
  assert not any(int(i) in reader.damaged for i in examples["x"])
  np.testing.assert_array_equal(read, examples["x"])
  np.testing.assert_array_equal(read[1::2], index[1::2])  # undamaged examples stay in place


def test_past_the_limit_the_stream_stops_naming_the_shard(damaged_shards):
  # Shard 00000 has 3 damaged examples of 20 (0.15), shard 00001 one (0.05).
  config = _config(damaged_shards, max_skipped_fraction=0.1)
  iterator = data.eval_batches(config, batch_size=N)
  with pytest.raises(errors.UserError) as error:
    list(iterator)
  message = str(error.value)
  assert ("/00000.tar is damaged beyond data.max_skipped_fraction=0.1: 3 damaged examples among "
          "20 read from its 20") in message
  assert "--config.data.max_skipped_fraction" in message
  list(data.eval_batches(_config(damaged_shards, max_skipped_fraction=0.15), batch_size=N))


def test_a_run_past_the_limit_ends_in_one_line(damaged_shards, tmp_path, capsys, tiny_overrides):
  line = cli_error_line(capsys, [
      "train", "--config", "configs/siglip_shapes.py", "--workdir", str(tmp_path / "run"),
      "--config.data.source=wds", f"--config.data.files={damaged_shards}",
      "--config.data.image_key=png", "--config.data.text_key=txt",
      "--config.data.max_skipped_fraction=0", "--config.eval_every=0"
  ] + [f"--config.{o}" for o in tiny_overrides])
  assert line.startswith("jaxmm train: error: ") and "is damaged beyond" in line
  assert "00000.tar" in line or "00001.tar" in line


def _init_variables(rng):
  return {"params": {"w": jax.random.normal(rng, ())}}


def _loss_fn(params, model_state, batch, rng):
  """A toy regression of the label on the mean pixel: the loop needs a loss, any will do."""
  del rng
  error = params["w"] * jnp.mean(batch["image"], axis=(1, 2, 3)) - batch["label"]
  return jnp.mean(error**2), {}, model_state


def test_the_loop_logs_the_skipped_examples(damaged_shards, tmp_path):
  config = toy_config(total_steps=4)
  config.update(dict(log_every=2, checkpoint_every=4, eval_every=0))
  data_config = _config(damaged_shards, max_skipped_fraction=0.5)
  mesh = parallel.make_mesh(config.mesh)
  train.run(config, str(tmp_path), mesh=mesh, init_variables=_init_variables, loss_fn=_loss_fn,
            train_data=data.train_iterator(data_config, global_batch_size=config.batch_size,
                                           seed=SEED))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  logged = {row["step"]: row["data/skipped"] for row in rows if "data/skipped" in row}
  # The damaged examples at the stream positions of steps 1-2 and 3-4 (16 a step), each read at
  # least once; a stand-in that is damaged too is read and counted as well.
  order = np.concatenate([np.random.default_rng([SEED, epoch]).permutation(N) for epoch in (0, 1)])
  at_least = [sum(int(i) in DAMAGED for i in order[32 * k:32 * (k + 1)]) for k in (0, 1)]
  expected = data.train_iterator(data_config, global_batch_size=config.batch_size, seed=SEED)
  counts = []
  for _ in range(2):
    next(expected), next(expected)
    counts.append(expected.metrics()["skipped"])
  assert logged == {2: counts[0], 4: counts[1]}
  assert counts[0] >= at_least[0] and counts[1] >= at_least[1] and sum(at_least) > 0
