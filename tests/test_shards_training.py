"""A run on shards equals the run on the TFDS split they were exported from, bit for bit, and
resumes exactly after a crash."""
import jax
import numpy as np

from conftest import crash_and_resume
from conftest import shard_overrides

TOTAL = 4


def _config(tiny_config, shapes_data_dir, *overrides):
  # At the stored size, 32, the images are not resized: the shards' PNGs are the stored pixels
  # and the batches equal the TFDS ones exactly (resized, each image alone, to float32 rounding).
  return tiny_config("siglip", f"total_steps={TOTAL}", "checkpoint_every=2", "log_every=2",
                     "eval_every=0", f"data.data_dir={shapes_data_dir}", "data.train_split=test",
                     "data.image_size=32", *overrides)


def test_a_crashed_run_on_shards_resumes_to_the_tfds_runs_parameters(tiny_config, shapes_data_dir,
                                                                      shapes_shards, tmp_path,
                                                                      run_image_text):
  """On webdataset shards; parquet ones give the same batches (test_shards_read)."""
  reference = run_image_text(_config(tiny_config, shapes_data_dir), str(tmp_path / "tfds"))
  config = _config(tiny_config, shapes_data_dir, *shard_overrides(shapes_shards, "wds"))
  resumed = crash_and_resume(run_image_text, config, str(tmp_path / "wds"), at_step=3)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.params),
               jax.device_get(reference.params))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.opt_state),
               jax.device_get(reference.opt_state))
