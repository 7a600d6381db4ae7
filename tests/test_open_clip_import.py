"""`jaxmm import open_clip` and `jaxmm export open_clip` against open_clip's own outputs.

tests/data/open_clip/ holds two small CLIPs that open_clip built with random
weights (gelu: nn.GELU, ln_pre, float16 weights; quickgelu: QuickGELU, no
ln_pre, LayerNorm eps 1e-6, a logit bias) and open_clip's embeddings and
logits of fixed inputs (tools/make_open_clip_testdata.py, which also checks
that open_clip loads jaxmm's export).
"""
import json
import math
import pathlib
import shutil

import jax
import numpy as np
import pytest

from conftest import assert_same_bits, short_train_config
from jaxmm import analysis
from jaxmm import config_loading
from jaxmm.commands import cli
from jaxmm.weights import links
from jaxmm.weights import open_clip
from jaxmm.weights import open_clip_links
from jaxmm.weights import run_dir
from jaxmm.weights import safetensors

DATA = pathlib.Path(__file__).resolve().parent / "data" / "open_clip"
REPO = DATA.parents[2]
MODELS = ("gelu", "quickgelu")
U = 2.0**-24  # float32's unit roundoff
# jaxmm and open_clip compute the same float32 sums in other orders. A tower is about 12
# products in sequence (patch or token embedding, q, k, v, the attention's two, its output,
# the MLP's two per block, the projection), each of at most K = 192 terms (an 8x8x3 patch).
# Independent rounding errors grow like √K·u in a sum, and those of products in sequence add
# in quadrature (Higham 2002, Accuracy and Stability of Numerical Algorithms, §2.8 and §3.1):
# √12·√192·u ≈ 48u for each implementation, 96u for their difference, on entries of
# unit-norm embeddings (at most 1). A wrong GELU or LayerNorm eps errs by 250u and more.
EMBEDDING_TOL = 96 * U


def _logit_tol(saved, scale):
  """|Δ(s·z·t)| <= s·(|Δz|·|t| + |z|·|Δt|) <= s·2·√E·EMBEDDING_TOL (Cauchy-Schwarz)."""
  return scale * 2 * math.sqrt(saved["image_embeddings"].shape[1]) * EMBEDDING_TOL


def _import(arch, weights, out):
  cli.main(["import", "open_clip", "--arch", str(arch), "--weights", str(weights), "--out",
            str(out)])


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """name -> the workdir `jaxmm import open_clip` wrote for test model `name`."""
  runs = {}
  for name in MODELS:
    runs[name] = str(tmp_path_factory.mktemp(name) / "run")
    _import(DATA / f"{name}.json", DATA / f"{name}.safetensors", runs[name])
  return runs


def _saved(name):
  return np.load(DATA / f"{name}.npz")


def _encode_text(run, tokens):
  model = run.model
  return np.asarray(model.apply({"params": run.params}, tokens, method=model.encode_text))


@pytest.mark.parametrize("name", MODELS)
def test_embeddings_equal_open_clips(imported, name):
  run, saved = analysis.load_run(imported[name]), _saved(name)
  # uint8 images through the run's own normalisation, and the ones open_clip normalised.
  for images in (saved["images"], saved["pixels"]):
    np.testing.assert_allclose(run.embed_images(images), saved["image_embeddings"], rtol=0,
                               atol=EMBEDDING_TOL)
  np.testing.assert_allclose(_encode_text(run, saved["tokens"]), saved["text_embeddings"], rtol=0,
                             atol=EMBEDDING_TOL)


@pytest.mark.parametrize("name", MODELS)
def test_zero_shot_logits_equal_open_clips(imported, name):
  run, saved = analysis.load_run(imported[name]), _saved(name)
  zimg, ztxt, aux = run.model.apply({"params": run.params}, saved["pixels"], saved["tokens"])
  scale = np.exp(aux["log_scale"])
  logits = scale * np.asarray(zimg) @ np.asarray(ztxt).T + aux.get("bias", 0.0)
  np.testing.assert_allclose(logits, saved["logits"], rtol=0, atol=_logit_tol(saved, scale))
  np.testing.assert_array_equal(logits.argmax(1), saved["logits"].argmax(1))


def test_load_run_reads_an_imported_run(imported):
  run = analysis.load_run(imported["quickgelu"])
  assert run.step == 0 and run.ema == {} and run.config.experiment == "image_text"
  assert run.config.loss.name == "siglip"  # the model has a logit bias
  model = run.config.model
  assert (model.image.pool, model.image.ln_pre, model.image.activation) == ("cls", False,
                                                                            "quick_gelu")
  assert (model.text.pool, model.text.causal, model.text.norm_eps) == ("eot", True, 1e-6)
  assert model.proj_bias is False and set(run.params["image_proj"]) == {"kernel"}
  assert run.config.data.tokenizer == "clip_bpe" and run.config.data.max_len == 16
  assert run.config.data.image_mean == open_clip.OPENAI_MEAN
  assert json.loads((pathlib.Path(imported["quickgelu"]) / "config.json").read_text()) == (
      json.loads(config_loading.config_to_json(run.config)))


@pytest.mark.parametrize("name", MODELS)
def test_export_then_import_is_bit_exact(imported, name, tmp_path):
  exported = tmp_path / f"{name}_exported.safetensors"
  cli.main(["export", "open_clip", "--run", imported[name], "--out", str(exported)])
  _import(tmp_path / f"{name}_exported.json", exported, tmp_path / "again")
  first, again = analysis.load_run(imported[name]), analysis.load_run(str(tmp_path / "again"))
  assert again.config.model == first.config.model
  assert_same_bits(first.params, again.params)


