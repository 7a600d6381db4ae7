"""Checkpoint saves on the CPU compile nothing: replicated arrays are written whole."""
import logging

import jax
import numpy as np

from jaxmm import parallel
from jaxmm.runs import checkpoints


def test_saving_replicated_arrays_compiles_no_slicing_programs(tmp_path, caplog):
  mesh = parallel.make_mesh({"data": 8, "fsdp": 1, "tensor": 1})
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  # Shapes no other test saves, so that no compilation of them is cached in this process.
  state = {name: jax.device_put(np.arange(np.prod(shape), dtype=np.float32).reshape(shape),
                                replicated)
           for name, shape in (("a", (8, 24)), ("b", (40,)), ("c", (16, 3, 5)))}
  manager = checkpoints.make_manager(str(tmp_path), async_save=False)
  with jax.log_compiles(True), caplog.at_level(logging.WARNING):
    checkpoints.save(manager, 1, state, {"position": 0}, {})
    checkpoints.finish(manager)
  compiled = [r.getMessage() for r in caplog.records if "Finished XLA compilation" in r.getMessage()]
  assert compiled == []
  restored, _ = checkpoints.restore(manager, 1, jax.tree.map(np.zeros_like, state))
  for name, array in state.items():
    np.testing.assert_array_equal(restored[name], np.asarray(array))
