# The two commands of the README's Quickstart. Both install what they need first.
.PHONY: demo test test-slow setup

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/datadiet demo

test: setup
	.venv/bin/python -m pytest

test-slow: setup
	.venv/bin/python -m pytest -m slow
