# Two commands for a fresh machine (see README):  make run  ·  make test
# Needs only python3 (3.11+); uv is bootstrapped into .tools/ and installs the locked deps.

UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
export PLEDGEFLOW_DATABASE_URL ?= sqlite:///var/pledgeflow.db
# Precompile installed packages: this environment sets PYTHONDONTWRITEBYTECODE, so without it
# every process would compile FastAPI, pydantic and SQLAlchemy from source at start-up.
export UV_COMPILE_BYTECODE := 1

.PHONY: run test test-fault lint sync clean browser

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --locked --quiet
	touch $@

sync: .venv/.synced

## The main job on the embedded defaults (SQLite under ./var/, local mail catcher), demo data.
run: sync
	$(UV) run --no-sync pledgeflow up

## Debian's Chromium and a Chinese font for the browser tests (no browser download).
browser:
	@{ command -v chromium && fc-list :lang=zh | grep -q . ; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null; \
	  else echo "browser tests need: sudo apt-get install chromium fonts-wqy-zenhei" >&2; \
	    exit 1; fi; }

## The whole test suite (SQLite and PostgreSQL at 127.0.0.1:5432, database "test").
test: sync browser
	$(UV) run --no-sync pytest -n 2

## Fault tests: kill -9, PostgreSQL restarted (a private cluster), SMTP down for 60 s,
## tampering, 10,000 malformed requests (about 7 minutes; CI runs them after the suite).
test-fault: sync
	$(UV) run --no-sync pytest -m fault -p no:xdist

lint: sync
	$(UV) run --no-sync ruff check .

clean:
	rm -rf .venv .tools var
