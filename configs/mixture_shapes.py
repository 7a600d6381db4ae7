"""SigLIP on a mixture of shapes and a caption-shuffled copy of it (`jaxmm.data.source_mixture`).

Every caption of the copy belongs to another image (`jaxmm.data.corrupted_captions` with
fraction 1), so the sweep shows how accuracy falls as the noisy source's weight grows. Write
the copy first, then train or sweep:

  python -c "from jaxmm.data import corrupted_captions as c; \
      c.write_corrupted_copy('shapes', 'train', 1.0, '~/.cache/jaxmm/shapes_shuffled')"
  jaxmm train --config configs/mixture_shapes.py --workdir /tmp/mix
  jaxmm sweep --config configs/mixture_shapes.py --workdir runs/mixture_shapes
"""
from jaxmm import sweeps
from jaxmm.configs import siglip_shapes

# Where the caption-shuffled copy is; a data dir without it would get the clean dataset built.
SHUFFLED_DIR = "~/.cache/jaxmm/shapes_shuffled"


def get_config(arg: str = "small"):
  config = siglip_shapes.get_config(arg)
  config.data.mixture = dict(clean=dict(weight=0.7, data=dict()),
                             shuffled=dict(weight=0.3, data=dict(data_dir=SHUFFLED_DIR)))
  return config


def get_sweep(arg: str = "small"):
  """The shuffled source's share at 0.1, 0.3, 0.5 and 0.7 of the stream, the clean one's the
  rest (the weights sum to 1)."""
  del arg  # the shares are the same for every variant
  shuffled = [0.1, 0.3, 0.5, 0.7]
  return sweeps.zipped({"data.mixture.clean.weight": [round(1 - w, 2) for w in shuffled],
                        "data.mixture.shuffled.weight": shuffled})
