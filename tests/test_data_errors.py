"""Mistakes in the data config: each is one line naming the key to change."""
import pytest

from jaxmm import data
from jaxmm.errors import UserError


def _config(data_dir, **overrides):
  config = dict(name="toy_pairs",
                data_dir=data_dir,
                train_split="train",
                eval_split="train",
                image_key="img",
                text_key="text",
                cache=True,
                image_size=8,
                max_len=8,
                tokenizer="bytes",
                augment=False)
  config.update(overrides)
  return config


def _error(call, *args, **kwargs) -> str:
  """The message of the UserError that `call` raises, checked to be one line."""
  with pytest.raises(UserError) as error:
    call(*args, **kwargs)
  message = str(error.value)
  assert "\n" not in message
  return message


# --------------------------------------------------------------- data.name


def test_unknown_name_is_one_short_line_with_the_nearest_name_and_the_build_command(
    shapes_data_dir):
  message = _error(data.data_source, "shapez", "train", data_dir=shapes_data_dir)
  assert len(message) < 400, message
  assert message.startswith("data.name='shapez' is not prepared in")
  assert "nearest bundled or prepared datasets: 'shapes';" in message
  assert f"tfds build shapez --data_dir={shapes_data_dir} --file_format=array_record" in message


def test_unprepared_names_near_a_prepared_dataset_suggest_it(toy_pairs_data_dir):
  assert data.get_builder("toy_pairs", toy_pairs_data_dir).is_prepared()
  assert "nearest bundled or prepared datasets: 'toy_pairs';" in _error(
      data.get_builder, "toy_pair", toy_pairs_data_dir)
  # tfds itself answers an unprepared version with the list of all its datasets.
  message = _error(data.get_builder, "toy_pairs:2.0.0", toy_pairs_data_dir)
  assert "'toy_pairs:1.0.0'" in message and len(message) < 400, message
  message = _error(data.get_builder, "mnist", toy_pairs_data_dir)
  assert "'shapes', 'toy_pairs'" in message and "tfds build mnist" in message


# ----------------------------------------------------------- data.data_dir


def test_data_dir_that_is_not_a_directory(tmp_path, monkeypatch):
  path = tmp_path / "file"
  path.write_text("")
  message = _error(data.get_builder, "shapes", str(path))
  assert message.startswith(f"data.data_dir='{path}' is a file")
  assert "--config.data.data_dir" in message
  message = _error(data.get_builder, "shapes", str(path / "below"))
  assert message.startswith(f"data.data_dir='{path / 'below'}' cannot be written")
  monkeypatch.setenv("JAXMM_DATA_DIR", str(path))
  message = _error(data.get_builder, "shapes")
  assert message.startswith(f"$JAXMM_DATA_DIR='{path}' (data.data_dir is unset) is a file")
  assert [p.name for p in tmp_path.iterdir()] == ["file"]


# ------------------------------------------------- data.image_key, text_key


def test_image_and_text_keys_must_be_features_of_the_dataset(toy_pairs_data_dir):
  features = "(its features: 'img', 'label', 'text')"
  bad_image = _config(toy_pairs_data_dir, image_key="image")
  message = _error(data.train_iterator, bad_image, global_batch_size=4, seed=0)
  assert message.startswith("data.image_key='image' is not a feature of 'toy_pairs'")
  assert features in message and "--config.data.image_key" in message
  _error(data.eval_batches, bad_image, batch_size=4)
  no_text = _config(toy_pairs_data_dir, text_key="caption")
  message = _error(data.train_iterator, no_text, global_batch_size=4, seed=0)
  assert message.startswith("data.text_key='caption' is not a feature of 'toy_pairs'")
  assert features in message and "--config.data.text_key" in message
  # Image-only use needs no text feature.
  batch = next(data.train_iterator(no_text, global_batch_size=4, seed=0, need_text=False))
  assert set(batch) == {"image", "label"}
  assert set(data.eval_batches(no_text, batch_size=4)[0]) == {"image", "label", "mask"}
  data.check_features(_config(toy_pairs_data_dir))


