"""Webdataset tar shards and parquet files as data sources (data.source 'wds' or 'parquet').

The layouts that img2dataset writes, and that open_clip trains on:

  wds      `00000.tar` holding `KEY.jpg` (or .png, .webp), `KEY.txt`, `KEY.json`
  parquet  `00000.parquet` with a binary image column, a string caption column
           and integer or bool label columns

Both are read by random access, so the pipelines' contract holds as for TFDS
(batches a function of (seed, step), exact resume, any number of processes):

  files.py      data.files / data.eval_files: globs or lists, local or gs://
  tar_index.py  each tar's member index, built once and cached beside it
  wds.py        a tar's examples by row
  parquet.py    a parquet file's examples by row group
  stored.py     an example as stored, before decoding; a shard's bytes
  decode.py     image bytes -> float32 [S, S, 3], as the TFDS pipeline makes them
  reader.py     ShardReader: SplitReader's interface over a list of shards
  source.py     which shards hold a split; their reader, once per process
  skips.py      damaged examples: replaced, left out, counted, limited
  export.py     a TFDS split written as shards (`jaxmm data export`)
  stats.py      what a list of shards holds (`jaxmm data stats`)
"""
from jaxmm.data.shards.reader import ShardReader
from jaxmm.data.shards.source import SOURCES
from jaxmm.data.shards.source import split_reader
