"""Training and evaluation input pipelines on grain.

A batch is a dict of host numpy arrays:
  'image'  float32 [b, S, S, C] in [-1, 1]  (S = data.image_size; or
                                             normalised by data.image_mean
                                             and data.image_std)
  'tokens' int32 [b, L]                     (L = data.max_len; when the
                                             dataset has a text feature)
  one int32 [b] (bool for bool features) per scalar label feature, e.g.
  'shape', 'colour', 'size', 'position', 'held_out' for `shapes`;
  eval batches add 'mask' bool [b] (False on padding rows).
Training batches of a data config with `views` have 'views' float32
[b, V, S, S, C] (V = data.num_views random views of each image, `view_ops`)
in place of 'image'.
b is the host-local batch: the global batch size // process_count.

The training stream is a pure function of (seed, step): global batch `step`
holds the examples at stream positions [step * B, (step + 1) * B), where the
stream is the concatenation of one seeded permutation of the split per epoch,
and host p reads positions p * b ... (p + 1) * b - 1 of it. Augmentation keys
depend only on (seed, example index, epoch). Grain supplies the prefetching
iterator whose `get_state()` ({'next_index': step}) resumes the stream exactly.
Whole batches are gathered and preprocessed with vectorised numpy. A shard
source replaces a damaged example by another chosen by a hash of it
(`shards.skips`), so the same holds there; its training iterator also has
`metrics()`: {'skipped': damaged examples met in the batches since the last
call}.

data.mixture (weighted sources, each a data config of its own) makes the
stream draw on its sources in proportion, by a schedule of the stream
position (`source_mixture`), so all of the above holds for it too.

Data config keys: name, data_dir, train_split, eval_split, image_size,
max_len, tokenizer, augment (shuffle_seed is resolved by the caller into
`seed`), image_key, text_key (the dataset's image and text features), cache
(True: splits under 1 GiB are read into memory once per process), views and
num_views (the ops that make each training image's views, `view_ops`; views
None: no views), source ('tfds', or shards: 'wds' or 'parquet', whose
data.files and data.eval_files hold the train and eval splits, and whose
image_key and text_key name member extensions or columns, `jaxmm.data.shards`)
and max_skipped_fraction (the share of a shard's examples that may be
damaged, `shards.skips`), image_mean and image_std (`preprocess.normalize`;
None: the [-1, 1] range). Every config carries the first ones; a data config
without data_dir, image_key, text_key, cache, views, num_views, source, files,
eval_files, max_skipped_fraction, image_mean or image_std (e.g. one written
in a test) gets None, 'image', 'caption', True, None, 2, 'tfds', None, None,
0.01, None and None. For a shard source, data.crop_scale and data.crop_ratio
(default None and (3/4, 4/3)) make each training image a random-resized crop
of the stored image (`shards.crop`; None: its centre square), and
data.host_threads (default None: every core this process may use) decodes
images and makes views on that many threads (`host_threads`); neither
changes a batch's values with the number of threads or processes.

Mistakes in these keys raise `jaxmm.errors.UserError` naming the key before any
batch is made: an image or text key that is not a feature of the dataset
(`check_features`), and those of `sources.get_builder`,
`tokenizers.get_tokenizer` and `view_ops.parse`. `truncation_warning` reports
captions that data.max_len cuts short, which the pipeline does silently.
"""
import functools
import sys

import grain
import numpy as np

from jaxmm import errors
from jaxmm.data import host_threads
from jaxmm.data import preprocess
from jaxmm.data import shards
from jaxmm.data import source_mixture
from jaxmm.data import sources
from jaxmm.data import tokenizers
from jaxmm.data import view_ops
from jaxmm.data.shards import crop as crop_lib
from jaxmm.data.shards import skips as skips_lib
from jaxmm.errors import UserError

_MAX_CACHED_BYTES = 1 << 30
# The machine this was tuned on has 2 cores: two reader threads keep a couple of
# batches ahead of the training step without starving it.
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)
_DEFAULTS = {"data_dir": None, "image_key": "image", "text_key": "caption", "cache": True,
             "views": None, "num_views": 2, "source": "tfds", "files": None, "eval_files": None,
             "max_skipped_fraction": 0.01, "image_mean": None, "image_std": None,
             "crop_scale": None, "crop_ratio": (3 / 4, 4 / 3), "host_threads": None}


