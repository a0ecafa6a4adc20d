# The two commands of the README: `make demo` and `make test`.
DEMO_URI = test://$(CURDIR)/examples/demo-host.xml
VENV = .venv/bin

.PHONY: demo test setup setup-test lint unit postgres

setup:
	scripts/setup.sh

setup-test:
	scripts/setup.sh --test

demo: setup
	$(VENV)/auditor --connect $(DEMO_URI) pools
	$(VENV)/auditor --connect $(DEMO_URI) volumes

lint:
	$(VENV)/ruff check auditor tests benchmarks
	$(VENV)/ruff format --check auditor tests benchmarks
	$(VENV)/mypy auditor

test: setup-test postgres
	scripts/testbed.sh
	$(MAKE) --no-print-directory lint
	$(VENV)/pytest $(PYTEST_ARGS)

postgres: setup-test  # the tests' PostgreSQL server on 127.0.0.1 (scripts/postgres.sh)
	scripts/postgres.sh

unit: setup
	$(VENV)/pytest -m "not libvirtd" $(PYTEST_ARGS)
