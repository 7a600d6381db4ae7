"""The PyTorch reference of the diffusion step benchmark: diffusers' UNet2DModel trained with
the EDM objective (Karras et al. 2022) and torch.optim.AdamW, on the CPU or a CUDA GPU.

The network is `diffusers.UNet2DModel` (no pretrained weights, nothing
downloaded) in the layout of jaxmm's U-Net (jaxmm/models/unet.py) for a
config's `model.channels`, `channel_mult`, `num_blocks`, `attn_resolutions`,
`num_heads` and `patch_size` (p×p pixel patches folded into channels around
the network, `PatchedUNet`): `num_blocks` residual blocks per level and a residual block
that halves the resolution between levels (2×2 average pooling; diffusers'
`ResnetDownsampleBlock2D`), `num_blocks + 1` decoder blocks per level, each
taking one encoder activation as a skip, and a residual block that doubles
it (nearest upsampling), self-attention after every block at the attention
resolutions and in the middle (block, attention, block), the conditioning
vector as a per-channel scale and shift after each block's second GroupNorm
('scale_shift'), a sinusoidal noise embedding of width `channels` (cos
first) and a two-layer SiLU MLP to 4·channels. Channel counts, block order
and skips are the same block for block. What differs:
  labels: diffusers takes one class label per example; the (shape, colour)
    pair is embedded as one of 6·8 = 48 classes, plus a 49th for a dropped
    label, and added after the noise MLP. jaxmm sums one table per label
    (with a null row each) into the noise embedding before its MLP.
  GroupNorm: one group count for all (`GROUPS` = 8, which divides every
    channel count here, 32 to 128); jaxmm uses up to 32 groups of at least 4
    channels (8 at 32 channels, 16 at 64, 24 at 96, 32 at 128).
  attention: diffusers fixes the head width (here channels / num_heads of the
    deepest level, where all attention runs), jaxmm the head count; diffusers'
    key projection has a bias (jaxmm's has none); it runs torch's
    scaled_dot_product_attention, jaxmm two einsums and a float32 softmax.
  initialisation: diffusers' defaults; jaxmm starts every residual branch and
    the output convolution at zero. It changes the numbers, not the work.
The loss is EDM's: ln σ ~ N(P_mean, P_std²), D = c_skip·x + c_out·F(c_in·x,
¼ ln σ), λ(σ)·mean((D − x0)²) averaged over the batch, with the labels of a
`label_dropout` share of the examples dropped. The step then clips the global
gradient norm, takes an AdamW step (weight decay on matrices only) and
updates EDM2's power-function EMA of the parameters, as the jaxmm step does;
its learning rate is constant (jaxmm's follows warmup and cosine, one scalar
per step), and it does not compute jaxmm's metrics (parameter norm, finite).
"""
import diffusers
import numpy as np
import torch
from torch.nn import functional

from jaxmm.diffusion import schedules
from jaxmm.train import ema as ema_lib

GROUPS = 8


class PatchedUNet(torch.nn.Module):
  """A UNet2DModel on p×p pixel patches folded into channels, as jaxmm's U-Net with
  model.patch_size = p works (p = 1: on the pixels)."""

  def __init__(self, unet: diffusers.UNet2DModel, patch_size: int):
    super().__init__()
    self.unet, self.patch_size = unet, patch_size

  def forward(self, x, noise_labels, classes):
    """x [B, 3, H, W] -> the network output F [B, 3, H, W]."""
    folded = functional.pixel_unshuffle(x, self.patch_size)
    return functional.pixel_shuffle(self.unet(folded, noise_labels, classes).sample,
                                    self.patch_size)


