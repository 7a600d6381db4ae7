# Two commands do everything on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
BENCH_VENV := .venv-bench
WORKDIR ?= runs/siglip_shapes
CONFIG ?= configs/siglip_shapes.py
PIP_VERSION := 26.3

.PHONY: install train test test-slow bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q pip==$(PIP_VERSION)
	$(VENV)/bin/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

train: install
	$(VENV)/bin/jaxmm train --config $(CONFIG) --workdir $(WORKDIR)

test: install
	$(VENV)/bin/python -m pytest -q

test-slow: install
	$(VENV)/bin/python -m pytest -q -m slow

# The PyTorch reference (open_clip) lives in its own venv: it is large and
# only the benchmark needs it.
$(BENCH_VENV)/.installed: setup.py constraints.txt benchmarks/requirements-torch.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q pip==$(PIP_VERSION)
	$(BENCH_VENV)/bin/python -m pip install -q -c constraints.txt -e . -r benchmarks/requirements-torch.txt
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python benchmarks/step_throughput.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) *.egg-info
