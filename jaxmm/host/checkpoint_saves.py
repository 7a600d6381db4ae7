"""Checkpoint saves on the CPU: each array is written whole by its first replica.

By default orbax saves a replicated array replica-parallel: each of its R
device copies hands 1/R of it to the host, so that accelerators share the
device-to-host transfers. A CPU device's memory is the host's own, so there is
nothing to share, and every split is a compiled slicing program per array
shape, compiled again at each save: 120 programs per save of the tiny shapes
U-Net on 8 simulated devices. Written whole, a save compiles nothing. The
files are the same either way; restoring does not depend on it.
"""
import functools
import logging

import jax


@functools.cache
def save_whole_arrays() -> None:
  """Makes orbax save every jax.Array from its first replica, unsplit (this process, once)."""
  # Imported here: orbax is slow to import, and only commands that save need it.
  # pylint: disable=import-outside-toplevel
  from orbax.checkpoint import type_handlers
  from orbax.checkpoint._src.metadata import array_metadata_store
  # As orbax registers its default handler (with the per-array metadata files), unsplit.
  handler = type_handlers.ArrayHandler(array_metadata_store=array_metadata_store.Store(),
                                       use_replica_parallel=False)
  # Orbax warns of every override; this one is meant, and the CLI's stderr is one line per error.
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    type_handlers.register_type_handler(jax.Array, handler, override=True)
  finally:
    absl_logger.setLevel(level)