def _get(data_config, key):
  """data_config[key], or its default for the keys in _DEFAULTS."""
  return data_config.get(key, _DEFAULTS[key])


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


def _source(data_config) -> str:
  """data.source, checked."""
  return errors.one_of("data.source", _get(data_config, "source"), shards.SOURCES)


def split_reader(data_config, split) -> SplitReader | shards.ShardReader:
  """The (per-process cached) reader of one split of `data_config.name`, or of the shards that
  hold it (`shards.split_reader`)."""
  source = _source(data_config)
  if source != "tfds":
    return shards.split_reader(source,
                               split,
                               files=_get(data_config, "files"),
                               eval_files=_get(data_config, "eval_files"),
                               train_split=data_config["train_split"],
                               eval_split=data_config["eval_split"],
                               image_key=_get(data_config, "image_key"),
                               text_key=_get(data_config, "text_key"),
                               image_size=data_config["image_size"],
                               cache=bool(_get(data_config, "cache")),
                               image_mean=_get(data_config, "image_mean"),
                               image_std=_get(data_config, "image_std"))
  return _cached_reader(data_config["name"], split,
                        sources.resolve_data_dir(_get(data_config, "data_dir")),
                        bool(_get(data_config, "cache")))


def check_features(data_config, need_text: bool = True, split: str | None = None) -> None:
  """Raises UserError, listing the features, unless data.name has data.image_key.

  data.text_key is checked too when `need_text`; an image-only use of a dataset
  without text passes need_text=False. For a shard source: the shards of
  `split` (default data.train_split) have them (`shards.ShardReader`).
  """
  if _source(data_config) != "tfds":
    if need_text and _get(data_config, "text_key") is None:
      raise UserError("data.text_key=None, but captions are needed; set --config.data.text_key "
                      "to the shards' caption extension or column, e.g. 'txt'")
    split_reader(data_config, split or data_config["train_split"])
    return
  builder = sources.get_builder(data_config["name"], _get(data_config, "data_dir"))
  features = sorted(builder.info.features.keys())
  keys = {"image_key": "images", "text_key": "texts"} if need_text else {"image_key": "images"}
  for key, holds in keys.items():
    value = _get(data_config, key)
    if value not in features:
      raise UserError(f"data.{key}={value!r} is not a feature of {data_config['name']!r} (its "
                      f"features: {', '.join(map(repr, features))}); set --config.data.{key} to "
                      f"the one that holds its {holds}")


def class_labels(data_config) -> dict[str, int]:
  """The class labels of data.name (its tfds ClassLabel features): name -> number of classes.

  Batches carry each of them as int32 [b] under its name. A shard source's are
  its integer labels, each with 1 + its largest value classes.
  """
  if _source(data_config) != "tfds":
    return split_reader(data_config, data_config["train_split"]).class_labels()
  # Imported only where data is read, as in sources.get_builder.
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  builder = sources.get_builder(data_config["name"], _get(data_config, "data_dir"))
  return {
      name: feature.num_classes
      for name, feature in builder.info.features.items()
      if isinstance(feature, tfds.features.ClassLabel)
  }


@functools.lru_cache(maxsize=4)
def _tokenizer(spec):
  return tokenizers.get_tokenizer(spec)


def tokenize(data_config, texts) -> np.ndarray:
  """Texts (str or bytes) [N] -> int32 [N, max_len], as the pipeline does."""
  return _tokenizer(data_config["tokenizer"]).encode_batch(texts, data_config["max_len"])


