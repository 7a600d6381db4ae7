"""Two-tower image-text pretraining on the bundled shapes dataset, shared by
siglip_shapes.py and clip_shapes.py, which differ only in the loss and its
initialisation.

Variants (the `ARG` of `--config configs/NAME.py:ARG`):
  small: a few-minute run on a 2-core CPU (32x32 images, narrow towers).
  base:  ViT-B/16 image and text towers at 224x224, for accelerators.
"""
import ml_collections

# Everything that differs between the variants, in one place.
VARIANTS = {
    # About 24 GFLOP per training step (jaxmm.models.flops, 3x forward), so
    # 700 steps take under 4 minutes on a 2-core CPU: 8x8 patches give 16
    # image tokens, and the text tower is narrow because its 48 tokens (the
    # longest caption is 45 bytes) would otherwise dominate. Batch 256 rather
    # than 128: shape is the attribute learned last, and a larger batch holds
    # more negatives that differ from a positive in shape alone. No
    # augmentation: in a run this short it only slows learning (zero-shot
    # shape accuracy at step 500: 74 % with it, 95 % without).
    "small":
        dict(
            image_size=32,
            max_len=48,
            embed_dim=128,
            image=dict(patch_size=8, width=128, depth=3, num_heads=4, mlp_dim=512),
            text=dict(width=64, depth=2, num_heads=4, mlp_dim=256),
            batch_size=256,
            total_steps=700,
            warmup_steps=100,
            lr=2e-3,
            dtype="float32",
            activation_dtype="float32",
            remat=False,
            augment=False,
            mesh=dict(data=-1, fsdp=1, tensor=1),
            log_every=50,
            checkpoint_every=350,
            eval_every=350,
            eval_batch_size=512,
        ),
    "base":
        dict(
            image_size=224,
            max_len=48,
            embed_dim=512,
            image=dict(patch_size=16, width=768, depth=12, num_heads=12, mlp_dim=3072),
            text=dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
            batch_size=4096,
            total_steps=50_000,
            warmup_steps=2_000,
            lr=1e-3,
            dtype="bfloat16",
            # bfloat16 residual stream: 28.1 -> 31.2 % MFU on an H100 (README, MFU).
            activation_dtype="bfloat16",
            remat=True,
            augment=True,
            mesh=dict(data=1, fsdp=-1, tensor=1),
            log_every=100,
            checkpoint_every=2_000,
            eval_every=2_000,
            eval_batch_size=1024,
        ),
}