def test_export_writes_open_clips_tensors(imported, tmp_path):
  exported = tmp_path / "gelu.safetensors"
  cli.main(["export", "open_clip", "--run", imported["gelu"], "--out", str(exported)])
  original = {
      key: value.astype(np.float32)
      for key, value in safetensors.read(str(DATA / "gelu.safetensors")).items()
  }
  written = safetensors.read(str(exported))
  assert sorted(written) == sorted(original)
  for key in set(written) - {"visual.class_embedding", "visual.positional_embedding"}:
    value, expected = written[key], original[key]
    if key.endswith("in_proj_bias"):  # q, k, v: the key bias is zero (the softmax ignores it)
      (query, key_bias, value), (expected_query, _, expected_value) = (np.split(value, 3),
                                                                        np.split(expected, 3))
      np.testing.assert_array_equal(key_bias, 0)
      value, expected = np.concatenate([query, value]), np.concatenate([expected_query,
                                                                         expected_value])
    np.testing.assert_array_equal(value, expected, err_msg=key)
  # The class token's position embedding is folded into the class token.
  position, cls = original["visual.positional_embedding"], original["visual.class_embedding"]
  np.testing.assert_array_equal(written["visual.class_embedding"], cls + position[0])
  np.testing.assert_array_equal(written["visual.positional_embedding"][0], 0)
  np.testing.assert_array_equal(written["visual.positional_embedding"][1:], position[1:])
  assert json.loads((tmp_path / "gelu.json").read_text())["vision_cfg"]["head_width"] == 32


@pytest.mark.parametrize("name", sorted(open_clip.ARCHS))
def test_named_architectures_are_open_clips(name):
  """Each name gives the model of open_clip's own config, with the tensors of its state dict
  (tests/data/open_clip/archs.json, from open_clip)."""
  saved = json.loads((DATA / "archs.json").read_text())
  assert open_clip.run_settings(*open_clip.read_arch(name), name) == open_clip.run_settings(
      saved["configs"][name], {}, name)
  config = config_loading.load_config(f"{REPO}/configs/open_clip.py:{name}")
  shapes = links.peer_shapes(open_clip_links.links(config.model), run_dir.abstract_params(config))
  family = saved["shapes"][name.removesuffix("-quickgelu")]
  assert shapes == {key: tuple(shape) for key, shape in family.items()}


def test_an_open_clip_config_json_gives_its_image_normalisation(tmp_path):
  path = tmp_path / "open_clip_config.json"
  path.write_text(json.dumps(dict(model_cfg=json.loads((DATA / "gelu.json").read_text()),
                                  preprocess_cfg=dict(mean=[0.5] * 3, std=[0.25] * 3))))
  settings = open_clip.run_settings(*open_clip.read_arch(str(path)), str(path))
  assert settings["data"]["image_mean"] == (0.5,) * 3
  assert settings["data"]["image_std"] == (0.25,) * 3


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, "bfloat16"])
def test_safetensors_round_trip(tmp_path, dtype):
  tensors = {"w": np.arange(12, dtype=np.float32).reshape(3, 4).astype(dtype),
             "s": np.asarray(2.5, np.float32).astype(dtype), "empty": np.zeros((0, 3), dtype)}
  safetensors.write(str(tmp_path / "x.safetensors"), tensors, {"format": "pt"})
  back = safetensors.read(str(tmp_path / "x.safetensors"))
  assert list(back) == list(tensors)
  for key, value in tensors.items():
    assert back[key].dtype == value.dtype and back[key].shape == value.shape
    np.testing.assert_array_equal(back[key], value)


@pytest.mark.slow  # test_lit covers LiT by default; here, the imported tower's config
def test_lit_locks_the_imported_image_tower(imported, shapes_data_dir, run_image_text, tmp_path):
  config = short_train_config(f"{REPO}/configs/lit_open_clip.py:{imported['gelu']}",
                              shapes_data_dir, "model.text.width=32", "model.text.depth=1",
                              "model.text.mlp_dim=64", "model.text.num_heads=2", "data.max_len=16",
                              "loss.variant=gather")
  run_image_text(config, str(tmp_path / "lit"))
  lit, source = analysis.load_run(str(tmp_path / "lit")), analysis.load_run(imported["gelu"])
  assert lit.step == 2
  for tower in ("image_tower", "image_proj"):
    jax.tree.map(np.testing.assert_array_equal, lit.params[tower], source.params[tower])


@pytest.mark.slow  # a second training run beside LiT's
def test_jaxmm_train_fine_tunes_an_imported_run(imported, shapes_data_dir, run_image_text,
                                                tmp_path):
  workdir = str(tmp_path / "fine_tuned")
  shutil.copytree(imported["gelu"], workdir)
  # The test model's 256 ids take the bytes tokenizer's; CLIP's BPE needs 49408.
  config = short_train_config(f"{REPO}/configs/open_clip.py:{DATA / 'gelu.json'}",
                              shapes_data_dir, "data.tokenizer=bytes")
  run_image_text(config, workdir)
  tuned, source = analysis.load_run(workdir), analysis.load_run(imported["gelu"])
  assert tuned.step == 2
  for tower in ("image_tower", "text_tower"):
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(tuned.params[tower]),
                                                         jax.tree.leaves(source.params[tower])))
