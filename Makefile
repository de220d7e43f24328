# bpfnb: `make lab` (set up, then JupyterLab), `make test`, `make bench`, `make recordings`, `make labextension`.
# All set-up logic lives in scripts/setup.sh; a second run checks and does nothing.
# `sudo make lab BPFNB_USER=alice` also installs the kernel "bpfnb (BPF capabilities)"
# (cells run as alice with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN); `make kernelspec-remove`
# takes it away. Variables given on the command line reach setup.sh's environment.
SHELL  := /bin/bash
PY     := .venv/bin/python
TESTS  = tests
PYTEST_ARGS =

.PHONY: setup lab test bench recordings clean kernelspec-remove labextension

setup:
	@bash scripts/setup.sh

lab:
	@bash scripts/setup.sh --lab

test:
	@bash scripts/setup.sh --test
	$(PY) -m pytest -q -ra $(PYTEST_ARGS) $(TESTS)

# Each bench/*.py prints JSON lines on stdout; set-up and progress go to stderr.
bench:
	@bash scripts/setup.sh >&2
	@shopt -s nullglob; failed=0; \
	for f in bench/*.py; do \
		echo "bench: $$f" >&2; \
		$(PY) "$$f" || { echo "bench: $$f FAILED" >&2; failed=1; }; \
	done; exit $$failed

# Rebuilds the JupyterLab extension (%%bpf cells highlighted as C) from labextension/
# into bpfnb/labextension/, the committed assets the package installs. Needs node + npm
# (only here: users install nothing of it).
LABEXT_NPM = labextension/node_modules/.package-lock.json
$(LABEXT_NPM): labextension/package.json labextension/package-lock.json
	cd labextension && npm ci --no-audit --no-fund
labextension: $(LABEXT_NPM) setup
	cd labextension && npx tsc && $(abspath $(dir $(PY)))/jupyter-builder build .
	cp labextension/install.json bpfnb/labextension/
	@# the bundle holds CodeMirror's C mode (MIT); rspack leaves third-party-licenses.json empty
	cp labextension/node_modules/@codemirror/legacy-modes/LICENSE \
		bpfnb/labextension/static/LICENSE.codemirror-legacy-modes.txt
	@du -cb bpfnb/labextension/static/*.js | tail -1 | awk '{print "labextension: bundle " $$1 " bytes"}'

# The labs' recordings (notebooks/recordings/NN): each lab run live, as root, solutions
# filled in; each lab's recordings at most 1 MB (scripts/record_labs.py; LABS="02 08": some).
LABS =
recordings:
	@bash scripts/setup.sh >&2
	$(PY) scripts/record_labs.py $(LABS)

kernelspec-remove:
	$(PY) -m bpfnb kernelspec --remove

clean:
	rm -rf .venv .pytest_cache build *.egg-info bench/out labextension/node_modules labextension/lib
