"""Text-to-image: a denoiser conditioned on captions through a contrastive run's text tower."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import cli_error_line
from jaxmm import analysis
from jaxmm import config_loading
from jaxmm import diffusion
from jaxmm import train
from jaxmm.errors import UserError
from jaxmm.evaluators import prompt_judge
from jaxmm.experiments import diffusion as diffusion_experiment
from jaxmm.models.caption_conditioning import CaptionEncoder, CrossAttention
from jaxmm.models.text import TextTransformer
from jaxmm.runs import caption_condition
from jaxmm.data import shapes

# configs/t2i_shapes.py shrunk to a 16×16 U-Net whose text tower is TINY_OVERRIDES' SigLIP's.
TINY_T2I = ("batch_size=16", "total_steps=3", "eval_every=0", "checkpoint_every=1",
            "optim.warmup_steps=1", "data.image_size=16", "data.max_len=8", "model.channels=8",
            "model.channel_mult=(1, 2)", "model.attn_resolutions=(4,)", "model.num_heads=2",
            "model.text.width=32", "model.text.depth=1", "model.text.num_heads=2",
            "model.text.mlp_dim=64")
TOWER = "caption/text_tower"


@pytest.fixture(scope="module")
def source(tiny_siglip_run):
  """A finished two-step SigLIP run: the text tower the text-to-image runs copy."""
  return tiny_siglip_run


def t2i_config(spec, shapes_data_dir, source, *overrides):
  config = config_loading.load_config(spec)
  config = config_loading.apply_overrides(
      config, [*TINY_T2I, f"data.data_dir={shapes_data_dir}", *overrides])
  config.init_from.workdir = source
  return config


@pytest.fixture(scope="module")
def t2i_run(shapes_data_dir, source, tmp_path_factory):
  """Three steps of configs/t2i_shapes.py (tiny), its text tower copied from `source`."""
  workdir = str(tmp_path_factory.mktemp("t2i") / "run")
  train.train(t2i_config("configs/t2i_shapes.py", shapes_data_dir, source), workdir,
              diffusion_experiment.build)
  return workdir


def subtree(params, path):
  for key in path.split("/"):
    params = params[key]
  return params


def test_text_tower_is_copied_and_stays_frozen_while_the_denoiser_trains(t2i_run, source):
  trained, first, copied = (analysis.load_run(t2i_run), analysis.load_run(t2i_run, step=1),
                            analysis.load_run(source))
  assert trained.step == 3
  jax.tree.map(np.testing.assert_array_equal, subtree(trained.params, TOWER),
               copied.params["text_tower"])
  # The denoiser learns: its zero-initialised output layer moves.
  assert not np.array_equal(subtree(first.params, "conv_out/kernel"),
                            subtree(trained.params, "conv_out/kernel"))


@pytest.mark.slow  # one more run
def test_finetune_variant_trains_the_text_tower(shapes_data_dir, source, tmp_path):
  workdir = str(tmp_path / "finetune")
  train.train(t2i_config("configs/t2i_shapes.py:finetune", shapes_data_dir, source), workdir,
              diffusion_experiment.build)
  trained, copied = analysis.load_run(workdir), analysis.load_run(source)
  for before, after in zip(jax.tree.leaves(copied.params["text_tower"]),
                           jax.tree.leaves(subtree(trained.params, TOWER))):
    assert not np.array_equal(before, after)


def test_sample_writes_one_image_per_prompt_cycled(t2i_run, tmp_path, capsys):
  out = tmp_path / "x.npz"
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("a large white star at the top\n\n")
  cli_main(["sample", "--run", t2i_run, "--prompt", "a small red circle in the center",
            "--prompts-file", str(prompts), "--num", "3", "--steps", "1", "--guidance", "2",
            "--out", str(out)])
  arrays = np.load(out)
  assert arrays["images"].shape == (3, 16, 16, 3)
  assert list(arrays["prompts"]) == ["a small red circle in the center",
                                     "a large white star at the top",
                                     "a small red circle in the center"]
  assert "wrote 3 samples" in capsys.readouterr().out


def cli_main(args):
  from jaxmm.commands import cli  # pylint: disable=import-outside-toplevel
  cli.main(args)


def test_labels_on_a_text_run_and_no_prompt_are_one_line_errors(t2i_run, capsys, tmp_path):
  out = str(tmp_path / "x.png")
  line = cli_error_line(capsys, ["sample", "--run", t2i_run, "--labels", "1,2", "--out", out])
  assert line == ("jaxmm sample: error: --labels: the run is conditioned on captions "
                  "(model.text), not labels; give --prompt TEXT instead")
  line = cli_error_line(capsys, ["sample", "--run", t2i_run, "--out", out])
  assert line.startswith("jaxmm sample: error: the run is conditioned on captions (model.text); "
                         "give --prompt TEXT")


def test_prompt_on_a_run_without_captions_is_a_one_line_error(source, shapes_data_dir, capsys,
                                                               tmp_path):
  # The 2-D toy: a diffusion run without captions that trains in seconds.
  config = config_loading.apply_overrides(
      config_loading.load_config("configs/edm_toy2d.py"),
      ["batch_size=16", "total_steps=1", "eval_every=0", "optim.warmup_steps=0"])
  workdir = str(tmp_path / "toy")
  train.train(config, workdir, diffusion_experiment.build)
  line = cli_error_line(capsys, ["sample", "--run", workdir, "--prompt", "a red circle", "--out",
                                 str(tmp_path / "x.npz")])
  assert line == ("jaxmm sample: error: --prompt: the run is not conditioned on captions (it has "
                  "no model.text); give --labels, or sample a text-to-image run")
  # A diffusion run has no text tower to condition on.
  bad = t2i_config("configs/t2i_shapes.py", shapes_data_dir, workdir)
  with pytest.raises(UserError, match="experiment='diffusion' run without a text tower"):
    caption_condition.check_text_source(bad)


def test_source_with_another_tokenizer_or_tower_fails_before_training(shapes_data_dir, source):
  for override, message in [("data.max_len=12", "reads text with data.max_len=8, this run with 12"),
                            ("data.tokenizer=padding:0", "data.tokenizer='bytes'"),
                            ("model.text.width=16", "differs from the text tower")]:
    config = t2i_config("configs/t2i_shapes.py", shapes_data_dir, source, override)
    with pytest.raises(UserError, match=message):
      diffusion_experiment.check_config(config)


def test_long_prompt_is_cut_with_a_warning_saying_what_was_cut(caplog):
  config = config_loading.apply_overrides(config_loading.load_config("configs/t2i_shapes.py"),
                                          ["data.max_len=8"])
  with caplog.at_level(logging.WARNING, logger="jaxmm"):
    tokens = caption_condition.tokenize_prompts(config, ["a red circle", "a star"])
  np.testing.assert_array_equal(tokens[0], list(b"a red ci"))
  np.testing.assert_array_equal(tokens[1], list(b"a star") + [0, 0])
  assert "cut to 'a red ci' (dropped 'rcle')" in caplog.text
  assert "'a star'" not in caplog.text


def _layer_norm(x, scale, bias, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean)**2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def test_cross_attention_matches_float64_reference_over_unmasked_keys():
  rng = np.random.default_rng(0)
  x, context = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 6))
  mask = np.array([[1, 1, 0, 1, 0], [1, 0, 0, 0, 0]], bool)
  module = CrossAttention(num_heads=2)
  params = module.init(jax.random.key(0), x, context, mask)["params"]
  # Random values everywhere, the zero-initialised output projection included.
  params = jax.tree.map(lambda p: rng.normal(size=np.shape(p)), nn_unbox(params))
  got = module.apply({"params": jax.tree.map(jnp.float32, params)}, jnp.float32(x),
                     jnp.float32(context), mask)
  p = jax.tree.map(np.float64, params)
  a = p["attn"]
  h = _layer_norm(x, p["ln"]["scale"], p["ln"]["bias"], 1e-6)
  c = context @ p["context_proj"]["kernel"] + p["context_proj"]["bias"]
  q = np.einsum("bld,dhk->blhk", h, a["query"]["kernel"]) + a["query"]["bias"]
  k = np.einsum("bsd,dhk->bshk", c, a["key"]["kernel"])
  v = np.einsum("bsd,dhk->bshk", c, a["value"]["kernel"]) + a["value"]["bias"]
  logits = np.einsum("blhk,bshk->bhls", q, k) / np.sqrt(q.shape[-1])
  logits = np.where(mask[:, None, None, :], logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  y = np.einsum("bhls,bshk->blhk", weights, v)
  expected = x + np.einsum("blhk,hkd->bld", y, a["out"]["kernel"]) + a["out"]["bias"]
  # The module computes in float32: rounding 6e-8 relative per operation, through about ten
  # chained sums of a few terms of size <= 30, stays below 1e-4 absolute.
  np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-4)


def nn_unbox(tree):
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  return nn.unbox(tree)


def test_empty_caption_pools_to_zero_and_leaves_only_the_null_token():
  text = dict(vocab_size=256, width=8, depth=1, num_heads=2, mlp_dim=16, max_len=6)
  tokens = np.array([[97, 98, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], np.int32)
  encoder = CaptionEncoder(text)
  variables = encoder.init(jax.random.key(0), tokens)
  pooled, context, mask = encoder.apply(variables, tokens)
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(pooled[1], np.zeros(8))
  # The pooled vector is the mean of the caption's own outputs (the tower's 'mean' pool).
  outputs, again = TextTransformer(**text).apply({"params": variables["params"]["text_tower"]},
                                                 tokens, return_tokens=True)
  np.testing.assert_allclose(pooled, again, rtol=0, atol=0)
  np.testing.assert_allclose(pooled[0], np.asarray(outputs[0, :2], np.float64).mean(0),
                             rtol=1e-6, atol=1e-6)  # float32 mean of 2 values of size ~1
  np.testing.assert_array_equal(context[:, 1:], outputs)
  np.testing.assert_array_equal(context[0, 0], context[1, 0])


def test_caption_dropout_and_guidance_use_the_empty_caption():
  tokens = jnp.array([[97, 98, 0], [99, 0, 0], [100, 101, 102]], jnp.int32)
  dropped = np.asarray(diffusion.drop_labels(tokens, jax.random.key(0), 0.5, null=0))
  for row, original in zip(dropped, np.asarray(tokens)):
    assert (row == original).all() or (row == 0).all()
  assert (dropped == 0).all(axis=1).any() and not (dropped == 0).all()
  # A denoiser that returns the sum of its caption's ids: D_w = D(∅) + w·(D(c) − D(∅)) with
  # D(∅) = 0 for the all-pad caption.
  fake = lambda x, sigma, t: x * 0 + t.sum(axis=1).astype(jnp.float32)[:, None]
  guided = diffusion.guided_denoiser(fake, tokens, 3.0, null=0)
  np.testing.assert_array_equal(guided(jnp.ones((3, 1)), jnp.ones(3))[:, 0],
                                [3 * 195, 3 * 99, 3 * 303])


def test_prompts_cover_test_captions_and_every_held_out_pair():
  test_labels = {name: np.arange(20) % n for name, n in
                 (("shape", 6), ("colour", 8), ("size", 3), ("position", 9))}
  labels, held_out = prompt_judge.prompt_labels(test_labels, 5, 2, seed=0)
  assert held_out.tolist() == [False] * 5 + [True] * 16
  pairs = {(shapes.SHAPES[s], shapes.COLOURS[c])
           for s, c in zip(labels["shape"][5:], labels["colour"][5:])}
  assert pairs == set(shapes.HELD_OUT_PAIRS)
  assert prompt_judge.captions({"shape": [5], "colour": [1], "size": [0], "position": [8]}) == [
      "a small green cross in the bottom right"]


def test_score_counts_each_attribute_and_all_four():
  requested = {name: np.array([0, 1, 2, 0]) for name in prompt_judge.ATTRIBUTES}
  read = {name: np.array([0, 1, 2, 0]) for name in prompt_judge.ATTRIBUTES}
  read["shape"] = np.array([0, 0, 2, 1])  # wrong on rows 1 and 3
  read["size"] = np.array([1, 1, 2, 0])  # wrong on row 0
  held_out = np.array([False, False, True, True])
  results = prompt_judge.score(read, requested, held_out)
  assert results["accuracy/shape"] == 0.5 and results["accuracy/size"] == 0.5
  assert results["accuracy/all"] == 0.0 and results["accuracy/colour"] == 1.0
  assert results["held_out/shape"] == 0.5 and results["held_out/all"] == 0.5
