"""The shape of one example that a data config yields, without reading any of it."""
from jaxmm.data.mixture_stream import MIXTURE_2D


def example_shape(data_config) -> tuple[int, ...]:
  """(2,) for the points of the 2-D toy (data.name MIXTURE_2D), else (S, S, 3) for images of
  S = data.image_size."""
  if data_config.name == MIXTURE_2D:
    return (2,)
  return (data_config.image_size, data_config.image_size, 3)
