# Project commands. Every target uses the virtualenv in .venv (made by `make venv`).
PY ?= .venv/bin/python
PROTOS := $(wildcard protos/neuralops/*/v1/*.proto)

.PHONY: venv generate check-generated lint typecheck test bench reports up demo screenshots deploy-check nab

venv:
	bash scripts/bootstrap.sh

# Regenerate generated/ from protos/ (never edit generated/ by hand).
generate:
	rm -rf generated/neuralops
	mkdir -p generated
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=generated --grpc_python_out=generated \
		--plugin=protoc-gen-mypy=.venv/bin/protoc-gen-mypy --mypy_out=generated \
		--plugin=protoc-gen-mypy_grpc=.venv/bin/protoc-gen-mypy_grpc --mypy_grpc_out=generated \
		$(PROTOS)
	# Descriptors with source info, so reflection (grpcurl describe) shows the proto comments.
	for p in $(PROTOS); do \
		svc=$$(basename $$p .proto); \
		$(PY) -m grpc_tools.protoc -Iprotos --include_source_info \
			--descriptor_set_out=generated/neuralops/$$svc/v1/$${svc}_descriptor.binpb $$p; \
	done

# Fails when generated/ differs from what `make generate` makes.
check-generated: generate
	@test -z "$$(git status --porcelain -- generated)" || { git status --porcelain -- generated; echo "generated/ is stale: run make generate and commit"; exit 1; }

lint:
	npx --no-install buf lint
	npx --no-install buf format -d --exit-code
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(MAKE) typecheck

# mypy --strict on the neuralops namespace (generated code is read, not checked).
typecheck:
	rm -rf build/typecheck && mkdir -p build/typecheck/neuralops
	for d in runhistory insight registry; do ln -s ../../../generated/neuralops/$$d build/typecheck/neuralops/$$d; done
	ln -s ../../../servers build/typecheck/neuralops/servers
	ln -s ../../../clients build/typecheck/neuralops/clients
	.venv/bin/mypy -p neuralops.servers -p neuralops.clients
	.venv/bin/mypy tests benchmarks
	# Import rules ([tool.importlinter] in pyproject.toml), over the same namespace tree.
	PYTHONPATH=build/typecheck .venv/bin/lint-imports --no-cache

# The test suite: SQLite and the real Postgres (POSTGRES_DSN, default the local server),
# real Prometheus, Milvus Lite, grpcurl. Bootstraps .venv first.
test: venv
	POSTGRES_DSN="$${POSTGRES_DSN:-postgresql://postgres@127.0.0.1:5432/test}" $(PY) -m pytest

# Benchmarks (not tests): prints figures and writes reports/benchmarks.md.
bench: venv
	POSTGRES_DSN="$${POSTGRES_DSN:-postgresql://postgres@127.0.0.1:5432/test}" $(PY) -m benchmarks

# Regenerates reports/0A.*.md and reports/Phase_A_summary.md from real runs.
reports: venv
	.venv/bin/neuralops report

# Insight's detector on the NAB scoring rules over the labelled corpus: writes reports/nab.md.
nab: venv
	$(PY) -m benchmarks.nab

# The main job: all three services, their metrics and a local Prometheus (Ctrl-C stops).
# exec: no shell in between; make passes SIGTERM on, and if make itself dies the stack
# follows (--stop-with-parent), so a supervisor can stop it all by make's pid.
up: venv
	exec .venv/bin/neuralops up --stop-with-parent

# The demo, against a running `make up`.
demo:
	.venv/bin/neuralops demo

# The console screenshots in the README (docs/screenshots/*.png), taken by the browser test
# on its demo-like stack.
screenshots: venv
	NEURALOPS_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/test_console.py

# Render deploy/kubernetes and check it against the Kubernetes schemas (shipped in the
# kubernetes-validate package: no cluster, nothing fetched) and against the code.
deploy-check: venv
	$(PY) deploy/check.py
