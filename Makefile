# `make demo`: set up, then the main job on the embedded synthetic data. `make test`: set up, then pytest.
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup test demo clean

setup:
	@bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests

demo: setup
	$(PY) tools/demo.py

clean:
	rm -rf output
