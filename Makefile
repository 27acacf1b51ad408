# DisCo DETR: the two set-up commands are `make demo` and `make test`.
# Each creates .venv and installs everything on first use; later runs reuse it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-v2
DEMO_DATA := datasets/demo
DEMO_OUT  := output/demo

.PHONY: demo test install lint clean-demo

install: $(STAMP)

# torch/torchvision: the versions verified on our machines (pip takes them from local disk
# where it can). detectron2 is installed as `sal-detectron2` (upstream detectron2 at commit
# a59f0563 plus a Python 3.11 fix); only a cp310 wheel exists, so we take its pure-Python
# part (--python-version 3.10 --no-deps), never load its compiled _C, and remove the stray
# top-level `tools/` package that the wheel drops into site-packages (it shadows ours).
$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip<26.2"
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1 "numpy<2"
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps --target "$$($(PY) -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')" \
		--python-version 3.10 --only-binary=:all: --upgrade sal-detectron2==0.7.2
	rm -rf "$$($(PY) -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')/tools"
	$(PIP) install -q --no-deps -e .
	# the export extra (onnx, onnxruntime, openvino) for tools/export_model.py, tools/predict.py --model and their
	# tests; numpy stays < 2
	$(PIP) install -q "numpy<2" -e ".[export]"
	touch $(STAMP)

# make demo: RT-DETR's demo preset fine-tuned on 10 % of the demo's labelled images (fold 0) for 200 iterations,
# from four starts (ImageNet only, DETReg, Siamese DETR, DisCo DETR, each pre-trained 50 iterations); the setting was
# chosen by the rule in docs/experiments.md ("Choosing make demo") from the label-efficiency study
demo: export PYTHONWARNINGS = ignore::FutureWarning
demo: $(STAMP)
	$(PY) tools/run_demo.py --variant rtdetr --fraction 0.1 --fold 0 --pretrain-iters 50 --finetune-iters 200 \
		--starts none detreg siamese disco --data $(DEMO_DATA) --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q --durations=10 tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_OUT)
