# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap uv when it is
# missing, install the locked dependencies into .venv and run.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
# Every command is a fresh process: without cached bytecode each one recompiles every module
# it imports (about 2 s). Some machines set PYTHONDONTWRITEBYTECODE; here it is not wanted.
unexport PYTHONDONTWRITEBYTECODE
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN := $(UV) run --no-sync --no-progress

.PHONY: help setup demo test bench lint clean

help:
	@echo "make demo   set up and run the main job on the embedded default (SQLite, simulator)"
	@echo "make test   set up and run the whole test suite"
	@echo "make bench  set up and print the benchmark figures"
	@echo "make lint   ruff"

setup:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
		|| $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	@UV_COMPILE_BYTECODE=1 $(UV) sync --locked --no-progress --quiet

# The demo works on its own database, rejects folder and outbox, fresh each time. It sends
# through the carrier simulator (latency, a few refusals, delivery reports arriving later);
# Itel and Reddi go to the hand-off file, to show both gateways; Zalo goes to the simulator too,
# which refuses a fifth of the numbers as not on Zalo and never confirms 5 % of what it takes
# (both get an SMS instead; the demo waits 5 s for Zalo's receipts, not 10 minutes). Quiet hours
# (22:00–07:00) are off in the demo only, so that it sends at whatever hour it is run. The demo
# is read by a person even through a pipe (`make demo | less`): it logs warnings only, where a
# worker run as a service writes JSON lines at info. Viettel's messages go over SMPP 3.4 to the
# project's loopback SMSC (tests/smsc.py, on 127.0.0.1 only), started for step 9 and stopped after
# it, whose delivery receipts come back as deliver_sm: the one real protocol the demo shows end to end.
DEMO_SMSC_PORT ?= 2775
DEMO := CANHBAO_LOGGING__LEVEL=warning CANHBAO_DATABASE__URL=sqlite:///var/demo.db CANHBAO_SUBSCRIBERS__REJECTS_DIR=var/demo-rejects \
	CANHBAO_POLICY__QUIET_HOURS='{"sms": "", "zalo": ""}' \
	CANHBAO_GATEWAYS__FILE__PATH=var/demo-outbox.jsonl \
	CANHBAO_ROUTES='{"default": ["simulator"], "viettel": ["viettel"], "itel": ["file"], "reddi": ["file"], "zalo": ["simulator"]}' \
	CANHBAO_GATEWAYS__VIETTEL__KIND=smpp CANHBAO_GATEWAYS__VIETTEL__PORT=$(DEMO_SMSC_PORT) CANHBAO_GATEWAYS__VIETTEL__SYSTEM_ID=canhbao \
	CANHBAO_GATEWAYS__VIETTEL__PASSWORD=demo CANHBAO_GATEWAYS__VIETTEL__SOURCE_ADDR=CONGAN-DN \
	CANHBAO_GATEWAYS__SIMULATOR__NOT_ON_ZALO=0.2 CANHBAO_GATEWAYS__SIMULATOR__LATENCY_MS=15 CANHBAO_GATEWAYS__SIMULATOR__PERMANENT_FAILURE=0.01 \
	CANHBAO_GATEWAYS__SIMULATOR__UNDELIVERABLE=0.03 CANHBAO_GATEWAYS__SIMULATOR__REPORT_DELAY_MS='[100, 1500]' \
	CANHBAO_GATEWAYS__SIMULATOR__ZALO_UNCONFIRMED=0.05 CANHBAO_DISPATCH__RECEIPT_TIMEOUT_SECONDS=5 \
	$(RUN) canhbao
# `subscribers import` exits 1 when it rejected rows, which the sample files are made to show.
ACCEPT_REJECTS := || [ $$? -eq 1 ]

