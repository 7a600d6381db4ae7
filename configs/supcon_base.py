"""SupCon, SimCLR and cross-entropy on one ResNet (Khosla et al. 2020), shared by
{supcon,simclr,ce}_{digits,shapes}.py, which differ only in the loss and the dataset.

All three train the same encoder on random views of the images and are
compared by a linear probe (and a k-NN vote) on the frozen encoder's
representation, classifying the dataset's label (`DATASETS`).

Variants (the `ARG` of `--config configs/NAME.py:ARG`):
  small:    a few-minute run on a 2-core CPU (ResNet of 3 one-block stages).
  resnet18: the paper's CIFAR ResNet-18 and batch 1024, for accelerators.
"""
import ml_collections

# What differs between the datasets: the label the loss and the probe use,
# the image size, and the views.
DATASETS = {
    # scikit-learn's 8x8 digits stored at 32x32: 16x16 keeps every original
    # pixel (as 2x2 blocks) at a quarter of the cost. No flip: a mirrored
    # digit is not the same digit.
    "digits":
        dict(label_key="label",
             num_classes=10,
             image_size=16,
             views="random_resized_crop(scale=(0.3, 1.0))|colour_jitter",
             train_examples=None),
    # One small shape per image, at one of 9 places: crops keep at least half
    # of the image so that most views still show it.
    "shapes":
        dict(label_key="shape",
             num_classes=6,
             image_size=32,
             views="random_resized_crop(scale=(0.5, 1.0))|flip|colour_jitter|grayscale",
             train_examples=5000),
}

# The loss's settings. Temperatures as the SupCon reference recipe sets them
# for CIFAR (0.1 for SupCon, 0.5 for SimCLR); cross-entropy trains on one view
# of each image, as the paper's baseline does.
LOSSES = {
    "supcon": dict(temperature=0.1, num_views=2),
    "simclr": dict(temperature=0.5, num_views=2),
    "ce": dict(temperature=0.1, num_views=1),  # (its temperature serves a loss.name override)
}

# Adam at a high learning rate: in a few hundred steps the contrastive losses
# learn markedly more with it (a SupCon probe on shapes after 200 steps: 92 % at
# lr 5e-3, 97 % at 1e-2).
VARIANTS = {
    "small":
        dict(stage_sizes=(1, 1, 1),
             widths=(16, 32, 64),
             projection=(64, 64),
             batch_size=128,
             # About 3-4 minutes each on a 2-core CPU: a digits step (16x16) costs
             # about a fifth of a shapes step (32x32).
             total_steps={"digits": 600, "shapes": 250},
             warmup_steps=50,
             lr=1e-2,
             log_every=50,
             eval_batch_size=512,
             mesh=dict(data=-1, fsdp=1, tensor=1)),
    "resnet18":
        dict(stage_sizes=(2, 2, 2, 2),
             widths=(64, 128, 256, 512),
             projection=(512, 128),
             batch_size=1024,
             total_steps={"digits": 5_000, "shapes": 20_000},
             warmup_steps=500,
             lr=1e-3,
             log_every=100,
             eval_batch_size=1024,
             mesh=dict(data=-1, fsdp=1, tensor=1)),
}


def get_config(arg: str, *, loss: str, dataset: str) -> ml_collections.ConfigDict:
  """The config of variant `arg` training with `loss` (a key of LOSSES) on `dataset`."""
  if arg not in VARIANTS:
    raise ValueError(f"unknown config variant {arg!r}; valid: {sorted(VARIANTS)}")
  v, d, l = VARIANTS[arg], DATASETS[dataset], LOSSES[loss]
  config = ml_collections.ConfigDict()
  config.experiment = "supcon"
  config.seed = 0
  config.total_steps = v["total_steps"][dataset]
  config.batch_size = v["batch_size"]
  config.log_every = v["log_every"]
  config.checkpoint_every = config.total_steps // 2
  config.eval_every = config.total_steps  # the probe and k-NN of the trained encoder
  config.keep_checkpoints = 3
  config.on_nonfinite = "stop"
  config.ema = dict(decays=(), sigma_rels=(), snapshot_every=0)
  config.mesh = dict(v["mesh"])
  config.init_from = dict(workdir=None, step=None, subtrees={})

  config.data = dict(name=dataset,
                     data_dir=None,
                     source="tfds",  # or "wds", "parquet" (jaxmm.data.shards)
                     files=None,
                     eval_files=None,
                     max_skipped_fraction=0.01,
                     train_split="train",
                     eval_split="test",
                     image_key="image",
                     text_key=None,  # images and labels only
                     cache=True,
                     image_size=d["image_size"],
                     # Shards only: random-resized crops of the stored images, decoded on
                     # host_threads threads (None: every core), before the views.
                     crop_scale=None,
                     crop_ratio=(3 / 4, 4 / 3),
                     host_threads=None,
                     augment=False,  # the views are the augmentation
                     # The ops that make each view (jaxmm.data.view_ops), and how many views.
                     views=d["views"],
                     num_views=l["num_views"],
                     label_key=d["label_key"],
                     shuffle_seed=None,
                     # Weighted sources (jaxmm.data.source_mixture); None: this one source.
                     mixture=None)

  # The head: a 2-layer projection for the contrastive losses, the logits for CE.
  config.model = dict(name="resnet",
                      stage_sizes=v["stage_sizes"],
                      widths=v["widths"],
                      head=(d["num_classes"],) if loss == "ce" else v["projection"],
                      bn_momentum=0.9,
                      dtype="float32")

  config.loss = dict(name=loss,
                     temperature=l["temperature"],
                     base_temperature=l["temperature"],
                     contrast_mode="all")

  config.optim = dict(name="adamw",
                      lr=v["lr"],
                      weight_decay=1e-4,
                      b1=0.9,
                      b2=0.999,
                      eps=1e-8,
                      momentum=0.9,  # SGD and Muon
                      warmup_steps=v["warmup_steps"],
                      schedule="cosine",
                      grad_clip_norm=1.0,
                      partition=())

  # Linear probe and k-NN on the frozen encoder (config.evals.NAME = dict(type=TYPE,
  # every=N, ...); every=None: every eval_every steps), classifying the label the
  # supervised losses train on.
  batch_size = v["eval_batch_size"]
  config.evals = dict(
      linear_probe=dict(type="linear_probe",
                        every=None,
                        batch_size=batch_size,
                        train_examples=d["train_examples"],
                        labels=(d["label_key"],),
                        l2=1e-4,
                        max_steps=1000),
      knn=dict(type="knn",
               every=None,
               batch_size=batch_size,
               train_examples=d["train_examples"],
               labels=(d["label_key"],),
               k=20,
               vote="similarity",
               temperature=0.07),
  )
  return config
