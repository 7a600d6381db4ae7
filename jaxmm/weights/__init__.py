"""Weights trained elsewhere, as jaxmm runs, and jaxmm runs in the peers' formats.

  links.py            a table of a peer's tensors <-> jaxmm's parameters, checked and converted
  run_dir.py          a run directory written from parameters and a config
  safetensors.py      the safetensors file format, with NumPy alone
  open_clip.py        open_clip's ViT CLIPs: architectures, config keys, checkpoints
  open_clip_links.py  their parameter table

A format's module reads its checkpoint into the parameters of a config's model
and writes them back; the rest is shared. `jaxmm import` and `jaxmm export`
(`jaxmm.commands`) are the command lines.
"""
