"""What a run leaves on disk, and reading it back.

  run_files.py  a workdir read without its arrays: checkpoint steps, configs, metrics
  restore.py    a checkpoint's train state, on the host or sharded on a mesh
  sampling.py   samples of a restored diffusion run (Run.sample, `jaxmm sample`, evaluators)

`jaxmm.analysis` is the public face: `load_run(workdir)` and the `Run` it returns.
"""
