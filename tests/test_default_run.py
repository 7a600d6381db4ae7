"""The default experiment, end to end: `jaxmm train` with configs/siglip_shapes.py."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_default_config_learns_shape_and_colour_zero_shot(tmp_path, shapes_data_dir):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one CPU device, as `make train` has
  workdir = str(tmp_path / "run")
  subprocess.run([sys.executable, "-m", "jaxmm.commands.cli", "train", "--config",
                  "configs/siglip_shapes.py", "--workdir", workdir,
                  f"--config.data.data_dir={shapes_data_dir}"],
                 env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  with open(os.path.join(workdir, "zero_shot.json")) as f:
    results = json.load(f)
  final = results[max(results, key=int)]
  # Chance is 1/8 for colour, 1/6 for shape, 1/48 for the held-out pairs.
  assert final["zero_shot/colour"] >= 0.9, final
  assert final["zero_shot/shape"] >= 0.9, final
  assert final["zero_shot/held_out_pairs"] >= 0.5, final