demo: setup
	@rm -rf var/demo.db var/demo.db-wal var/demo.db-shm var/demo-rejects var/demo-outbox.jsonl var/demo-smsc.log
	@echo "== 1. Cơ sở dữ liệu (SQLite, var/demo.db)"
	@$(DEMO) db upgrade
	@echo "== 2. Nạp mẫu cảnh báo từ messages/"
	@$(DEMO) alerts sync
	@$(DEMO) --as cong-an-pa05 alerts submit gia-danh-cong-an-goi-video viec-nhe-luong-cao
	@$(DEMO) --as lanh-dao-so alerts approve gia-danh-cong-an-goi-video viec-nhe-luong-cao
	@echo "== 3. 50.000 thuê bao giả lập ở Đà Nẵng"
	@$(DEMO) subscribers generate --province "Đà Nẵng" --count 50000 --seed 1
	@echo "== 4. Nhập tệp mẫu (tests/data) và báo cáo dòng bị từ chối"
	@$(DEMO) subscribers import tests/data/thue-bao-da-nang.csv $(ACCEPT_REJECTS)
	@$(DEMO) subscribers import tests/data/subscribers-cao-bang-da-nang.xlsx $(ACCEPT_REJECTS)
	@cat var/demo-rejects/thue-bao-da-nang-*.rejects.csv
	@echo "== 5. Phân đoạn \"Quảng Nam (cũ), huyện Duy Xuyên\" nay là những xã nào"
	@$(DEMO) regions show "Quảng Nam (cũ), huyện Duy Xuyên"
	@echo "== 6. Đợt gửi 1: cảnh báo giả danh công an tới các xã của huyện Duy Xuyên cũ"
	@$(DEMO) --as lien-lac-vien blast create --alert gia-danh-cong-an-goi-video --legacy-district "Quảng Nam (cũ), huyện Duy Xuyên"
	@echo "== 7. Đợt gửi 2: \"việc nhẹ lương cao\" tới học sinh, sinh viên toàn Đà Nẵng, qua Zalo; ai không nhận được Zalo thì SMS không dấu"
	@$(DEMO) --as lien-lac-vien blast create --alert viec-nhe-luong-cao --province "Đà Nẵng" --audience student --channel zalo_then_sms --encoding ascii
	@echo "== 8. Người thứ hai duyệt (người tạo không tự duyệt được)"
	@$(DEMO) --as lien-lac-vien blast approve 1 || echo "   (đúng: bị từ chối)"
	@$(DEMO) --as lanh-dao-so blast approve 1 2
	@echo "== 9. Gửi: Viettel qua SMPP tới SMSC giả lập (127.0.0.1:$(DEMO_SMSC_PORT)), nhà mạng khác qua trình mô phỏng"
	@$(RUN) python -m tests.smsc --port $(DEMO_SMSC_PORT) > var/demo-smsc.log 2>&1 & smsc=$$!; trap "kill $$smsc" EXIT; \
		for _ in $$(seq 100); do grep -q "SMSC on" var/demo-smsc.log && break; sleep 0.1; done; \
		$(DEMO) worker --until-idle
	@$(DEMO) blast status 1
	@$(DEMO) blast status 2
	@$(DEMO) log --blast 1 --limit 5
	@$(DEMO) log --blast 2 --limit 5
	@echo "== 10. Chiến dịch định kỳ (schedules/): nạp, người thứ hai duyệt, 5 lượt chạy tới"
	@$(DEMO) --as lien-lac-vien schedules sync
	@$(DEMO) --as lanh-dao-so schedules approve cao-bang-hang-tuan an-giang-sinh-vien-hang-thang
	@$(DEMO) schedules list
	@echo "Chạy lâu dài: canhbao serve (bộ lập lịch + tiến trình gửi); giờ yên lặng 22:00–07:00 áp dụng ngoài bản demo."
	@echo "Nhật ký đầy đủ: canhbao log --blast 2 --export csv  ·  tệp chuyển giao (Itel, Reddi): var/demo-outbox.jsonl"
	@echo "Cơ sở dữ liệu: var/demo.db  ·  báo cáo dòng bị từ chối: var/demo-rejects/"

# The suite runs on every core (pytest-xdist): each test process has its own PostgreSQL cluster
# and migrated template databases; `TEST_WORKERS=0 make test` runs it in one process.
TEST_WORKERS ?= auto
test: setup
	@$(RUN) pytest -n $(TEST_WORKERS)

bench: setup
	@$(RUN) python -m tests.bench

lint: setup
	@$(RUN) ruff check dispatcher tests
	@$(RUN) ruff format --check dispatcher tests

clean:
	rm -rf .venv var .pytest_cache .hypothesis
