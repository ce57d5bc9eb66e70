# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap uv when it is
# missing, install the locked dependencies into .venv and run.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN := $(UV) run --locked --no-progress

.PHONY: help setup demo test bench lint clean

help:
	@echo "make demo   set up and run the main job on the embedded default (SQLite, simulator)"
	@echo "make test   set up and run the whole test suite"
	@echo "make bench  set up and print the benchmark figures"
	@echo "make lint   ruff"

setup:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
		|| $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	@$(UV) sync --locked --no-progress --quiet

# The demo works on its own database and rejects folder, fresh each time.
DEMO := CANHBAO_DATABASE__URL=sqlite:///var/demo.db CANHBAO_SUBSCRIBERS__REJECTS_DIR=var/demo-rejects $(RUN) canhbao
# `subscribers import` exits 1 when it rejected rows, which the sample files are made to show.
ACCEPT_REJECTS := || [ $$? -eq 1 ]

demo: setup
	@rm -rf var/demo.db var/demo.db-wal var/demo.db-shm var/demo-rejects
	@echo "== 1. Cơ sở dữ liệu (SQLite, var/demo.db)"
	@$(DEMO) db upgrade
	@echo "== 2. Nạp mẫu cảnh báo từ messages/"
	@$(DEMO) alerts sync
	@$(DEMO) --as cong-an-pa05 alerts submit gia-danh-cong-an-goi-video
	@$(DEMO) --as lanh-dao-so alerts approve gia-danh-cong-an-goi-video
	@$(DEMO) alerts show gia-danh-cong-an-goi-video
	@echo "== 3. 50.000 thuê bao giả lập ở Đà Nẵng"
	@$(DEMO) subscribers generate --province "Đà Nẵng" --count 50000 --seed 1
	@echo "== 4. Nhập tệp mẫu (tests/data) và báo cáo dòng bị từ chối"
	@$(DEMO) subscribers import tests/data/thue-bao-da-nang.csv $(ACCEPT_REJECTS)
	@$(DEMO) subscribers import tests/data/subscribers-cao-bang-da-nang.xlsx $(ACCEPT_REJECTS)
	@cat var/demo-rejects/thue-bao-da-nang-*.rejects.csv
	@$(DEMO) subscribers stats
	@echo "== 5. Phân đoạn \"Quảng Nam (cũ), huyện Duy Xuyên\" nay là những xã nào"
	@$(DEMO) regions show "Quảng Nam (cũ), huyện Duy Xuyên"

test: setup
	@$(RUN) pytest

bench: setup
	@$(RUN) python -m tests.bench

lint: setup
	@$(RUN) ruff check dispatcher tests
	@$(RUN) ruff format --check dispatcher tests

clean:
	rm -rf .venv var .pytest_cache .hypothesis
