# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv themselves.
.PHONY: setup demo test test-fast bench clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/talkinghead demo

test: setup
	.venv/bin/python -m pytest -q

test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow"

bench: setup
	.venv/bin/python benchmarks/run_all.py

clean:
	rm -rf .venv runs demo