def get_config(arg: str, *, loss: str, init_log_scale: float, init_bias, b2: float,
               eps: float) -> ml_collections.ConfigDict:
  """The config of variant `arg` trained with `loss` ('siglip' or 'clip')."""
  if arg not in VARIANTS:
    raise ValueError(f"unknown config variant {arg!r}; valid: {sorted(VARIANTS)}")
  v = VARIANTS[arg]
  config = ml_collections.ConfigDict()
  config.experiment = "image_text"
  config.seed = 0
  config.total_steps = v["total_steps"]
  config.batch_size = v["batch_size"]
  config.log_every = v["log_every"]
  config.checkpoint_every = v["checkpoint_every"]
  config.eval_every = v["eval_every"]
  config.keep_checkpoints = 3
  config.on_nonfinite = "stop"  # or "skip": leave non-finite updates out (jaxmm.train.nonfinite)
  # Parameter averages (jaxmm.train.ema): e.g. decays=(0.999,) or EDM2's sigma_rels=(0.05,).
  config.ema = dict(decays=(), sigma_rels=(), snapshot_every=0)
  config.mesh = dict(v["mesh"])
  # Parameter subtrees a new run copies from another run (jaxmm.train.init_from), e.g.
  # workdir="runs/siglip_shapes", subtrees={"image_tower": "image_tower"}.
  config.init_from = dict(workdir=None, step=None, subtrees={})

  config.data = dict(name="shapes",
                     data_dir=None,
                     # Or shards (jaxmm.data.shards): source="wds" or "parquet", with the
                     # train and eval splits' files (globs or lists, local or gs://).
                     source="tfds",
                     files=None,
                     eval_files=None,
                     max_skipped_fraction=0.01,  # of a shard's examples, damaged
                     train_split="train",
                     eval_split="test",
                     image_key="image",  # the dataset's feature names
                     text_key="caption",
                     cache=True,  # read splits under 1 GiB into memory once
                     image_size=v["image_size"],
                     # A shard source's training images as random-resized crops of the stored
                     # ones, e.g. open_clip's crop_scale=(0.9, 1.0) (jaxmm.data.shards.crop);
                     # None: the centre square. host_threads decode them (None: every core).
                     crop_scale=None,
                     crop_ratio=(3 / 4, 4 / 3),
                     host_threads=None,
                     max_len=v["max_len"],
                     tokenizer="bytes",
                     augment=v["augment"],
                     shuffle_seed=None,  # None -> config.seed
                     # Weighted sources: {name: dict(weight=W, data=dict(...keys that differ
                     # from these))} (jaxmm.data.source_mixture); None: this one source.
                     mixture=None)

  config.model = dict(
      name="two_tower",
      embed_dim=v["embed_dim"],
      dtype=v["dtype"],
      # The residual stream and the activations between products (jaxmm.models.transformer).
      activation_dtype=v["activation_dtype"],
      remat=v["remat"],
      attention="xla",  # "cudnn": fused flash attention on NVIDIA GPUs (bf16)
      # patch_dropout: the fraction of patches FLIP drops in training (jaxmm.models.patch_dropout).
      image=dict(v["image"], pool="gap", stem="patch", patch_dropout=0.0),
      # 256 byte values, 0 (NUL) padding: the 'bytes' tokenizer needs no vocabulary file.
      text=dict(v["text"], vocab_size=256, pad_id=0),
      init_log_scale=init_log_scale,
      init_bias=init_bias)
  # One length for tokenizer and position embeddings: overriding either sets both.
  config.model.text.max_len = config.data.get_ref("max_len")

  # How a batch sharded over devices is reduced (jaxmm.losses): 'gather'
  # forms each shard's [b, B] logits rows at once, 'ring' passes [b, b]
  # blocks around the devices, so memory does not grow with their number.
  # SigLIP defaults to 'ring' as its paper does; CLIP to 'gather', which
  # takes fewer collective steps while [b, B] logits fit in memory.
  config.loss = dict(name=loss, variant="ring" if loss == "siglip" else "gather")

  config.optim = dict(name="adamw",
                      lr=v["lr"],
                      weight_decay=1e-4,
                      b1=0.9,
                      b2=b2,
                      eps=eps,
                      momentum=0.9,  # SGD and Muon
                      warmup_steps=v["warmup_steps"],
                      schedule="cosine",
                      grad_clip_norm=1.0,
                      # (regex, 'frozen' | 'no_decay' | lr multiplier) pairs, first match wins
                      # (jaxmm.train.partition).
                      partition=())

  # Evaluators (config.evals.NAME = dict(type=TYPE, every=N, ...settings); the types are
  # jaxmm.evaluators.EVALUATORS). every=None: every eval_every steps. The probe and k-NN
  # learn from the first `train_examples` of the training split (None: all of it); 5,000
  # of shapes' 20,000 take a few seconds on a 2-core CPU. labels=None classifies every
  # class label of the dataset (shape, colour, size and position of `shapes`; the digit
  # of `digits`).
  batch_size = v["eval_batch_size"]
  config.evals = dict(
      zero_shot=dict(type="zero_shot", every=None, batch_size=batch_size),
      retrieval=dict(type="retrieval", every=None, batch_size=batch_size, ks=(1, 5, 10)),
      linear_probe=dict(type="linear_probe",
                        every=None,
                        batch_size=batch_size,
                        train_examples=5000,
                        labels=None,
                        l2=1e-4,
                        max_steps=1000),
      knn=dict(type="knn",
               every=None,
               batch_size=batch_size,
               train_examples=5000,
               labels=None,
               k=20,
               vote="similarity",
               temperature=0.07),
  )
  return config
