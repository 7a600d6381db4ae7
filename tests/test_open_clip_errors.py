"""Bad input to `jaxmm import open_clip` and `jaxmm export open_clip`: one line, exit status 2."""
import json
import pathlib

import jax
import numpy as np
import pytest

from conftest import cli_error_line
from jaxmm.weights import open_clip
from jaxmm.weights import run_dir
from jaxmm.weights import safetensors

DATA = pathlib.Path(__file__).resolve().parent / "data" / "open_clip"
REPO = DATA.parents[2]
GELU = DATA / "gelu.safetensors"


def _import(capsys, tmp_path, arch, weights):
  return cli_error_line(capsys, ["import", "open_clip", "--arch", str(arch), "--weights",
                                 str(weights), "--out", str(tmp_path / "run")])


def test_unknown_arch_lists_the_known_ones(capsys, tmp_path):
  line = _import(capsys, tmp_path, "ViT-B-33", GELU)
  assert line.startswith("jaxmm import: error: open_clip architecture='ViT-B-33' is not one of ")
  assert all(repr(name) in line for name in open_clip.ARCHS)
  assert "did you mean 'ViT-B-32'?" in line and "or give the path of an open_clip model" in line


@pytest.mark.parametrize("arch,expected", [
    ("ViT-B-32", "tensor 'visual.class_embedding' has shape [64], the architecture's is [768]"),
    (DATA / "quickgelu.json", "tensor 'visual.class_embedding' has shape [64], the "
     "architecture's is [32] (jaxmm's image_tower/cls, image_tower/pos_embedding"),
])
def test_weights_of_another_architecture_name_the_first_tensor_that_differs(
    capsys, tmp_path, arch, expected):
  line = _import(capsys, tmp_path, arch, GELU)
  assert line.startswith(f"jaxmm import: error: --weights {GELU} (read as --arch {arch}): ")
  assert expected in line and line.endswith("pass the one it was trained as")


@pytest.mark.parametrize("edit,expected", [
    (dict(vision_cfg=dict(pool_type="avg")), "option vision_cfg.pool_type='avg' has no counterpart "
     "in jaxmm's towers (they hold 'tok' only)"),
    (dict(custom_text=True), "option custom_text=True has no counterpart"),
    (dict(text_cfg=dict(hf_model_name="bert-base-uncased")), "option text_cfg.hf_model_name="),
    (dict(vision_cfg=dict(layers=[3, 4, 6, 3])), "a ResNet image tower"),
    (dict(future_option=1), "open_clip option future_option is not one jaxmm's towers know"),
])
def test_an_option_jaxmm_cannot_hold_is_named(capsys, tmp_path, edit, expected):
  model_cfg = json.loads((DATA / "gelu.json").read_text())
  for key, value in edit.items():
    if isinstance(value, dict):
      model_cfg[key].update(value)
    else:
      model_cfg[key] = value
  arch = tmp_path / "edited.json"
  arch.write_text(json.dumps(model_cfg))
  line = _import(capsys, tmp_path, arch, GELU)
  assert line.startswith(f"jaxmm import: error: {arch}: ") and expected in line


def _edited_copy(tmp_path, edit):
  tensors = safetensors.read(str(GELU))
  edit(tensors)
  path = tmp_path / "edited.safetensors"
  safetensors.write(str(path), tensors)
  return path


def test_a_missing_tensor_is_named(capsys, tmp_path):
  path = _edited_copy(tmp_path, lambda t: t.pop("visual.ln_pre.weight"))
  line = _import(capsys, tmp_path, DATA / "gelu.json", path)
  assert "tensor 'visual.ln_pre.weight' is missing (1 of the architecture's" in line


def test_a_tensor_without_a_place_is_named(capsys, tmp_path):
  path = _edited_copy(tmp_path, lambda t: t.update({"visual.extra": t["logit_scale"]}))
  line = _import(capsys, tmp_path, DATA / "gelu.json", path)
  assert "tensor 'visual.extra' has no place in the architecture" in line


@pytest.mark.parametrize("keep,expected", [
    (4, "is truncated: it holds 4 bytes, fewer than the 8 of a safetensors header's length"),
    (100, "is truncated: its header promises"),
    (-1000, "is truncated: tensor '"),
])
def test_a_truncated_file_says_so(capsys, tmp_path, keep, expected):
  data = GELU.read_bytes()
  path = tmp_path / "cut.safetensors"
  path.write_bytes(data[:keep])
  assert f"error: {path} {expected}" in _import(capsys, tmp_path, DATA / "gelu.json", path)


def test_a_file_of_another_kind_says_what_to_pass(capsys, tmp_path):
  path = tmp_path / "weights.safetensors"
  path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
  assert "is not a safetensors file (its header is not JSON" in _import(
      capsys, tmp_path, DATA / "gelu.json", path)
  line = _import(capsys, tmp_path, DATA / "gelu.json", tmp_path / "missing.safetensors")
  assert line.endswith("missing.safetensors is not a file; pass the path of a .safetensors "
                       "weights file")


def test_out_must_be_new_or_empty(capsys, tmp_path):
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "notes.txt").write_text("mine")
  line = _import(capsys, tmp_path, DATA / "gelu.json", GELU)
  assert line == (f"jaxmm import: error: --out {tmp_path / 'run'} is not empty (it holds "
                  "notes.txt); give a new or empty folder for the run")


def test_a_missing_tokenizer_vocabulary_is_one_line(capsys, tmp_path, shapes_data_dir,
                                                    monkeypatch):
  monkeypatch.chdir(REPO)
  missing = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
  line = cli_error_line(capsys, [
      "train", "--config", f"configs/open_clip.py:{DATA / 'gelu.json'}", "--workdir",
      str(tmp_path / "run"), f"--config.data.data_dir={shapes_data_dir}",
      f"--config.data.tokenizer={missing}"
  ])
  assert line.startswith(f"jaxmm train: error: data.tokenizer='{missing}': the vocabulary")
  assert "is not a file; set --config.data.tokenizer to the path of CLIP's" in line


def test_export_names_what_open_clip_cannot_hold(capsys, tmp_path, tiny_config):
  config = tiny_config("clip")  # jaxmm's own towers: mean pooling, bidirectional text, biases
  zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), run_dir.abstract_params(config))
  run_dir.write_run(str(tmp_path / "run"), config, zeros)
  line = cli_error_line(capsys, ["export", "open_clip", "--run", str(tmp_path / "run"), "--out",
                                 str(tmp_path / "x.safetensors")])
  assert line.startswith(f"jaxmm export: error: --run {tmp_path / 'run'}: open_clip's CLIP "
                         "cannot hold this run: model.image.pool='gap' (open_clip's ViTs read "
                         "the class token: 'cls'); ")
  for problem in ("model.text.pool='mean'", "model.text.causal=False", "model.proj_bias=True"):
    assert problem in line
  assert not (tmp_path / "x.safetensors").exists()


def test_export_wants_a_safetensors_name(capsys, tmp_path):
  line = cli_error_line(capsys, ["export", "open_clip", "--run", str(tmp_path), "--out",
                                 str(tmp_path / "x.pt")])
  assert line == f"jaxmm export: error: --out {tmp_path / 'x.pt'}: give a file name ending in " \
      ".safetensors"
