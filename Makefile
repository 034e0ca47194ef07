# make demo / make test create .venv on a fresh machine and reuse it afterwards.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-peers test-arm clean install wheel

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found (Python 3.11 is required)"; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[export,train,quantize,verify,plot,dev]"
	touch $(STAMP)

install: $(STAMP)

# The device install: dist/edgelstm-VERSION-py3-none-any.whl (pure Python; numpy, onnxruntime and
# click come from the device's own index). Copy it over and `pip install edgelstm-*.whl` there.
wheel: $(STAMP)
	rm -rf build dist/edgelstm-*.whl
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w dist .
	@ls -l dist/edgelstm-*.whl

demo: $(STAMP)
	$(BIN)/edgelstm demo --out demo_out

test: $(STAMP)
	$(BIN)/python -m pytest -q

# One run, every figure the speed targets need: the suite, the stream group, the small-step
# decomposition and the peers (OpenVINO too when `make bench-peers` has made .venv-peers), then
# the targets table in benchmarks/README.md. About 12 minutes on the 2-core VM.
RESULTS := benchmarks/results
PEERS := .venv-peers
PEERS_PY = $(if $(wildcard $(PEERS)/bin/python),$(PEERS)/bin/python,$(BIN)/python)
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --out $(RESULTS)/suite.json
	$(BIN)/python benchmarks/stream_group.py --json $(RESULTS)/stream_group.json
	$(BIN)/python benchmarks/step_floor.py --json $(RESULTS)/step_floor.json
	$(PEERS_PY) benchmarks/peers.py --json $(RESULTS)/peers.json
	$(BIN)/python benchmarks/summary.py --suite $(RESULTS)/suite.json --group $(RESULTS)/stream_group.json \
		--step $(RESULTS)/step_floor.json --peers $(RESULTS)/peers.json

# The peers (OpenVINO; PyTorch eager and dynamic int8; plain onnxruntime on a naive export) in an
# environment of their own, so that .venv never carries them.
bench-peers:
	test -x $(PEERS)/bin/python || $(PY) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q -c constraints.txt -e ".[export]" "openvino>=2025.0"
	$(PEERS)/bin/python benchmarks/peers.py

test-arm: $(STAMP)
	bash benchmarks/arm/test_arm.sh

clean:
	rm -rf $(VENV) $(PEERS) demo_out build dist *.egg-info