def make_model(model_config, image_size: int) -> PatchedUNet:
  """UNet2DModel in the layout of jaxmm's U-Net `model_config` for image_size² RGB images."""
  patch = model_config.get("patch_size", 1)
  size = image_size // patch
  resolutions = [size >> level for level in range(len(model_config.channel_mult))]
  attention = [r in model_config.attn_resolutions for r in resolutions]
  width = model_config.channels * model_config.channel_mult[-1]
  num_classes = int(np.prod(model_config.num_classes))
  unet = diffusers.UNet2DModel(
      sample_size=size,
      in_channels=3 * patch**2,
      out_channels=3 * patch**2,
      time_embedding_type="positional",
      flip_sin_to_cos=True,
      freq_shift=0,
      down_block_types=tuple(
          "AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attention),
      up_block_types=tuple(
          "AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(attention)),
      block_out_channels=tuple(model_config.channels * m for m in model_config.channel_mult),
      layers_per_block=model_config.num_blocks,
      downsample_type="resnet",
      upsample_type="resnet",
      dropout=model_config.dropout,
      act_fn="silu",
      attention_head_dim=width // model_config.num_heads,
      norm_num_groups=GROUPS,
      attn_norm_num_groups=GROUPS,
      norm_eps=1e-6,
      resnet_time_scale_shift="scale_shift",
      num_class_embeds=num_classes + 1)
  return PatchedUNet(unet, patch)


def class_index(labels: torch.Tensor, num_classes) -> torch.Tensor:
  """int [B, K] labels -> [B]: the index of the label tuple among prod(num_classes) classes."""
  index = torch.zeros_like(labels[:, 0])
  for k, n in enumerate(num_classes):
    index = index * n + labels[:, k]
  return index


def make_optimizer(model: torch.nn.Module, optim, fused: bool = False) -> torch.optim.AdamW:
  """AdamW with weight decay on parameters of rank >= 2 only (jaxmm.train.make_optimizer);
  `fused`: one fused kernel for all parameters, else one multi-tensor (foreach) pass per op."""
  params = list(model.parameters())
  groups = [
      {
          "params": [p for p in params if p.ndim >= 2],
          "weight_decay": optim.weight_decay
      },
      {
          "params": [p for p in params if p.ndim < 2],
          "weight_decay": 0.0
      },
  ]
  return torch.optim.AdamW(groups,
                           lr=optim.lr,
                           betas=(optim.b1, optim.b2),
                           eps=optim.eps,
                           foreach=not fused,
                           fused=fused)


def make_loss_fn(model: PatchedUNet, config, bf16: bool):
  """loss(images [B, 3, H, W], labels int [B, K]) -> EDM's loss, the mean over the batch.

  With `bf16` the network runs under autocast to bfloat16 on the images'
  device; the preconditioning and the loss are float32.
  """
  edm = schedules.EDM(**config.diffusion.schedule_args)
  num_classes = tuple(config.model.num_classes)
  dropped = int(np.prod(num_classes))
  rate = config.diffusion.label_dropout

  def loss_fn(images, labels):
    b, device = images.shape[0], images.device
    sigma = torch.exp(edm.P_mean + edm.P_std * torch.randn(b, device=device)).view(b, 1, 1, 1)
    noisy = images + sigma * torch.randn_like(images)
    sd2 = edm.sigma_data**2
    c_skip = sd2 / (sigma**2 + sd2)
    c_out = sigma * edm.sigma_data / torch.sqrt(sigma**2 + sd2)
    c_in = 1 / torch.sqrt(sigma**2 + sd2)
    weight = (sigma**2 + sd2) / (sigma * edm.sigma_data)**2
    classes = torch.where(
        torch.rand(b, device=device) < rate, dropped, class_index(labels, num_classes))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
      out = model(c_in * noisy, 0.25 * torch.log(sigma.flatten()), classes)
    denoised = c_skip * noisy + c_out * out.float()
    per_example = functional.mse_loss(denoised, images, reduction="none").mean(dim=(1, 2, 3))
    return (weight.flatten() * per_example).mean()

  return loss_fn


def make_train_step(model: PatchedUNet, config, bf16: bool, mode: str):
  """train_step(images, labels) -> loss: EDM loss, backward, clip, AdamW, power EMA.

  `mode` says how the step runs: 'eager'; 'compiled': the network and the
  loss under torch.compile (forward and backward), the optimizer eager;
  'best': also CUDA graphs on a GPU (mode='reduce-overhead') and fused
  AdamW, what a careful PyTorch training script runs. The EMA is one multi-tensor
  lerp per average in every mode; the backward pass cannot be traced into the
  same graph as the update (it runs in autograd's engine), so 'best' is as far
  as torch.compile takes a whole step without compiled autograd.
  """
  optimizer = make_optimizer(model, config.optim, fused=mode == "best")
  loss_fn = make_loss_fn(model, config, bf16)
  if mode != "eager":
    cuda_graphs = mode == "best" and next(model.parameters()).is_cuda
    loss_fn = torch.compile(loss_fn, mode="reduce-overhead" if cuda_graphs else None)
  params = list(model.parameters())
  # One average per profile of config.ema, each with its decay β_t after update t.
  betas = [lambda t, d=d: d for d in config.ema.decays]
  betas += [lambda t, g=ema_lib.power_gamma(s): (1 - 1 / t)**(g + 1) for s in config.ema.sigma_rels]
  averages = [[p.detach().clone() for p in params] for _ in betas]
  step = 0

  def train_step(images, labels):
    nonlocal step
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(images, labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip_norm)
    optimizer.step()
    step += 1
    with torch.no_grad():
      for average, beta in zip(averages, betas):
        torch._foreach_lerp_(average, params, 1 - beta(step))  # pylint: disable=protected-access
    return loss.detach()

  return train_step


def to_torch_batch(batch: dict[str, np.ndarray], label_keys) -> tuple[torch.Tensor, torch.Tensor]:
  """jaxmm's batch (images [B, H, W, C], int labels [B] each) -> (NCHW float32, int64 [B, K])."""
  images = torch.from_numpy(np.ascontiguousarray(batch["image"].transpose(0, 3, 1, 2)))
  labels = np.stack([batch[key] for key in label_keys], axis=-1).astype(np.int64)
  return images, torch.from_numpy(labels)
