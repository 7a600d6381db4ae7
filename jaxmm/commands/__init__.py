"""The `jaxmm` command (`cli.main`) and its subcommands, one module each.

  cli.py          the parser, main() and how errors end a command
  train.py        jaxmm train: an experiment of experiments/ through jaxmm.train
  sample.py       jaxmm sample: a diffusion run's samples as a PNG grid or an .npz
  caption.py      jaxmm caption: captions of images or a split by a captioning run
  inspect.py      jaxmm inspect: a config resolved, or a trained run's summary
  memory.py       jaxmm inspect --memory, planned by memory_plan.py
  sweep.py        jaxmm sweep: a config's get_sweep() points (jaxmm.sweeps)
  filter.py       jaxmm filter: a dataset's best image-text pairs, scored by data_filter.py
  data.py         jaxmm data: a TFDS split written as shards, or what shards hold
  flag_checks.py  checks of flags that several commands share

This is the only part of jaxmm that imports the experiments.
"""
