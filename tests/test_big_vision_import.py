"""`jaxmm import big_vision` and `jaxmm export big_vision` against big_vision's own outputs.

tests/data/big_vision/ holds two tiny two-tower models that big_vision's model
code built with random weights (map: a MAP-pooled ViT without head, SigLIP's
t and b, python-loop blocks; scan: a class-token ViT with a head, no bias,
blocks stacked as `scan=True` stores them, bfloat16 weights), big_vision's
embeddings and logits of fixed inputs, a SentencePiece vocabulary trained on
the shapes captions and big_vision's token ids of captions
(tools/make_big_vision_testdata.py, which also checks that big_vision loads
jaxmm's export).
"""
import json
import math
import pathlib

import jax
import numpy as np
import pytest

from conftest import assert_same_bits, short_train_config
from jaxmm import analysis
from jaxmm import config_loading
from jaxmm import data
from jaxmm.commands import cli
from jaxmm.weights import big_vision
from jaxmm.weights import big_vision_links
from jaxmm.weights import links
from jaxmm.weights import run_dir

DATA = pathlib.Path(__file__).resolve().parent / "data" / "big_vision"
REPO = DATA.parents[2]
VOCAB = DATA / "vocab.model"
MODELS = ("map", "scan")
U = 2.0**-24  # float32's unit roundoff
# jaxmm and big_vision compute the same float32 sums in other orders (and jaxmm leaves out the
# key bias, a constant per row of attention logits). A tower is about 12 products in sequence,
# each of at most K = 192 terms (an 8x8x3 patch); independent rounding errors grow like √K·u in
# a sum and add in quadrature over the products (Higham 2002, §2.8 and §3.1): √12·√192·u ≈ 48u
# for each implementation, 96u for their difference, on entries of unit-norm embeddings.
EMBEDDING_TOL = 96 * U


def _import(arch, weights, out, vocab=VOCAB):
  cli.main(["import", "big_vision", "--arch", str(arch), "--weights", str(weights), "--vocab",
            str(vocab), "--out", str(out)])


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """name -> the workdir `jaxmm import big_vision` wrote for test model `name`."""
  runs = {}
  for name in MODELS:
    runs[name] = str(tmp_path_factory.mktemp(name) / "run")
    _import(DATA / f"{name}.json", DATA / f"{name}.npz", runs[name])
  return runs


def _saved(name):
  return np.load(DATA / f"{name}_outputs.npz")


@pytest.mark.parametrize("name", MODELS)
def test_embeddings_equal_big_visions(imported, name):
  run, saved = analysis.load_run(imported[name]), _saved(name)
  # uint8 images through the run's own normalisation, and the ones big_vision's value_range made.
  for images in (saved["images"], saved["pixels"]):
    np.testing.assert_allclose(run.embed_images(images), saved["image_embeddings"], rtol=0,
                               atol=EMBEDDING_TOL)
  model = run.model
  texts = model.apply({"params": run.params}, saved["tokens"], method=model.encode_text)
  np.testing.assert_allclose(texts, saved["text_embeddings"], rtol=0, atol=EMBEDDING_TOL)


def test_texts_embed_through_big_visions_tokenization(imported):
  """The run's own tokenizer (data.tokenizer='big_vision:vocab.model') gives the ids that the
  reference embedded, so captions embed as big_vision embedded them."""
  run, saved = analysis.load_run(imported["map"]), _saved("map")
  captions = list(np.load(DATA / "tokenizer.npz")["captions"])
  np.testing.assert_allclose(run.embed_texts(captions), saved["text_embeddings"], rtol=0,
                             atol=EMBEDDING_TOL)


@pytest.mark.parametrize("name", MODELS)
def test_zero_shot_logits_equal_big_visions(imported, name):
  run, saved = analysis.load_run(imported[name]), _saved(name)
  zimg, ztxt, aux = run.model.apply({"params": run.params}, saved["pixels"], saved["tokens"])
  scale = np.exp(aux["log_scale"])
  logits = scale * np.asarray(zimg) @ np.asarray(ztxt).T + aux.get("bias", 0.0)
  # |Δ(s·z·t)| <= s·(|Δz|·|t| + |z|·|Δt|) <= s·2·√E·EMBEDDING_TOL (Cauchy-Schwarz).
  bound = scale * 2 * math.sqrt(saved["image_embeddings"].shape[1]) * EMBEDDING_TOL
  np.testing.assert_allclose(logits, saved["logits"], rtol=0, atol=bound)
  np.testing.assert_array_equal(logits.argmax(1), saved["logits"].argmax(1))


@pytest.mark.parametrize("max_len", [16, 8])
def test_tokenizer_gives_big_visions_ids(max_len):
  saved = np.load(DATA / "tokenizer.npz")
  tokenizer = data.get_tokenizer(f"big_vision:{VOCAB}")
  assert tokenizer.pad_id == 1  # T5's end-of-text id, which big_vision pads with
  np.testing.assert_array_equal(tokenizer.encode_batch(list(saved["captions"]), max_len),
                                saved[f"ids_{max_len}"])


def test_tokenizer_keeps_the_end_of_text_id_last():
  """big_vision's documented examples (pp/ops_text.py, eos='sticky', pad_value=1) with the test
  vocabulary, whose 'a' is one piece: id 5 (and 'A', which is not lowercased, two others)."""
  import sentencepiece  # pylint: disable=import-outside-toplevel
  assert sentencepiece.SentencePieceProcessor(model_file=str(VOCAB)).encode("a") == [5]
  tokenizer = data.get_tokenizer(f"big_vision:{VOCAB}")
  np.testing.assert_array_equal(tokenizer.encode("A", 3), [5, 1, 1])
  np.testing.assert_array_equal(tokenizer.encode("a a", 3), [5, 5, 1])
  np.testing.assert_array_equal(tokenizer.encode("a a a", 3), [5, 5, 1])


