"""Host input pipeline: 224 x 224 random-resized crops per second per core, jaxmm against
open_clip's webdataset pipeline, on the same JPEG shards of photographs.

  .venv-peers/bin/python benchmarks/input_pipeline.py [--cores 2] [--images 512] [--rounds 3]

The shards: scikit-learn's two sample photographs (`load_sample_images`, 427 x
640) re-encoded as JPEG (quality 90, PIL's default 4:2:0 chroma) with their
short side at 256, 384, 512, 768 and 1024 px (the larger ones upsampled),
--images examples in 8 webdataset tars with a caption each; nothing is
downloaded.

Each side runs in a child process pinned to --cores cores (sched_setaffinity),
so that "per core" means the same on both; rounds alternate the sides and
each reports the median. A side reads the shards from the page cache, decodes,
crops a box of U(0.9, 1) of the area with aspect in [3/4, 4/3], resizes it to
224 x 224, and normalises by OpenAI's CLIP mean and std into float32 batches
of --batch images:

  jaxmm      `jaxmm.data.train_iterator` on data.source='wds' with
             data.crop_scale=(0.9, 1.0) and data.host_threads=cores
             (`jaxmm.data.shards.crop`: libjpeg-turbo at a reduced DCT scale,
             PIL's antialiased bilinear resize)
  open_clip  open_clip_train's webdataset pipeline (shard list, split by worker,
             tarfile_to_samples, shuffle, decode('pilrgb'), rename, map_dict,
             to_tuple, batched) under a `wds.WebLoader` with cores workers,
             each image through open_clip's own training transform
             (`open_clip.image_transform(224, is_train=True)`:
             RandomResizedCrop(224, scale=(0.9, 1.0), bicubic), ToTensor,
             Normalize); 'open_clip, bilinear' is the same with torchvision's
             bilinear filter, jaxmm's
  Captions are not read (no tokenizer on either side).

--decoders also times, on one core, one 224 x 224 crop of every shard image
by each candidate decoder: PIL at full size, PIL's draft mode (DCT scaling to
1/2, 1/4, 1/8), simplejpeg (libjpeg-turbo) at full size and at the smallest
scale k/8 that keeps the box at least 224 px, and torchvision.io.decode_jpeg;
the crop is PIL's bilinear resize in all.
"""
import argparse
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

# --side's name of each side -> its label
SIDE_NAMES = {"jaxmm": "jaxmm", "open_clip": "open_clip", "open_clip_bilinear":
              "open_clip, bilinear"}
SIDES = tuple(SIDE_NAMES.values())
SIZES = (256, 384, 512, 768, 1024)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CROP = 224
SCALE = (0.9, 1.0)


def photographs() -> list[bytes]:
  """JPEG bytes of scikit-learn's two photographs at each short side of SIZES, quality 90."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from sklearn.datasets import load_sample_images  # pylint: disable=import-outside-toplevel
  encoded = []
  for side in SIZES:
    for photo in load_sample_images().images:
      image = Image.fromarray(photo)
      scale = side / min(image.size)
      image = image.resize((round(image.width * scale), round(image.height * scale)),
                           Image.BICUBIC)
      buffer = io.BytesIO()
      image.save(buffer, format="JPEG", quality=90)
      encoded.append(buffer.getvalue())
  return encoded


def write_shards(folder: str, images: int, shards: int = 8) -> str:
  """`images` examples (KEY.jpg, KEY.txt) cycling over `photographs()`, in `shards` tars; the
  brace pattern of their paths."""
  encoded = photographs()
  per_shard = math.ceil(images / shards)
  for s in range(shards):
    with tarfile.open(os.path.join(folder, f"{s:05d}.tar"), "w") as tar:
      for i in range(s * per_shard, min(images, (s + 1) * per_shard)):
        for name, payload in ((f"{i:06d}.jpg", encoded[i % len(encoded)]),
                              (f"{i:06d}.txt", f"photograph {i}".encode())):
          info = tarfile.TarInfo(name)
          info.size = len(payload)
          tar.addfile(info, io.BytesIO(payload))
  return os.path.join(folder, f"{{00000..{shards - 1:05d}}}.tar")


def jaxmm_batches(pattern: str, cores: int, batch: int):
  """jaxmm's training batches of the shards, forever."""
  import glob  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  from jaxmm import data  # pylint: disable=import-outside-toplevel
  files = sorted(glob.glob(pattern.split("{")[0] + "*.tar"))
  config = ml_collections.ConfigDict(
      dict(name="photographs", train_split="train", eval_split="train", image_size=CROP,
           max_len=16, tokenizer="bytes", augment=False, source="wds", files=files,
           image_key="jpg", text_key=None, cache=False, crop_scale=SCALE, host_threads=cores,
           image_mean=OPENAI_MEAN, image_std=OPENAI_STD))
  for batch_dict in data.train_iterator(config, global_batch_size=batch, seed=0,
                                        need_text=False):
    yield batch_dict["image"]


