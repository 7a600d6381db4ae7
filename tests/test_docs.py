"""The docs a newcomer reads: a short README whose first-screen commands run, and no dead links."""
import pathlib
import re
import shlex

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "benchmarks" / "README.md"] + sorted(
    (REPO / "docs").rglob("*.md"))
FIRST_SCREEN = 60  # lines


def _outside_code_blocks(path: pathlib.Path):
  """(line number, line) of the lines of a markdown file outside ``` blocks."""
  fenced = False
  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
    if line.lstrip().startswith("```"):
      fenced = not fenced
    elif not fenced:
      yield number, line


def _slug(heading: str) -> str:
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
  text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.replace("`", "")).strip().lower()
  return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: pathlib.Path) -> set[str]:
  """The anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
  anchors, seen = set(), {}
  for _, line in _outside_code_blocks(path):
    match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
    if match:
      slug = _slug(match.group(1))
      anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
      seen[slug] = seen.get(slug, 0) + 1
  return anchors


def test_readme_is_a_front_door():
  assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
  broken = []
  for number, line in _outside_code_blocks(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", line):
      if re.match(r"^[a-z]+:", target):
        continue
      path, _, anchor = target.partition("#")
      destination = (page.parent / path).resolve() if path else page
      if not destination.exists():
        broken.append(f"{number}: {target} (no such file)")
      elif anchor and (destination.suffix != ".md" or anchor not in _anchors(destination)):
        broken.append(f"{number}: {target} (no such heading)")
  assert not broken, broken


def first_screen_commands() -> list[list[str]]:
  """The `jaxmm ...` commands shown in the README's first screen, as argument lists."""
  lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()[:FIRST_SCREEN]
  return [shlex.split(line.strip())[1:] for line in lines if line.startswith("    jaxmm ")]


# Appended to each README command so that it runs in seconds: the command as
# printed, on a smaller model, fewer steps and the session's dataset.
_TINY = {
    "siglip_shapes.py": ("batch_size=16", "total_steps=2", "optim.warmup_steps=1",
                         "data.image_size=16", "model.image.patch_size=8", "model.image.width=32",
                         "model.image.depth=1", "model.image.num_heads=2", "model.image.mlp_dim=64",
                         "model.text.width=32", "model.text.depth=1", "model.text.num_heads=2",
                         "model.text.mlp_dim=64", "model.embed_dim=16", "eval_every=0"),
    "edm_shapes.py": ("batch_size=16", "total_steps=2", "optim.warmup_steps=1",
                      "data.image_size=16", "model.channels=8", "model.channel_mult=(1, 2)",
                      "model.attn_resolutions=(8,)", "model.num_heads=2", "eval_every=0"),
}


@pytest.mark.slow
def test_first_screen_commands_run(shapes_data_dir, tmp_path, monkeypatch):
  from jaxmm.commands import cli  # pylint: disable=import-outside-toplevel
  commands = first_screen_commands()
  assert [c[0] for c in commands] == ["train", "train", "sample"], commands
  monkeypatch.chdir(tmp_path)
  (tmp_path / "configs").symlink_to(REPO / "configs")
  for args in commands:
    if args[0] == "train":
      config = pathlib.Path(args[args.index("--config") + 1]).name
      args = args + [f"--config.{o}" for o in _TINY[config]]
      args.append(f"--config.data.data_dir={shapes_data_dir}")
    else:
      args = args + ["--num", "4", "--steps", "2"]
    cli.main(args)
  assert (tmp_path / "grid.png").exists()
  assert (tmp_path / "runs" / "siglip_shapes" / "checkpoints" / "2").is_dir()
