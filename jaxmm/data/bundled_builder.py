"""What the TFDS builders of the bundled datasets share.

Their data are made on this machine, so there is nothing to download; they
write array_record files, which read without TensorFlow; and record i of a
split is generated example i, so the order is meaningful.
"""
import tensorflow_datasets as tfds


class BundledBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of a bundled dataset's `Builder` (tfds names it after its module: `shapes`, `digits`).

  A subclass sets VERSION, RELEASE_NOTES, SPLITS (split names) and
  SUPERVISED_KEYS, and defines `_features()` (feature name -> tfds feature)
  and `_generate_examples(split)`.
  """

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(self._features()),
        supervised_keys=self.SUPERVISED_KEYS,
        disable_shuffling=True,  # record i == generated example i
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data are made here.
    return {split: self._generate_examples(split) for split in self.SPLITS}
