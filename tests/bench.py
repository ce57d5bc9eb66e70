"""`make bench`: speed figures on this machine, printed, never asserted.

Import: a synthetic 1,000,000-row CSV (mixed written forms, Đà Nẵng) through the real
`canhbao subscribers import`, in a child process on a fresh SQLite file; peak memory of a
100,000-row and a 1,000,000-row import shows whether memory stays flat. Target: ≥ 40,000 rows/s.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dispatcher import population, smstext
from dispatcher.phones import PhoneBook
from dispatcher.regions import RegionIndex

IMPORT_TARGET = 40_000


def _write_population(regions: RegionIndex, path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(population.HEADER)
        writer.writerows(population.generate(regions, 48, count, seed=11))


def _import(path: Path, workdir: Path) -> tuple[dict, float, int]:
    """(summary, seconds, peak RSS in MiB) of `canhbao subscribers import` in a child process."""
    database = workdir / f"{path.stem}.db"
    env = {**os.environ, "CANHBAO_DATABASE__URL": f"sqlite:///{database}",
           "CANHBAO_SUBSCRIBERS__REJECTS_DIR": str(workdir / "rejects")}  # fmt: skip
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "subscribers", "import", str(path), "--json"],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    out = child.stdout.read()
    _, _, usage = os.wait4(child.pid, 0)  # this child's own peak memory
    child.returncode = 0
    return json.loads(out), time.perf_counter() - started, usage.ru_maxrss // 1024


def bench_import(regions: RegionIndex) -> None:
    """Rows per second and peak memory of a 100k and a 1M-row import."""
    with tempfile.TemporaryDirectory(prefix="canhbao-bench-") as tmp:
        workdir = Path(tmp)
        small, large = workdir / "pop-100k.csv", workdir / "pop-1m.csv"
        _write_population(regions, small, 100_000)
        _write_population(regions, large, 1_000_000)
        summary_s, seconds_s, peak_s = _import(small, workdir)
        summary_l, seconds_l, peak_l = _import(large, workdir)
    rate = summary_l["rows"] / seconds_l
    print("subscriber import (CSV → SQLite, whole command incl. start-up, one process)")
    print(f"  100,000 rows   {seconds_s:6.1f} s  {summary_s['rows'] / seconds_s:8,.0f} rows/s  peak RSS {peak_s} MiB")
    print(f"  1,000,000 rows {seconds_l:6.1f} s  {rate:8,.0f} rows/s  peak RSS {peak_l} MiB")
    verdict = "OK" if rate >= IMPORT_TARGET else "BELOW TARGET"
    print(f"  target ≥ {IMPORT_TARGET:,} rows/s: {verdict}; added {summary_l['added']:,}")


def bench_phones() -> None:
    """Numbers normalised per second with the per-prefix cache."""
    rng = random.Random(5)
    prefixes = ["32", "86", "96", "98", "91", "94", "88", "90", "93", "70", "56", "87"]
    numbers = [f"0{rng.choice(prefixes)}{rng.randrange(10**7):07d}" for _ in range(300_000)]
    book = PhoneBook()
    started = time.perf_counter()
    for number in numbers:
        book.normalize(number)
    print(f"phone normalisation: {len(numbers) / (time.perf_counter() - started):,.0f} numbers/s (one core)")


def bench_text() -> None:
    """SMS measurements per second on a catalogue-sized Vietnamese text."""
    text = "Công an TP Đà Nẵng cảnh báo: không cung cấp mã OTP, không chuyển tiền theo yêu cầu qua điện thoại."
    started = time.perf_counter()
    for _ in range(50_000):
        smstext.measure(text)
    print(f"SMS part counting: {50_000 / (time.perf_counter() - started):,.0f} texts/s (one core)")


def main() -> None:
    """Print every figure."""
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    bench_phones()
    bench_text()
    bench_import(RegionIndex.load())


if __name__ == "__main__":
    main()
