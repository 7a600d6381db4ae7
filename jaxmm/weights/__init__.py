"""Weights trained elsewhere, as jaxmm runs, and jaxmm runs in the peers' formats.

  links.py             a table of a peer's tensors <-> jaxmm's parameters, checked and converted
  archs.py             a peer's architecture by name or from a .json, its options checked
  run_dir.py           a run directory written from parameters and a config
  safetensors.py       the safetensors file format, with NumPy alone
  open_clip.py         open_clip's ViT CLIPs: architectures, config keys, checkpoints
  open_clip_links.py   their parameter table
  big_vision.py        big_vision's two-tower SigLIPs: architectures, config keys, .npz
  big_vision_links.py  their parameter table

A format's module reads its checkpoint into the parameters of a config's model
and writes them back; the rest is shared. `jaxmm import` and `jaxmm export`
(`jaxmm.commands`) are the command lines.
"""
