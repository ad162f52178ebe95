# One-stop set-up for the pip route. `make demo` and `make test` build .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# Every process that may start rclpy stays on this machine, on a domain of its own.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
BAG ?=
CHECKPOINT ?=
DEMO_ARGS := $(if $(BAG),--bag $(BAG)) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

.PHONY: setup test demo lint bench clean

setup: $(STAMP)

$(STAMP): setup.py setup.cfg constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[ros,train,dev,colcon,backends]"
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/pytest -n 2 --dist loadgroup test

demo: setup
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-42} $(PY) -m depth_ros.tools.demo $(DEMO_ARGS)

bench: setup
	for b in bench/bench_*.py; do ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-43} $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info demo_output
