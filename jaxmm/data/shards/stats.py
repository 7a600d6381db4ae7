"""What a list of shards holds, read whole: `jaxmm data stats`.

Every example is read and its image decoded, so the counts are exact: the
examples, the damaged ones by what is wrong with them (what the pipelines
would skip), the caption lengths in UTF-8 bytes (the `bytes` tokenizer's
tokens), the labels and their numbers of classes.
"""
import numpy as np
import tqdm

from jaxmm.data.shards import decode
from jaxmm.data.shards.reader import ShardReader

_CHUNK = 256
NAMED = 5


def scan(files: list[str], source: str, image_key: str, text_key: str | None) -> dict:
  """Reads every example of `files` (shards of `source`); returns
  {'source', 'shards', 'examples', 'damaged': {what: count}, 'first_damaged': [NAMED
  'PATH:KEY: why'], 'tar_errors': ['PATH: error'], 'caption_bytes': int64 [n] of the undamaged,
  'labels': {name: number of classes, or 'bool'}}."""
  # Images are only decoded here, never resized: the reader's image size is unused.
  reader = ShardReader(files, source, image_key, text_key, image_size=1, cache=False,
                       settings=("--image-key", "--text-key"))
  damaged, named, lengths = {}, [], []
  progress = tqdm.tqdm(total=reader.num_examples, desc="examples read", unit="example",
                       dynamic_ncols=True)
  for shard in reader.shards:
    for start in range(0, shard.num_examples, _CHUNK):
      rows = np.arange(start, min(start + _CHUNK, shard.num_examples))
      for row, example in zip(rows, shard.read(rows, reader.label_kinds)):
        problem = example.problem
        if problem is None:
          try:
            decode.pixels(example.image)
          except decode.Undecodable as e:
            problem = str(e)
        if problem is None:
          text = example.text
          lengths.append(len(text.encode() if isinstance(text, str) else text or b""))
          continue
        what = problem.split(" (")[0]
        damaged[what] = damaged.get(what, 0) + 1
        if len(named) < NAMED:
          named.append(f"{shard.name(row)}: {problem}")
      progress.update(len(rows))
  progress.close()
  classes = reader.class_labels()
  return dict(source=source,
              shards=len(reader.shards),
              examples=reader.num_examples,
              damaged=damaged,
              first_damaged=named,
              tar_errors=[f"{s.path}: {s.error}" for s in reader.shards if s.error],
              caption_bytes=np.array(lengths if text_key else [], np.int64),
              labels={name: classes.get(name, "bool") for name in reader.label_kinds})


def lines(stats: dict) -> list[str]:
  """The report of `scan`'s `stats`, one fact a line."""
  damaged = sum(stats["damaged"].values())
  kinds = ", ".join(f"{what}: {count}" for what, count in sorted(stats["damaged"].items()))
  out = [f"shards        {stats['shards']} ({stats['source']})",
         f"examples      {stats['examples']}",
         f"damaged       {damaged}" + (f" ({kinds})" if kinds else "")]
  out += [f"  {name}" for name in stats["first_damaged"]]
  out += [f"tar error     {error}" for error in stats["tar_errors"]]
  lengths = stats["caption_bytes"]
  if len(lengths):
    out.append(f"caption bytes min {lengths.min()}, median {np.median(lengths):g}, "
               f"p99 {np.percentile(lengths, 99):g}, max {lengths.max()}")
  labels = [f"{name} ({classes} classes)" if classes != "bool" else f"{name} (bool)"
            for name, classes in stats["labels"].items()]
  out.append("labels        " + (", ".join(labels) or "none"))
  return out