def count_truncated(data_config, split=None, sample_size: int = 1000) -> tuple[int, int, int]:
  """(cut, sampled, longest) over a fixed sample of `split` (default data.train_split).

  Tokenizes the data.text_key texts of `sample_size` examples (all of them in a
  smaller split; the same ones on every call) without truncation: `cut` of the
  `sampled` texts are longer than data.max_len tokens, the longest `longest`.
  """
  check_features(data_config, need_text=True)
  reader = split_reader(data_config, split or data_config["train_split"])
  if reader.num_examples <= sample_size:
    indices = np.arange(reader.num_examples)
  else:
    rng = np.random.default_rng(0)
    indices = np.sort(rng.choice(reader.num_examples, sample_size, replace=False))
  tokenizer = _tokenizer(data_config["tokenizer"])
  texts = reader.read(indices)[_get(data_config, "text_key")]
  lengths = np.array([tokenizer.token_count(text) for text in texts], np.int64)
  return int((lengths > data_config["max_len"]).sum()), len(lengths), int(lengths.max(initial=0))


def truncation_warning(data_config, split=None, sample_size: int = 1000) -> str | None:
  """One line saying how many sampled captions data.max_len cuts, or None if none.

  The sample is count_truncated's.
  """
  split = split or data_config["train_split"]
  cut, sampled, longest = count_truncated(data_config, split, sample_size)
  if not cut:
    return None
  return (f"data.max_len={data_config['max_len']} cuts {cut} of {sampled} sampled {split} "
          f"captions (longest: {longest} tokens); set --config.data.max_len={longest} to keep "
          "them whole")


def _check_config(data_config, need_text, split):
  """The data config's mistakes as UserErrors, before a reader thread meets them."""
  check_features(data_config, need_text, split)
  if need_text:
    _tokenizer(data_config["tokenizer"])
  view_ops_of(data_config)
  host_threads.count(_get(data_config, "host_threads"))


def train_crop(data_config) -> crop_lib.RandomResizedCrop | None:
  """The random-resized crop of data.crop_scale and data.crop_ratio, or None (no crop_scale)."""
  scale = _get(data_config, "crop_scale")
  if scale is None:
    return None
  if _source(data_config) == "tfds":
    raise UserError("data.crop_scale crops the stored images of a shard source; set "
                    "--config.data.source to 'wds' or 'parquet', or data.crop_scale=None")
  return crop_lib.RandomResizedCrop(data_config["image_size"], scale,
                                    _get(data_config, "crop_ratio")).check()


def view_ops_of(data_config) -> list | None:
  """The ops of data.views (`view_ops.parse`), or None when the config asks for no views."""
  spec = _get(data_config, "views")
  return None if spec is None else view_ops.parse(spec, _get(data_config, "num_views"))


def _to_batch(raw, data_config, keys=None):
  """Stored examples -> model inputs; augments when per-example keys are given."""
  image_key = _get(data_config, "image_key")
  text_key = _get(data_config, "text_key")
  image = raw[image_key]
  if _source(data_config) == "tfds":  # stored pixels; a shard reader decodes into these inputs
    image = preprocess.normalize(image, _get(data_config, "image_mean"),
                                 _get(data_config, "image_std"))
    image = preprocess.resize(image, data_config["image_size"])
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


def train_iterator(data_config,
                   *,
                   global_batch_size,
                   seed,
                   process_index=0,
                   process_count=1,
                   need_text=True):
  """Infinite iterator of host-local training batches, with get/set_state.

  `seed` fixes the order and the augmentation (pass data.shuffle_seed, or
  the run's seed when that is None). Reshuffles every epoch. Checks the data
  config first (`check_features(data_config, need_text)`): pass
  need_text=False to train on the images of a dataset without data.text_key.
  `iterator.set_state(state)` on a fresh iterator with the same arguments
  continues exactly where `state = iterator.get_state()` was taken (the state
  is a JSON-serialisable dict). With data.mixture, the batches draw on its
  sources in proportion to their weights (`source_mixture`).
  """
  local = _local_batch_size(global_batch_size, process_count)
  if data_config.get("mixture"):
    rows, counts = source_mixture.mixed_rows(
        data_config, seed, _DEFAULTS, functools.partial(_train_rows, need_text=need_text))
  else:
    rows, counts = _train_rows(data_config, seed, need_text)

  def load(step):
    return rows(_host_positions(step, global_batch_size, local, process_index))

  dataset = grain.MapDataset.range(sys.maxsize).map(load)
  batches = _TrainBatches(iter(dataset.to_iter_dataset(_READ_OPTIONS)), counts=counts)
  if data_config.get("mixture"):
    return source_mixture.CountedBatches(batches, source_mixture.names(data_config))
  return batches


