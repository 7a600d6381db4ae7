# Two commands do everything on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
PEERS_VENV := .venv-peers
WORKDIR ?= runs/siglip_shapes
CONFIG ?= configs/siglip_shapes.py
PIP_VERSION := 26.3

.PHONY: install train train-guided test test-slow peers bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q pip==$(PIP_VERSION)
	$(VENV)/bin/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

train: install
	$(VENV)/bin/jaxmm train --config $(CONFIG) --workdir $(WORKDIR)

# The diffusion default and its autoguidance guide, a smaller U-Net trained for fewer steps
# (configs/edm_shapes.py, docs/guidance.md).
train-guided: install
	$(VENV)/bin/jaxmm train --config configs/edm_shapes.py --workdir runs/edm_shapes
	$(VENV)/bin/jaxmm train --config configs/edm_shapes.py:guide --workdir runs/edm_shapes_guide

# One pytest worker per core; a file's tests stay on one worker, so its fixtures train once.
test: install
	$(VENV)/bin/python -m pytest -q -n auto --dist loadfile

test-slow: install
	$(VENV)/bin/python -m pytest -q -m slow

# The PyTorch peers (open_clip, diffusers, k-diffusion) live in their own venv: torch is
# large and only the benchmarks need it. k-diffusion goes in without its dependencies,
# which serve its training code (see benchmarks/requirements-peers.txt).
peers: $(PEERS_VENV)/.installed

$(PEERS_VENV)/.installed: setup.py constraints.txt benchmarks/requirements-peers.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q pip==$(PIP_VERSION)
	$(PEERS_VENV)/bin/python -m pip install -q -c constraints.txt -e . -r benchmarks/requirements-peers.txt
	$(PEERS_VENV)/bin/python -m pip install -q --no-deps k-diffusion==0.1.1.post1
	touch $@

# `make bench ARGS=--quick` for a few minutes' run; the tables land in benchmarks/results/.
bench: peers
	$(PEERS_VENV)/bin/python benchmarks/bench.py $(ARGS)

clean:
	rm -rf $(VENV) $(PEERS_VENV) *.egg-info
