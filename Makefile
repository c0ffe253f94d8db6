# `make demo`: set up, then the main job on the embedded default data. `make test`: set up, lint, then pytest.
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup lint format test demo clean

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

test: lint
	$(PY) -m pytest tests

demo: setup
	$(PY) tools/demo.py

clean:
	rm -rf output
