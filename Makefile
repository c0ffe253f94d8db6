# `make demo`: set up, then the main job on the embedded default data. `make test`: set up, lint, then pytest
# (what CI runs). `make test-fast`: the quick tier for the edit-test loop.
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup lint format test test-fast demo model clean

setup:
	@bash tools/setup_env.sh

# The style gate (ruff.toml): lint + import order, the formatter's check, and the package's import contract
# (tools/check_layers.py: each layer imports only those below it). `make format` applies ruff's fixes.
lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(PY) tools/check_layers.py

format: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

# pytest-xdist: test files spread over TEST_WORKERS processes (a file's tests stay together, so its module
# fixtures are built once); most tests start tools in one-thread processes, so 2 workers on 2 cores take
# 8 min instead of 14. TEST_WORKERS=0 runs them in this one process.
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile

# The edit-test loop: the tests that neither train nor start processes (marker "slow"), no lint, under 2 min.
test-fast: setup
	$(PY) -m pytest tests -m "not slow and not gpu" -n $(TEST_WORKERS) --dist loadfile

demo: setup
	$(PY) tools/demo.py

# The ready model shipped in digit_detectron/weights/ (docs/model_card.md): about 1.5 h on 2 AVX-512 cores.
model: setup
	$(PY) tools/make_model.py

clean:
	rm -rf output
