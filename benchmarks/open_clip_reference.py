"""The PyTorch reference of the step-throughput benchmark: an open_clip two-tower
trained with open_clip's SigLipLoss and torch.optim.AdamW, on the CPU or a CUDA GPU.

The model is `open_clip.CLIP` built from custom tower configs (no pretrained
weights, nothing downloaded), chosen to match jaxmm's TwoTower as far as
open_clip's options allow:
  image: ViT without the pre-transformer LayerNorm, mean-pooled after the final
    LayerNorm. open_clip always prepends a class token, so the tower sees one
    token more than jaxmm's (65 vs 64); it is left out of the pooled mean.
  text: bidirectional (no causal mask) over all `context_length` tokens,
    pooled at the highest token id (open_clip's 'argmax'); jaxmm masks the
    padding as keys and takes the masked mean. The matmul work is the same.
  Both use exact-erf GELU (jaxmm/flax: tanh approximation) and bias-free
  patch embedding and projections (jaxmm: with biases).
The step clips the global gradient norm and decays only matrices, as
jaxmm.train.make_optimizer does.
"""
import math

import numpy as np
import open_clip
import torch
from torch.utils import flop_counter


def make_model(shapes: dict) -> open_clip.CLIP:
  """An open_clip CLIP with the towers of `shapes` (see step_throughput.SHAPES)."""
  image, text = shapes["image"], shapes["text"]
  vision_cfg = dict(layers=image["depth"],
                    width=image["width"],
                    head_width=image["width"] // image["num_heads"],
                    mlp_ratio=image["mlp_dim"] / image["width"],
                    patch_size=image["patch_size"],
                    image_size=shapes["image_size"],
                    no_ln_pre=True,
                    pool_type="avg")
  text_cfg = dict(context_length=shapes["max_len"],
                  vocab_size=text["vocab_size"],
                  width=text["width"],
                  heads=text["num_heads"],
                  layers=text["depth"],
                  mlp_ratio=text["mlp_dim"] / text["width"],
                  no_causal_mask=True,
                  pool_type="argmax")
  # SigLIP's initial logit scale and bias (Zhai et al. 2023, Algorithm 1), as jaxmm's config.
  return open_clip.CLIP(shapes["embed_dim"],
                        vision_cfg,
                        text_cfg,
                        init_logit_scale=math.log(10.0),
                        init_logit_bias=-10.0,
                        output_dict=True)


def make_optimizer(model: torch.nn.Module, optim: dict, fused: bool = False) -> torch.optim.AdamW:
  """AdamW with weight decay on parameters of rank >= 2 only; `fused`: one kernel for all."""
  params = [p for p in model.parameters() if p.requires_grad]
  groups = [
      {
          "params": [p for p in params if p.ndim >= 2],
          "weight_decay": optim["weight_decay"]
      },
      {
          "params": [p for p in params if p.ndim < 2],
          "weight_decay": 0.0
      },
  ]
  return torch.optim.AdamW(groups,
                           lr=optim["lr"],
                           betas=(optim["b1"], optim["b2"]),
                           eps=optim["eps"],
                           fused=fused)


def make_train_step(model: open_clip.CLIP,
                    optimizer: torch.optim.Optimizer,
                    grad_clip_norm: float,
                    bf16: bool,
                    compiled: bool = False):
  """train_step(images [B, 3, H, W], tokens [B, L]) -> loss: forward, backward, clip, AdamW.

  With `bf16` the forward pass and loss run under autocast to bfloat16 on the
  model's device; parameters, gradients and optimizer state stay float32.
  `compiled` runs the model and the loss (forward and backward) under
  torch.compile, as open_clip_train's `--torchcompile` does. Attention is
  torch's nn.MultiheadAttention, which calls scaled_dot_product_attention
  (flash attention on a GPU).
  """
  device = next(model.parameters()).device.type
  siglip = open_clip.loss.SigLipLoss()

  def loss_fn(images, tokens):
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
      out = model(images, tokens)
      return siglip(out["image_features"], out["text_features"], out["logit_scale"],
                    out["logit_bias"])

  if compiled:
    loss_fn = torch.compile(loss_fn)

  def train_step(images, tokens):
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(images, tokens)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
    optimizer.step()
    return loss.detach()

  return train_step


def to_torch_batch(batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
  """jaxmm's batch (images [B, H, W, C] float32, tokens [B, L] int32) -> (NCHW float32, int64)."""
  images = torch.from_numpy(np.ascontiguousarray(batch["image"].transpose(0, 3, 1, 2)))
  return images, torch.from_numpy(batch["tokens"].astype(np.int64))


def count_step_flops(train_step, images, tokens) -> int:
  """FLOPs of one train step as counted by torch's FlopCounterMode (matmuls, convs, attention)."""
  counter = flop_counter.FlopCounterMode(display=False)
  with counter:
    train_step(images, tokens)
  return counter.get_total_flops()
