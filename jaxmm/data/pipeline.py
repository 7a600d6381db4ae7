"""Training and evaluation input pipelines on grain.

A batch is a dict of host numpy arrays:
  'image'  float32 [b, S, S, C] in [-1, 1]  (S = data.image_size)
  'tokens' int32 [b, L]                     (L = data.max_len; when the
                                             dataset has a text feature)
  one int32 [b] (bool for bool features) per scalar label feature, e.g.
  'shape', 'colour', 'size', 'position', 'held_out' for `shapes`;
  eval batches add 'mask' bool [b] (False on padding rows).
b is the host-local batch: the global batch size // process_count.

The training stream is a pure function of (seed, step): global batch `step`
holds the examples at stream positions [step * B, (step + 1) * B), where the
stream is the concatenation of one seeded permutation of the split per epoch,
and host p reads positions p * b ... (p + 1) * b - 1 of it. Augmentation keys
depend only on (seed, example index, epoch). Grain supplies the prefetching
iterator whose `get_state()` ({'next_index': step}) resumes the stream exactly.
Whole batches are gathered and preprocessed with vectorised numpy.

Data config keys: name, data_dir, train_split, eval_split, image_size,
max_len, tokenizer, augment (shuffle_seed is resolved by the caller into
`seed`); optional: image_key ('image'), text_key ('caption'), cache (True: splits
under 1 GiB are read into memory once per process).
"""
import functools
import sys

import grain
import numpy as np

from jaxmm.data import preprocess
from jaxmm.data import sources
from jaxmm.data import tokenizers

_MAX_CACHED_BYTES = 1 << 30
# The machine this was tuned on has 2 cores: two reader threads keep a couple of
# batches ahead of the training step without starving it.
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)


def _stack(records):
  return {key: np.stack([r[key] for r in records]) for key in records[0]}


class SplitReader:
  """Reads examples by index as stacked numpy arrays, from memory if small."""

  def __init__(self, name, split, data_dir=None, cache=True):
    builder = sources.get_builder(name, data_dir)
    self.source = builder.as_data_source(split=split)
    self.num_examples = len(self.source)
    self._columns = None
    if cache and builder.info.splits[split].num_bytes <= _MAX_CACHED_BYTES:
      # Decoding a TFDS record costs ~0.1 ms in Python; a small split is
      # decoded once so that every later batch is a numpy gather.
      self._columns = _stack(self.source.__getitems__(range(self.num_examples)))

  def read(self, indices) -> dict:
    """Examples at `indices` [b] as a dict of arrays with leading dim b."""
    indices = np.asarray(indices, np.int64)
    if self._columns is not None:
      return {key: column[indices] for key, column in self._columns.items()}
    return _stack(self.source.__getitems__(indices.tolist()))


@functools.lru_cache(maxsize=8)
def _cached_reader(name, split, data_dir, cache):
  return SplitReader(name, split, data_dir, cache)


def split_reader(data_config, split) -> SplitReader:
  """The (per-process cached) reader of one split of `data_config.name`."""
  return _cached_reader(data_config["name"], split,
                        sources.resolve_data_dir(data_config.get("data_dir")),
                        bool(data_config.get("cache", True)))


@functools.lru_cache(maxsize=4)
def _tokenizer(spec):
  return tokenizers.get_tokenizer(spec)


def tokenize(data_config, texts) -> np.ndarray:
  """Texts (str or bytes) [N] -> int32 [N, max_len], as the pipeline does."""
  return _tokenizer(data_config["tokenizer"]).encode_batch(texts, data_config["max_len"])


def _to_batch(raw, data_config, keys=None):
  """Stored examples -> model inputs; augments when per-example keys are given."""
  image_key = data_config.get("image_key", "image")
  text_key = data_config.get("text_key", "caption")
  image = preprocess.resize(preprocess.normalize(raw[image_key]), data_config["image_size"])
  if keys is not None:
    image = preprocess.augment(image, keys)
  batch = {"image": image}
  if text_key in raw:
    batch["tokens"] = tokenize(data_config, raw[text_key])
  for key, value in raw.items():
    if key not in (image_key, text_key) and value.ndim == 1:
      if np.issubdtype(value.dtype, np.integer):
        batch[key] = value.astype(np.int32)
      elif value.dtype == np.bool_:
        batch[key] = value
  return batch


def _local_batch_size(batch_size, process_count):
  if batch_size % process_count:
    raise ValueError(f"global batch size {batch_size} is not divisible by the "
                     f"{process_count} processes")
  return batch_size // process_count


@functools.lru_cache(maxsize=4)
def _permutation(seed, epoch, num_examples):
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  perm.flags.writeable = False
  return perm


def _shuffled(positions, seed, num_examples):
  """Stream positions [b] -> (example index [b], epoch [b])."""
  epoch, offset = np.divmod(positions, num_examples)
  index = np.empty_like(positions)
  for e in np.unique(epoch):
    chosen = epoch == e
    index[chosen] = _permutation(seed, int(e), num_examples)[offset[chosen]]
  return index, epoch


def _host_positions(step, batch_size, local_batch_size, process_index):
  """Positions [b] of host `process_index`'s slice of global batch `step`."""
  start = step * batch_size + process_index * local_batch_size
  return start + np.arange(local_batch_size, dtype=np.int64)


def train_iterator(data_config, *, global_batch_size, seed, process_index=0, process_count=1):
  """Infinite iterator of host-local training batches, with get/set_state.

  `seed` fixes the order and the augmentation (pass data.shuffle_seed, or
  the run's seed when that is None). Reshuffles every epoch.
  `iterator.set_state(state)` on a fresh iterator with the same arguments
  continues exactly where `state = iterator.get_state()` was taken (the state
  is a JSON-serialisable dict).
  """
  local = _local_batch_size(global_batch_size, process_count)
  reader = split_reader(data_config, data_config["train_split"])

  def load(step):
    positions = _host_positions(step, global_batch_size, local, process_index)
    index, epoch = _shuffled(positions, seed, reader.num_examples)
    keys = preprocess.example_keys(seed, index, epoch) if data_config["augment"] else None
    return _to_batch(reader.read(index), data_config, keys)

  dataset = grain.MapDataset.range(sys.maxsize).map(load)
  return iter(dataset.to_iter_dataset(_READ_OPTIONS))


def eval_batches(data_config, *, split=None, batch_size, process_index=0, process_count=1):
  """One pass over `split` (default data.eval_split) in a fixed order.

  `batch_size` is global, like train_iterator's. Returns a grain MapDataset
  (len() = number of batches, the same on every host); the last batches are
  padded to the full host batch, with 'mask' False on padding rows.
  """
  local = _local_batch_size(batch_size, process_count)
  reader = split_reader(data_config, split or data_config["eval_split"])
  num_batches = -(-reader.num_examples // batch_size)

  def load(step):
    positions = _host_positions(step, batch_size, local, process_index)
    mask = positions < reader.num_examples
    batch = _to_batch(reader.read(np.where(mask, positions, 0)), data_config)
    batch["mask"] = mask
    return batch

  return grain.MapDataset.range(num_batches).map(load)
