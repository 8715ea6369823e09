# Two commands on a fresh clone: `make demo` (the main job) and `make test`.
# Every target sets up what it needs: the virtual environment, the dependencies,
# the Kafka jars from Maven Central (cached in ~/.cache/marginstream), and for the
# tests the Debian packages of .ci/system-packages (apt-get, only when one is missing).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA_PORT ?= 9092
PYTEST_ARGS ?=

.PHONY: demo test soak lint kafka-up kafka-down bench bench-quick bench-full jars venv clean \
	system-packages

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

jars: $(STAMP)
	$(BIN)/marginstream kafka fetch

# chromium, chromium-driver, prometheus (promtool): the tests need their programs.
system-packages:
	.ci/system-packages

demo: jars
	$(BIN)/marginstream demo

# Two test processes, each with its own broker, a file to each at a time: the broker tests
# spend most of their time waiting (about 20% of the two cores busy with one process).
test: system-packages jars
	$(BIN)/pytest -n 2 --dist loadfile $(PYTEST_ARGS)

soak: jars
	$(BIN)/python -m tests.stream.soak

# ruff, and the import contracts of pyproject.toml's [tool.importlinter] (the layers).
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

kafka-up: jars
	$(BIN)/marginstream kafka up --port $(KAFKA_PORT)

kafka-down: $(STAMP)
	$(BIN)/marginstream kafka down --port $(KAFKA_PORT)

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: jars $(BENCH_STAMP)
	$(BIN)/python -m bench.run --quick

bench-quick: jars $(BENCH_STAMP)
	$(BIN)/python -m bench.quick

bench-full: jars $(BENCH_STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache .ci-out
