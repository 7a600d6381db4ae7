"""Bad input to `jaxmm import big_vision` and `jaxmm export big_vision`: one line, exit status 2."""
import json
import pathlib

import jax
import numpy as np
import pytest

from conftest import cli_error_line
from jaxmm.weights import big_vision
from jaxmm.weights import run_dir

DATA = pathlib.Path(__file__).resolve().parent / "data" / "big_vision"
MAP = DATA / "map.npz"
VOCAB = DATA / "vocab.model"


def _import(capsys, tmp_path, arch, weights, vocab=("--vocab", str(VOCAB))):
  return cli_error_line(capsys, ["import", "big_vision", "--arch", str(arch), "--weights",
                                 str(weights), *vocab, "--out", str(tmp_path / "run")])


def test_unknown_arch_lists_the_known_ones(capsys, tmp_path):
  line = _import(capsys, tmp_path, "So400m/16", MAP)
  assert line.startswith("jaxmm import: error: big_vision architecture='So400m/16' is not one of ")
  assert all(repr(name) in line for name in big_vision.ARCHS)
  assert "did you mean 'So400m/14'?" in line and "or give the path of a .json" in line


@pytest.mark.parametrize("arch,expected", [
    ("B/16", "tensor 'img/embedding/kernel' has shape [8, 8, 3, 64], the architecture's is "
     "[16, 16, 3, 768] (jaxmm's image_tower/patch_embed/kernel)"),
    (DATA / "scan.json", "tensor 'img/embedding/kernel' has shape [8, 8, 3, 64], the "
     "architecture's is [8, 8, 3, 32] (jaxmm's image_tower/patch_embed/kernel)"),
])
def test_weights_of_another_architecture_name_the_first_tensor_that_differs(
    capsys, tmp_path, arch, expected):
  line = _import(capsys, tmp_path, arch, MAP)
  assert line.startswith(f"jaxmm import: error: --weights {MAP} (read as --arch {arch}): ")
  assert expected in line and line.endswith("pass the one it was trained as")


def test_a_missing_vocabulary_says_where_to_get_it(capsys, tmp_path):
  line = _import(capsys, tmp_path, DATA / "map.json", MAP, vocab=())
  assert line.startswith("jaxmm import: error: big_vision's SigLIPs tokenize with a SentencePiece "
                         "vocabulary that jaxmm does not ship: pass its path as --vocab")
  missing = tmp_path / "cc_en.32000.model"
  line = _import(capsys, tmp_path, DATA / "map.json", MAP, vocab=("--vocab", str(missing)))
  assert line.startswith(f"jaxmm import: error: data.tokenizer='big_vision:{missing}': {missing} "
                         "is not a file; big_vision's SigLIP models tokenize with")


def test_a_vocabulary_larger_than_the_text_tower_is_named(capsys, tmp_path):
  arch = json.loads((DATA / "map.json").read_text())
  arch["model"]["text"]["vocab_size"] = 32
  (tmp_path / "small.json").write_text(json.dumps(arch))
  line = _import(capsys, tmp_path, tmp_path / "small.json", MAP)
  assert f"--vocab {VOCAB} holds 52 ids, more than the 32 of --arch" in line


@pytest.mark.parametrize("edit,expected", [
    (dict(image=dict(posemb="sincos2d")), "option image.posemb='sincos2d' has no counterpart in "
     "jaxmm's towers (they hold 'learn' only)"),
    (dict(text=dict(pool_type="map")), "option text.pool_type='map' has no counterpart"),
    (dict(image=dict(variant="H/14")), "image variant 'H/14' is not one jaxmm knows"),
    (dict(image_model="proj.image_text.naflex_vit"), "model.image_model="),
    (dict(out_dim=[None, None]), "gives the text tower no head"),
])
def test_an_option_jaxmm_cannot_hold_is_named(capsys, tmp_path, edit, expected):
  arch = json.loads((DATA / "map.json").read_text())
  for key, value in edit.items():
    if isinstance(value, dict):
      arch["model"][key].update(value)
    else:
      arch["model"][key] = value
  path = tmp_path / "edited.json"
  path.write_text(json.dumps(arch))
  line = _import(capsys, tmp_path, path, MAP)
  assert line.startswith(f"jaxmm import: error: {path}: ") and expected in line


@pytest.mark.parametrize("keep", [10, 1000, -1000])
def test_a_truncated_file_says_so(capsys, tmp_path, keep):
  path = tmp_path / "cut.npz"
  path.write_bytes(MAP.read_bytes()[:keep])
  line = _import(capsys, tmp_path, DATA / "map.json", path)
  assert line.startswith(f"jaxmm import: error: {path} is not a readable .npz checkpoint (")
  assert line.endswith("it may be truncated: download or write it again")


def test_a_missing_file_says_what_to_pass(capsys, tmp_path):
  line = _import(capsys, tmp_path, DATA / "map.json", tmp_path / "missing.npz")
  assert line.endswith("missing.npz is not a file; pass the path of big_vision's .npz checkpoint")


def test_export_names_what_big_vision_cannot_hold(capsys, tmp_path, tiny_config):
  config = tiny_config("clip")  # jaxmm's own towers: mean pooling, padding masked
  zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), run_dir.abstract_params(config))
  run_dir.write_run(str(tmp_path / "run"), config, zeros)
  line = cli_error_line(capsys, ["export", "big_vision", "--run", str(tmp_path / "run"), "--out",
                                 str(tmp_path / "x.npz")])
  assert line.startswith(f"jaxmm export: error: --run {tmp_path / 'run'}: big_vision's two-tower "
                         "model cannot hold this run: model.text.pool='mean' (SigLIP reads the "
                         "last position: 'last'); model.text.mask_pad=True")
  assert not (tmp_path / "x.npz").exists()


def test_export_wants_an_npz_name(capsys, tmp_path):
  line = cli_error_line(capsys, ["export", "big_vision", "--run", str(tmp_path), "--out",
                                 str(tmp_path / "x.safetensors")])
  assert line == (f"jaxmm export: error: --out {tmp_path / 'x.safetensors'}: give a file name "
                  "ending in .npz")
