"""CLIP's BPE tokenizer (data.tokenizer='clip_bpe') gives the ids open_clip's tokenizer gives.

open_clip's ids of the captions in tests/data/open_clip/tokenizer.npz (punctuation,
HTML entities, accents, CJK and Cyrillic, an emoji, full-width letters and a
ligature, runs of whitespace, the empty text, one over-long caption) were saved by
tools/make_open_clip_testdata.py.
"""
import gzip
import pathlib

import numpy as np
import pytest

from jaxmm import data
from jaxmm.data import clip_bpe
from jaxmm.errors import UserError

SAVED = np.load(pathlib.Path(__file__).parent / "data" / "open_clip" / "tokenizer.npz")


@pytest.fixture(scope="module")
def tokenizer():
  return data.get_tokenizer("clip_bpe")


@pytest.mark.parametrize("max_len", [77, 16])
def test_ids_are_open_clips(tokenizer, max_len):
  captions = [str(c) for c in SAVED["captions"]]
  np.testing.assert_array_equal(tokenizer.encode_batch(captions, max_len), SAVED[f"ids_{max_len}"])


def test_bytes_captions_are_read_as_utf8(tokenizer):
  caption = str(SAVED["captions"][2])
  np.testing.assert_array_equal(tokenizer.encode(caption.encode("utf-8"), 77), SAVED["ids_77"][2])


def test_vocabulary_and_special_ids(tokenizer):
  assert tokenizer.vocab_size == 49408
  assert (tokenizer.sot_id, tokenizer.eot_id, tokenizer.pad_id) == (49406, 49407, 0)
  # The text tower finds the end of a text as its largest id.
  ids = tokenizer.encode("a red circle", 16)
  assert ids[int(np.argmax(ids))] == tokenizer.eot_id and ids[0] == tokenizer.sot_id


def test_over_long_text_keeps_its_end_of_text_id(tokenizer):
  long = str(SAVED["captions"][-1])
  ids = tokenizer.encode(long, 16)
  assert ids[-1] == tokenizer.eot_id and tokenizer.token_count(long) > 16


def test_token_count_counts_the_special_ids(tokenizer):
  assert tokenizer.token_count("a photo of a cat.") == 8  # sot, a, photo, of, a, cat, ., eot
  assert tokenizer.token_count("") == 2


def test_decode_gives_the_cleaned_words(tokenizer):
  assert tokenizer.decode(tokenizer.encode("A Photo of a  CAT.", 16)) == "a photo of a cat ."


def test_a_vocabulary_path_reads_that_file(tmp_path):
  copy = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
  copy.write_bytes(pathlib.Path(clip_bpe.BUNDLED_VOCAB).read_bytes())
  np.testing.assert_array_equal(
      data.get_tokenizer(str(copy)).encode_batch(["a photo of a cat."], 77), SAVED["ids_77"][:1])


def test_missing_vocabulary_says_what_to_pass(tmp_path):
  missing = str(tmp_path / "bpe_simple_vocab_16e6.txt.gz")
  with pytest.raises(UserError, match=f"data.tokenizer='{missing}': the vocabulary .* is not a "
                     "file; set --config.data.tokenizer to the path of CLIP's"):
    data.get_tokenizer(missing)


def test_a_file_that_is_no_vocabulary_is_refused(tmp_path):
  garbage = tmp_path / "words.txt.gz"
  garbage.write_bytes(b"not gzip")
  with pytest.raises(UserError, match="is not a gzipped BPE vocabulary"):
    data.get_tokenizer(str(garbage))
  short = tmp_path / "short.txt.gz"
  short.write_bytes(gzip.compress(b"#version: 0.2\na b\n"))
  with pytest.raises(UserError, match="does not hold CLIP's 48894 merges"):
    data.get_tokenizer(str(short))