def open_clip_batches(pattern: str, cores: int, batch: int, bilinear: bool):
  """open_clip_train's webdataset training pipeline over the shards, images only, forever."""
  # pylint: disable=import-outside-toplevel
  import open_clip
  from torchvision import transforms
  import webdataset as wds
  transform = open_clip.image_transform(CROP, is_train=True, mean=OPENAI_MEAN, std=OPENAI_STD)
  if bilinear:
    transform.transforms[0].interpolation = transforms.InterpolationMode.BILINEAR
  pipeline = wds.DataPipeline(
      wds.SimpleShardList(pattern),
      wds.split_by_worker,
      wds.tarfile_to_samples(),
      wds.shuffle(1000, initial=500),  # open_clip's sample shuffle, smaller for the few images
      wds.decode("pilrgb"),
      wds.rename(image="jpg;png;jpeg;webp"),
      wds.map_dict(image=transform),
      wds.to_tuple("image"),
      wds.batched(batch, partial=False),
  )
  loader = wds.WebLoader(pipeline, batch_size=None, shuffle=False, num_workers=cores,
                         persistent_workers=True)
  while True:
    for (images,) in loader:
      yield images


def time_side(side: str, pattern: str, cores: int, batch: int, images: int) -> float:
  """Images per second of `side` on this process's cores, after one warm-up batch."""
  if side == "jaxmm":
    batches = jaxmm_batches(pattern, cores, batch)
  else:
    batches = open_clip_batches(pattern, cores, batch, bilinear=side != "open_clip")
  first = next(batches)
  assert tuple(first.shape[-3:]) in ((CROP, CROP, 3), (3, CROP, CROP)), first.shape
  count = max(1, images // batch)
  start = time.perf_counter()
  for _ in range(count):
    next(batches)
  return count * batch / (time.perf_counter() - start)


def crop_box(width: int, height: int, rng) -> tuple[float, float, float, float]:
  """A box of U(SCALE) of the area, aspect in [3/4, 4/3]: (left, top, right, bottom)."""
  area = rng.uniform(*SCALE) * width * height
  aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
  box_width, box_height = min(math.sqrt(area * aspect), width), min(math.sqrt(area / aspect),
                                                                    height)
  left, top = rng.uniform() * (width - box_width), rng.uniform() * (height - box_height)
  return left, top, left + box_width, top + box_height


def decoder_rates(repeats: int) -> dict[str, float]:
  """Crops per second on one core of each candidate decoder, over every shard image."""
  # pylint: disable=import-outside-toplevel
  from PIL import Image
  import simplejpeg
  import torch
  import torchvision.io
  torch.set_num_threads(1)

  def resized(rgb: np.ndarray, box, sx: float = 1.0, sy: float = 1.0) -> np.ndarray:
    left, top, right, bottom = box
    box = (left * sx, top * sy, min(right * sx, rgb.shape[1]), min(bottom * sy, rgb.shape[0]))
    return np.asarray(Image.fromarray(rgb).resize((CROP, CROP), Image.BILINEAR, box=box))

  def pil(data, rng, draft=False):
    with Image.open(io.BytesIO(data)) as image:
      width, height = image.size
      box = crop_box(width, height, rng)
      if draft:
        image.draft("RGB", (math.ceil(width * CROP / (box[2] - box[0])),
                            math.ceil(height * CROP / (box[3] - box[1]))))
      rgb = np.asarray(image.convert("RGB"))
    return resized(rgb, box, rgb.shape[1] / width, rgb.shape[0] / height)

  def simple(data, rng, scaled=False):
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    box = crop_box(width, height, rng)
    minimum = (dict(min_height=math.ceil(height * CROP / (box[3] - box[1])),
                    min_width=math.ceil(width * CROP / (box[2] - box[0]))) if scaled else {})
    rgb = simplejpeg.decode_jpeg(data, "RGB", **minimum)
    return resized(rgb, box, rgb.shape[1] / width, rgb.shape[0] / height)

  def torchvision_decode(data, rng):
    rgb = torchvision.io.decode_jpeg(torch.frombuffer(data, dtype=torch.uint8))
    rgb = rgb.permute(1, 2, 0).numpy()
    return resized(rgb, crop_box(rgb.shape[1], rgb.shape[0], rng))

  decoders = {
      "PIL, full size": pil,
      "PIL, draft mode (1/2, 1/4, 1/8)": lambda d, r: pil(d, r, draft=True),
      "simplejpeg, full size": simple,
      "simplejpeg, scale k/8 (jaxmm)": lambda d, r: simple(d, r, scaled=True),
      "torchvision.io.decode_jpeg, full size": torchvision_decode,
  }
  encoded = photographs()
  rates = {}
  for name, decode in decoders.items():
    rng = np.random.default_rng(0)
    decode(encoded[0], rng)
    start = time.perf_counter()
    for _ in range(repeats):
      for data in encoded:
        decode(data, rng)
    rates[name] = repeats * len(encoded) / (time.perf_counter() - start)
  return rates


def child(args) -> None:
  """One measurement in this process, pinned to the first --cores cores; prints JSON."""
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
  if args.side == "decoders":
    print(json.dumps(decoder_rates(args.repeats)))
  else:
    print(json.dumps(time_side(SIDE_NAMES[args.side], args.pattern, args.cores, args.batch,
                               args.images)))


def measure(side: str, args, pattern: str):
  """The JSON result of `side` measured in a child process."""
  command = [sys.executable, os.path.abspath(__file__), "--side", side, "--pattern", pattern,
             "--cores", str(args.cores), "--batch", str(args.batch), "--images", str(args.images),
             "--repeats", str(args.repeats)]
  result = subprocess.run(command, check=True, capture_output=True, text=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cores", type=int, default=min(2, len(os.sched_getaffinity(0))),
                      help="cores each side may use (jaxmm's threads, open_clip's workers)")
  parser.add_argument("--images", type=int, default=512, help="shard examples, timed per round")
  parser.add_argument("--batch", type=int, default=32, help="images per batch")
  parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the sides")
  parser.add_argument("--repeats", type=int, default=3,
                      help="--decoders: passes over the shard images")
  parser.add_argument("--decoders", action="store_true", help="also time the decoders alone")
  parser.add_argument("--json", metavar="PATH", help="write the results as JSON there")
  parser.add_argument("--side", choices=["decoders", *SIDE_NAMES], help=argparse.SUPPRESS)
  parser.add_argument("--pattern", help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  if args.side:
    child(args)
    return
  rates = {side: [] for side in SIDES}
  with tempfile.TemporaryDirectory() as folder:
    pattern = write_shards(folder, args.images)
    for round_number in range(args.rounds):
      for name, side in SIDE_NAMES.items():
        rates[side].append(measure(name, args, pattern))
      print(f"round {round_number + 1}: " + ", ".join(
          f"{side} {rates[side][-1] / args.cores:.1f}" for side in SIDES) + " images/s/core",
            flush=True)
    decoders = measure("decoders", args, pattern) if args.decoders else None
  median = {side: statistics.median(values) / args.cores for side, values in rates.items()}
  print(f"\n{args.cores} cores, batch {args.batch}, {args.images} images a round, "
        f"load average {os.getloadavg()[0]:.2f}; median images/s per core:")
  print(f"  {'jaxmm':<20} {median['jaxmm']:7.1f}")
  for side in SIDES[1:]:
    print(f"  {side:<20} {median[side]:7.1f}   jaxmm / {side}: "
          f"{median['jaxmm'] / median[side]:.2f}x")
  if decoders:
    print("\none core, one 224 x 224 crop of each shard image, crops/s:")
    for name, rate in decoders.items():
      print(f"  {name:<40} {rate:7.1f}")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(dict(args=vars(args), images_per_core_s=median, rounds=rates,
                     decoders=decoders), f, indent=1)


if __name__ == "__main__":
  main()