def _train_rows(data_config, seed, need_text) -> tuple[source_mixture.Rows, bool]:
  """(rows(stream positions [b]) -> (batch, damaged examples met), whether damage is counted)
  of the training split, data config checked."""
  _check_config(data_config, need_text, data_config["train_split"])
  reader = split_reader(data_config, data_config["train_split"])
  views = view_ops_of(data_config)
  skips = _skips(data_config, reader)
  crop = train_crop(data_config)
  threads = host_threads.count(_get(data_config, "host_threads"))

  def rows(positions):
    index, epoch = _shuffled(positions, seed, reader.num_examples)
    if skips is None:
      raw, skipped = reader.read(index), 0
    else:
      raw, index, skipped = skips_lib.read_replacing(reader, skips, index, epoch, seed,
                                                     crop=crop, threads=threads)
    keys = preprocess.example_keys(seed, index, epoch)
    batch = _to_batch(raw, data_config, keys if data_config["augment"] else None)
    if views is not None:
      make_views = functools.partial(view_ops.make_views, ops=views,
                                     num_views=_get(data_config, "num_views"))
      batch["views"] = host_threads.map_chunks(make_views, (batch.pop("image"), keys), threads)
    return batch, skipped

  return rows, skips is not None


def _skips(data_config, reader) -> skips_lib.Skips | None:
  """The count of damaged examples for a shard reader; None for a TFDS split, which has none."""
  if isinstance(reader, SplitReader):
    return None
  limit = _get(data_config, "max_skipped_fraction")
  if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 <= limit <= 1:
    raise UserError(f"data.max_skipped_fraction={limit!r} must be a number in [0, 1]: the share "
                    "of a shard's examples that may be damaged")
  return skips_lib.Skips(reader, limit)


class _TrainBatches:
  """The training iterator: grain's over (batch, damaged examples met in it), yielding batches."""

  def __init__(self, iterator, counts: bool):
    self._iterator = iterator
    self._skipped = 0 if counts else None

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch, skipped = next(self._iterator)
    if self._skipped is not None:
      self._skipped += skipped
    return batch

  def get_state(self) -> dict:
    return self._iterator.get_state()

  def set_state(self, state: dict) -> None:
    self._iterator.set_state(state)

  def metrics(self) -> dict[str, int]:
    """{'skipped': the damaged examples met since the last call} for a shard source, else {}."""
    if self._skipped is None:
      return {}
    metrics, self._skipped = {"skipped": self._skipped}, 0
    return metrics


def eval_batches(data_config, *, split=None, batch_size, process_index=0, process_count=1):
  """One pass over `split` (default data.eval_split) in a fixed order.

  `batch_size` is global, like train_iterator's. Returns a grain MapDataset
  (len() = number of batches, the same on every host); the last batches are
  padded to the full host batch, with 'mask' False on padding rows (and on a
  shard source's damaged examples, `shards.skips`). Batches
  carry 'tokens' when the dataset has data.text_key (data.image_key must be a
  feature: `check_features(data_config, need_text=False)`).
  """
  local = _local_batch_size(batch_size, process_count)
  split = split or data_config["eval_split"]
  _check_config(data_config, False, split)
  reader = split_reader(data_config, split)
  num_batches = -(-reader.num_examples // batch_size)
  skips = _skips(data_config, reader)
  threads = host_threads.count(_get(data_config, "host_threads"))

  def load(step):
    positions = _host_positions(step, batch_size, local, process_index)
    mask = positions < reader.num_examples
    indices = np.where(mask, positions, 0)
    if skips is None:
      raw = reader.read(indices)
    else:
      raw, problems = reader.read_checked(indices, threads=threads)
      skips.note(indices[mask], [p for p, real in zip(problems, mask) if real])
      mask &= np.array([p is None for p in problems])
    batch = _to_batch(raw, data_config)
    batch["mask"] = mask
    return batch

  return grain.MapDataset.range(num_batches).map(load)