def test_a_config_without_the_optional_keys_uses_their_defaults(shapes_data_dir, monkeypatch):
  monkeypatch.setenv("JAXMM_DATA_DIR", shapes_data_dir)
  config = dict(name="shapes",
                train_split="train",
                eval_split="test",
                image_size=32,
                max_len=8,
                tokenizer="bytes",
                augment=False)
  data.check_features(config)
  batches = data.eval_batches(config, batch_size=1000)
  assert len(batches) == 2 and batches[0]["tokens"].shape == (1000, 8)


# ----------------------------------------------------------- data.tokenizer


def test_tokenizer_spec_errors(tmp_path, toy_pairs_data_dir):
  message = _error(data.get_tokenizer, "words")
  assert message.startswith("data.tokenizer='words' is not a tokenizer")
  assert "'bytes'" in message and "SentencePiece .model" in message
  missing = str(tmp_path / "missing.model")
  assert _error(data.get_tokenizer, missing).startswith(f"data.tokenizer='{missing}' is not a file")
  garbage = tmp_path / "garbage.model"
  garbage.write_text("not a model")
  message = _error(data.get_tokenizer, str(garbage))
  assert message.startswith(f"data.tokenizer='{garbage}' is not a SentencePiece model file")
  # The pipeline checks it when it is made, not in a reader thread.
  message = _error(data.train_iterator, _config(toy_pairs_data_dir, tokenizer="words"),
                   global_batch_size=4, seed=0)
  assert message.startswith("data.tokenizer='words'")


# ------------------------------------------------------------ data.max_len


def test_token_count_is_the_untruncated_length(tmp_path):
  import sentencepiece  # pylint: disable=import-outside-toplevel
  text = "a small red triangle — café"
  assert data.get_tokenizer("bytes").token_count(text) == len(text.encode("utf-8"))
  assert data.get_tokenizer("bytes").token_count(text.encode("utf-8")) == len(text.encode())
  prefix = str(tmp_path / "spm")
  sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter([text, "a large blue star"] * 50),
                                           model_prefix=prefix,
                                           vocab_size=20,
                                           pad_id=0,
                                           unk_id=1,
                                           bos_id=-1,
                                           eos_id=-1,
                                           minloglevel=2)
  reference = sentencepiece.SentencePieceProcessor(model_file=prefix + ".model")
  pieces = data.get_tokenizer(prefix + ".model")
  assert pieces.token_count(text) == len(reference.encode(text)) > 4
  assert pieces.token_count(text.encode("utf-8")) == len(reference.encode(text))


def test_truncation_is_counted_and_reported(shapes_data_dir):
  source = data.data_source("shapes", "test", data_dir=shapes_data_dir)
  lengths = [len(source[i]["caption"].decode("utf-8").encode("utf-8")) for i in range(len(source))]
  cut = sum(length > 40 for length in lengths)
  assert 0 < cut < len(lengths)
  config = _config(shapes_data_dir, name="shapes", image_key="image", text_key="caption",
                   max_len=40)
  assert data.count_truncated(config, "test", sample_size=5000) == (cut, 2000, max(lengths))
  assert data.truncation_warning(config, "test", sample_size=5000) == (
      f"data.max_len=40 cuts {cut} of 2000 sampled test captions (longest: {max(lengths)} "
      f"tokens); set --config.data.max_len={max(lengths)} to keep them whole")
  whole = dict(config, max_len=max(lengths))
  assert data.truncation_warning(whole, "test", sample_size=5000) is None
  # By default: 1000 train captions, the same on every call.
  counted = data.count_truncated(config)
  assert counted[1] == 1000 and data.count_truncated(config) == counted
  assert 0 < counted[0] < 1000 and counted[2] > 40
