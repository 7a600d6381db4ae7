"""The layers of docs' layout hold: read from the source's imports (every `import`, also those
inside functions), without importing anything.

- Under jaxmm/, only jaxmm/commands/ imports experiments/ or configs/.
- jaxmm/losses/ and jaxmm/diffusion/ import nothing of jaxmm but jaxmm.errors (and themselves).
- No import runs in a circle, counting that importing a module first runs its packages'
  __init__.py.
- Between the packages of jaxmm/, imports point down the layout's order; the few that still
  point up are listed in UPWARD, so that none is added unnoticed and each one removed is
  crossed off.
"""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# jaxmm's packages from the top of the layout down (README "Layout"); leaf modules
# (errors, config_loading, storage) sit below all of them.
ORDER = ("commands", "experiments", "configs", "weights", "train", "evaluators", "analysis", "runs",
         "sweeps", "data", "models", "losses", "diffusion", "parallel", "host")
LEAVES = ("errors", "config_loading", "storage")

# (importing package, imported package): a run's averages are the train layer's EMA profiles
# (runs/sampling.py picks the first, runs/posthoc.py reconstructs others from snapshots); a
# sweep's summary reads its points' run files (sweeps/plan.py, sweeps/summary.py).
UPWARD = {("runs", "train"), ("sweeps", "runs")}


def _modules() -> dict[str, pathlib.Path]:
  """'jaxmm.x.y' -> its file, with experiments/ and configs/ under the names they install as."""
  found = {}
  for top in ("jaxmm", "experiments", "configs"):
    for path in (ROOT / top).rglob("*.py"):
      parts = list(path.relative_to(ROOT).with_suffix("").parts)
      if parts[-1] == "__init__":
        parts.pop()
      if top != "jaxmm":
        parts.insert(0, "jaxmm")
      found[".".join(parts)] = path
  return found


MODULES = _modules()


def _imports(path: pathlib.Path) -> set[str]:
  """The jaxmm modules `path` imports, as 'jaxmm.x.y' (experiments/configs under jaxmm.)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  found = set()
  for name in names:
    if name.split(".")[0] in ("experiments", "configs"):
      name = "jaxmm." + name
    while name and name not in MODULES:  # `from pkg import function` names a module's member
      name = name.rpartition(".")[0]
    if name.startswith("jaxmm."):
      found.add(name)
  return found


IMPORTS = {module: _imports(path) for module, path in MODULES.items()}


def _package(module: str) -> str:
  """'jaxmm.runs.restore' -> 'runs'; 'jaxmm' (the package's __init__) -> ''."""
  return module.split(".")[1] if "." in module else ""


def test_only_the_commands_import_experiments_and_configs():
  offenders = sorted(f"{module} imports {other}"
                     for module, imported in IMPORTS.items()
                     if _package(module) not in ("commands", "experiments", "configs")
                     for other in imported if _package(other) in ("experiments", "configs"))
  assert offenders == []


def test_losses_and_diffusion_import_only_errors_of_jaxmm():
  offenders = sorted(f"{module} imports {other}"
                     for module, imported in IMPORTS.items()
                     if _package(module) in ("losses", "diffusion")
                     for other in imported
                     if other != "jaxmm.errors" and _package(other) != _package(module))
  assert offenders == []


def _with_packages(module: str) -> list[str]:
  """`module` and the packages whose __init__ runs when it is imported, e.g. jaxmm.a.b ->
  [jaxmm.a, jaxmm.a.b]."""
  parts = module.split(".")
  return [".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in MODULES]


def test_no_import_runs_in_a_circle():
  edges = {module: set() for module in MODULES}
  for module, imported in IMPORTS.items():
    for other in imported:
      for target in _with_packages(other):
        if module != target and not module.startswith(target + "."):
          edges[module].add(target)
  # Depth-first search; a module met again while it is on the path closes a circle.
  state, circles = {}, []

  def visit(module, path):
    state[module] = "open"
    for other in sorted(edges[module]):
      if state.get(other) == "open":
        circles.append(path[path.index(other):] + [other])
      elif other not in state:
        visit(other, path + [other])
    state[module] = "done"

  for module in sorted(MODULES):
    if module not in state:
      visit(module, [module])
  assert circles == []


def test_imports_between_packages_point_down_the_layout():
  upward = set()
  for module, imported in IMPORTS.items():
    for other in imported:
      low, high = _package(module), _package(other)
      if "" in (low, high) or low in LEAVES or high in LEAVES or low == high:
        continue
      if ORDER.index(high) < ORDER.index(low):
        upward.add((low, high))
  assert upward == UPWARD
