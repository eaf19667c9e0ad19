# The two commands: `make demo` (synthetic data -> whole pipeline -> submission.csv + score)
# and `make test`. Both do their own set-up. WHEELS=DIR points pip at a wheel folder that
# holds a prebuilt mmcv (CI: ../shared/wheels); without it mmcv builds from source (20-30 min).
SHELL := /bin/bash
WHEELS ?=
VENV ?= .venv
VENV_KAGGLE ?= .venv-kaggle
PY := $(VENV)/bin/python
SIIM := $(PY) -m siimcovid
DEMO ?= demo
DEMO_STUDIES ?= 300
DEMO_SCALE ?= 0.25
DEMO_SEED ?= 0
DEMO_SIZE ?= 128
PYTEST_ARGS ?=

REHEARSE ?= build/rehearse
REHEARSE_PROFILE ?= tiny
# the optional stages rehearsed too, on synth-external's stand-ins (laid out as /kaggle/input)
REHEARSE_INCLUDE ?= preprocess-external pretrain-det

.PHONY: setup test setup-kaggle test-kaggle test-tf-old demo notebooks kernels bench clean-demo rehearse

setup:
	scripts/setup.sh $(if $(WHEELS),--wheels $(WHEELS))

test: setup
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

# The whole suite in .venv-kaggle: the Kaggle image's versions (utils_dataset/siimcovid/configs/kaggle/image.yaml)
# + what the kernels install on top; see docs/kaggle-image.md. CI runs it after `make test`.
setup-kaggle:
	VENV_KAGGLE=$(VENV_KAGGLE) scripts/setup-kaggle.sh $(if $(WHEELS),--wheels $(WHEELS))

test-kaggle: setup-kaggle
	$(VENV_KAGGLE)/bin/python -m pytest tests -q $(PYTEST_ARGS)

# The classifier tests on an older TensorFlow (TF_OLD=2.19) in its own .venv-tf-old; not part of `make test`.
test-tf-old:
	scripts/test-tf-old.sh $(PYTEST_ARGS)

notebooks: setup
	$(VENV)/bin/jupytext --to ipynb --update notebooks/*.py

kernels: setup
	$(SIIM) kaggle render $(if $(KAGGLE_USER),--user $(KAGGLE_USER),--placeholder-user)

bench: setup
	$(SIIM) bench preprocess

demo: setup
	scripts/demo.sh "$(DEMO)" "$(DEMO_STUDIES)" "$(DEMO_SCALE)" "$(DEMO_SEED)" "$(DEMO_SIZE)"

# The push rehearsed: the rendered kernels run as Kaggle runs them (only their inputs, read-only, no network).
rehearse: setup
	$(SIIM) synth --out "$(REHEARSE)/data" --studies 30 --scale 0.125 --seed 0
	$(SIIM) synth-external --out "$(REHEARSE)/inputs" --rsna 24 --chexpert 12 --orig 160
	$(SIIM) rehearse --profile "$(REHEARSE_PROFILE)" --data "$(REHEARSE)/data" --out "$(REHEARSE)/out" \
	  $(if $(strip $(REHEARSE_INCLUDE)),--include $(REHEARSE_INCLUDE) --inputs "$(REHEARSE)/inputs")

clean-demo:
	rm -rf "$(DEMO)"