def test_load_run_reads_an_imported_run(imported):
  run = analysis.load_run(imported["map"])
  assert run.step == 0 and run.config.loss.name == "siglip"
  model = run.config.model
  assert (model.image.pool, model.image_projection, model.embed_dim) == ("map", False, 64)
  assert (model.text.pool, model.text.mask_pad, model.text.pad_id) == ("last", False, 1)
  assert "image_proj" not in run.params and set(run.params["text_proj"]) == {"kernel", "bias"}
  assert run.config.data.tokenizer == f"big_vision:{VOCAB}"
  assert run.config.data.image_mean is None and run.config.data.max_len == 16
  scan = analysis.load_run(imported["scan"]).config
  assert (scan.model.image.pool, scan.model.init_bias, scan.loss.name) == ("cls", None, "clip")


@pytest.mark.parametrize("name", MODELS)
def test_export_then_import_is_bit_exact(imported, name, tmp_path):
  exported = tmp_path / f"{name}_exported.npz"
  cli.main(["export", "big_vision", "--run", imported[name], "--out", str(exported)])
  _import(tmp_path / f"{name}_exported.json", exported, tmp_path / "again")
  first, again = analysis.load_run(imported[name]), analysis.load_run(str(tmp_path / "again"))
  assert again.config.model == first.config.model
  assert_same_bits(first.params, again.params)


def test_export_writes_big_visions_tensors(imported, tmp_path):
  exported = tmp_path / "map.npz"
  cli.main(["export", "big_vision", "--run", imported["map"], "--out", str(exported)])
  original, written = np.load(DATA / "map.npz"), np.load(exported)
  assert sorted(written.files) == sorted(original.files)
  for key in written.files:
    if key.endswith("/key/bias"):  # the softmax ignores it: exported as zero
      np.testing.assert_array_equal(written[key], 0)
    else:
      np.testing.assert_array_equal(written[key], original[key], err_msg=key)
  arch = json.loads((tmp_path / "map.json").read_text())
  assert arch["model"]["out_dim"] == [None, 64] and arch["init_shapes"] == [[1, 32, 32, 3],
                                                                            [1, 16]]


@pytest.mark.parametrize("name", sorted(json.loads((DATA / "archs.json").read_text())))
def test_named_architectures_are_big_visions(name):
  """Each name gives the parameters big_vision's two_towers.Model initialises for it
  (tests/data/big_vision/archs.json), every shape equal."""
  saved = json.loads((DATA / "archs.json").read_text())[name]
  config = config_loading.load_config(f"{REPO}/configs/siglip_big_vision.py:{name}")
  shapes = links.peer_shapes(big_vision_links.links(config.model),
                             run_dir.abstract_params(config))
  assert shapes == {key: tuple(shape) for key, shape in saved.items()}


def test_scanned_blocks_are_read_as_the_python_loops():
  stacked = big_vision.read_npz(str(DATA / "scan.npz"))
  raw = np.load(DATA / "scan.npz")["params/txt/Encoder_0/encoderblock/LayerNorm_0/scale"]
  for i in range(2):
    block = stacked[f"txt/Encoder_0/encoderblock_{i}/LayerNorm_0/scale"]
    np.testing.assert_array_equal(block.view(np.uint16), raw[i].view(np.uint16))


@pytest.mark.slow  # test_lit covers LiT by default; here, the imported tower's config
def test_lit_locks_the_imported_image_tower(imported, shapes_data_dir, run_image_text, tmp_path):
  config = short_train_config(f"{REPO}/configs/lit_open_clip.py:{imported['map']}",
                              shapes_data_dir, "model.text.width=32", "model.text.depth=1",
                              "model.text.mlp_dim=64", "model.text.num_heads=2", "data.max_len=16",
                              "loss.variant=gather")
  run_image_text(config, str(tmp_path / "lit"))
  lit, source = analysis.load_run(str(tmp_path / "lit")), analysis.load_run(imported["map"])
  assert lit.step == 2 and "image_proj" not in lit.params
  jax.tree.map(np.testing.assert_array_equal, lit.params["image_tower"],
               source.params["image_tower"])


@pytest.mark.slow  # a second training run beside LiT's
def test_init_from_an_imported_run_fine_tunes_it(imported, shapes_data_dir, run_image_text,
                                                 tmp_path):
  config = short_train_config(f"{REPO}/configs/siglip_big_vision.py:{DATA / 'map.json'}",
                              shapes_data_dir, f"init_from.workdir={imported['map']}",
                              f"data.tokenizer=big_vision:{VOCAB}", "loss.variant=gather")
  state = run_image_text(config, str(tmp_path / "tuned"))
  source = analysis.load_run(imported["map"])
  assert int(state.step) == 2
  # Started from the imported parameters, then moved by two AdamW steps of lr <= 1e-5, each
  # at most lr·(|m/√v| <= ~1 + weight decay 0.1·|w|) per entry: far below 1e-3 for |w| < 100.
  leaves = jax.tree_util.tree_flatten_with_path(source.params)[0]
  for path, value in leaves:
    assert np.abs(_at(state.params, path) - value).max() < 1e-3, path
  assert any(not np.array_equal(_at(state.params, path), value)
             for path, value in leaves)


def _at(tree, path):
  for key in path:
    tree = tree[key.key]
  return np.asarray(tree)
