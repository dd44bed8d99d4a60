"""The accelerometer edge (issue 10): trace files with file:line errors, the LIS3DH driver
against a register-level model of the chip, and the simulated accelerometer's interrupt
lines on gpiozero MockFactory pins."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from device import accel_lis3dh as L
from device.accel import AccelError, InterruptLines, WakeSettings
from device.accel_lis3dh import Lis3dh
from device.accel_sim import SimAccelerometer
from device.accel_trace import Trace, TraceError, TraceSample, load_trace, write_trace
from tests import traces

# --------------------------------------------------------------------------- trace files

GOOD = "t_s,ax_g,ay_g,az_g\n" + "".join(f"{i / 50:.2f},0.01,-0.02,1.00\n" for i in range(100))


def test_a_good_trace_loads(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text(GOOD)
    tr = load_trace(p)
    assert len(tr.samples) == 100 and tr.rate_hz == pytest.approx(50) and not tr.has_button
    assert tr.samples[1] == TraceSample(0.02, 0.01, -0.02, 1.0)


def test_write_then_load_round_trips_with_button(tmp_path: Path) -> None:
    src = traces.fall_then_cancel(1)
    n = write_trace(tmp_path / "c.csv", src.samples, button=True)
    back = load_trace(tmp_path / "c.csv")
    assert n == len(back.samples) and back.has_button
    assert sum(s.button for s in back.samples) == sum(s.button for s in src.samples) > 0


@pytest.mark.parametrize("text,line,needle", [
    ("t,ax,ay,az\n0,0,0,1\n", 1, "header must be t_s,ax_g,ay_g,az_g[,button]"),
    ("t_s,ax_g,ay_g,az_g\n0,0,0,1\n0.02,0,zero,1\n", 3, 'ay_g: not a number: \'zero\''),
    ("t_s,ax_g,ay_g,az_g\n0,0,0,1\n0.02,0,0,nan\n", 3, "az_g: must be finite"),
    ("t_s,ax_g,ay_g,az_g\n0,0,0,1\n0.02,0,0,17\n", 3, "az_g: 17 g is beyond ±16 g"),
    ("t_s,ax_g,ay_g,az_g\n0,0,0,1\n0.02,0,0\n", 3, "expected 4 values, got 3"),
    ("t_s,ax_g,ay_g,az_g,button\n0,0,0,1,0\n0.02,0,0,1,yes\n", 3, "button: must be 0 or 1, got 'yes'"),
    ("t_s,ax_g,ay_g,az_g\n0,0,0,1\n0.02,0,0,1\n0.02,0,0,1\n", 4, "t_s must increase: 0.02 after 0.02"),
    ("t_s,ax_g,ay_g,az_g\n0,0,0,1\n0.02,0,0,1\n0.01,0,0,1\n", 4, "t_s must increase: 0.01 after 0.02"),
    ("t_s,ax_g,ay_g,az_g\n0,0,0,1\n0.02,0,0,1\n1e20,0,0,1\n1e20,0,0,1\n", 4, "t_s jumps by 1e+20 s"),
    ("t_s,ax_g,ay_g,az_g\n0,0,0,1\n0.02,0,0,1\n10.03,0,0,1\n", 4, "at most 10 s between samples"),
    ("t_s,ax_g,ay_g,az_g\n-1,0,0,1\n", 2, "t_s: must be >= 0"),
    ("t_s,ax_g,ay_g,az_g\n" + "".join(f"{i / 10},0,0,1\n" for i in range(20)), None, "sample rate 10.0 Hz is outside 20–100 Hz"),
    ("t_s,ax_g,ay_g,az_g\n0,0,0,1\n", None, "a trace needs at least 2 samples"),
    ("", None, "empty file"),
])
def test_bad_traces_say_file_and_line(tmp_path: Path, text: str, line: int | None, needle: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(TraceError) as info:
        load_trace(p)
    where = f"{p}:{line}: " if line is not None else f"{p}: "
    assert str(info.value).startswith(where) and needle in str(info.value), str(info.value)
    assert info.value.line == line


def test_unreadable_and_binary_traces(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read"):
        load_trace(tmp_path / "missing.csv")
    p = tmp_path / "bin.csv"
    p.write_bytes(b"t_s,ax_g\xff\xfe\n")
    with pytest.raises(TraceError, match="not UTF-8"):
        load_trace(p)


# --------------------------------------------------------------------------- LIS3DH driver


class ChipModel:
    """The LIS3DH as its I2C registers show it (data sheet §8): WHO_AM_I, control
    registers, a FIFO drained by burst reads from OUT_X_L, latched interrupt sources."""

    def __init__(self, who: int = 0x33) -> None:
        self.regs = {L.WHO_AM_I: who}
        self.writes: list[tuple[int, int]] = []
        self.fifo: list[tuple[float, float, float]] = []
        self.src = {L.INT1_SRC: 0, L.INT2_SRC: 0}
        self.fail_reads = False
        self.closed = False

    def __call__(self, bus: int) -> "ChipModel":
        return self

    def read_byte_data(self, addr: int, reg: int) -> int:
        if self.fail_reads:
            raise OSError(121, "Remote I/O error")
        if reg == L.FIFO_SRC_REG:
            n = len(self.fifo)
            return (L.FIFO_EMPTY if n == 0 else 0) | (L.FIFO_OVRN if n >= 32 else 0) | min(n, 31)
        if reg in self.src:
            v, self.src[reg] = self.src[reg], 0
            return v
        return self.regs.get(reg, 0)

    def write_byte_data(self, addr: int, reg: int, value: int) -> None:
        self.regs[reg] = value
        self.writes.append((reg, value))

    def read_i2c_block_data(self, addr: int, reg: int, n: int) -> list[int]:
        if self.fail_reads:
            raise OSError(121, "Remote I/O error")
        assert reg == L.OUT_X_L | L.AUTO_INCREMENT and n % 6 == 0 and n <= 32
        out: list[int] = []
        for _ in range(n // 6):
            x, y, z = self.fifo.pop(0)
            for g in (x, y, z):
                raw = (int(round(g * 1000 / 4)) << 4) & 0xFFFF
                out += [raw & 0xFF, raw >> 8]
        return out

    def close(self) -> None:
        self.closed = True


def test_wrong_chip_fails_at_once() -> None:
    chip = ChipModel(who=0x44)
    with pytest.raises(AccelError, match=r"no LIS3DH at 0x18 \(WHO_AM_I 0x44, expected 0x33\)"):
        Lis3dh(bus_factory=chip)
    assert chip.closed


def test_no_bus_is_an_accel_error() -> None:
    def broken(bus: int):
        raise FileNotFoundError(2, "No such file or directory: '/dev/i2c-1'")

    with pytest.raises(AccelError, match="cannot open I2C bus 1"):
        Lis3dh(bus_factory=broken)
    with pytest.raises(ValueError):
        Lis3dh(rate_hz=60, bus_factory=ChipModel())


def test_configure_programs_the_interrupt_engine() -> None:
    chip = ChipModel()
    acc = Lis3dh(bus_factory=chip)
    acc.configure(WakeSettings(upright_axis="+z", tilt_deg=45, freefall_g=0.5, freefall_s=0.1))
    r = chip.regs
    assert r[L.CTRL_REG1] == 0x47                       # 50 Hz, x/y/z on
    assert r[L.CTRL_REG4] == 0xA8                       # BDU, ±8 g, high resolution
    assert r[L.CTRL_REG5] == 0x4A                       # FIFO on, both generators latched
    assert r[L.FIFO_CTRL_REG] == 0x80 | 25              # stream mode, watermark 25
    assert (r[L.INT1_CFG], r[L.INT1_THS], r[L.INT1_DURATION]) == (L.ZLIE, 11, 25)  # |z| < 0.68 g for 0.5 s
    assert (r[L.INT2_CFG], r[L.INT2_THS], r[L.INT2_DURATION]) == (0x95, 8, 5)    # all axes < 0.5 g, 0.1 s
    assert (r[L.CTRL_REG3], r[L.CTRL_REG6]) == (0x00, 0x60)                       # watch mode
    acc.set_mode("stream")
    assert (r[L.CTRL_REG3], r[L.CTRL_REG6]) == (L.I1_WTM, 0x00)
    acc.set_mode("off")
    assert (r[L.CTRL_REG3], r[L.CTRL_REG6]) == (0x00, 0x00)
    with pytest.raises(ValueError):
        acc.set_mode("party")
    acc.configure(WakeSettings(upright_axis="-x"))
    assert r[L.INT1_CFG] == L.XLIE


def test_fifo_burst_read_decodes_g_and_dates_the_samples() -> None:
    chip = ChipModel()
    now = [100.0]
    acc = Lis3dh(bus_factory=chip, clock=lambda: now[0])
    chip.fifo = [(0.0, 0.0, 1.0)] * 30 + [(-0.5, 2.25, -7.992)] * 2 + [(0.1, 0.1, 0.1)] * 3
    got = acc.read_fifo()
    assert len(got) == 32  # overrun: the FIFO holds 32
    assert (got[-1].ax, got[-1].ay, got[-1].az) == pytest.approx((-0.5, 2.252, -7.992), abs=0.0041)
    assert got[0].az == pytest.approx(1.0, abs=0.004)
    assert got[-1].t == 100.0 and got[0].t == pytest.approx(100.0 - 31 / 50)
    assert all(b.t > a.t for a, b in zip(got, got[1:]))
    now[0] = 100.01  # the next read never dates samples before the last one
    more = acc.read_fifo()
    assert len(more) == 3 and more[0].t > got[-1].t
    assert acc.read_fifo() == []


def test_wake_source_reads_and_clears_both_generators() -> None:
    chip = ChipModel()
    acc = Lis3dh(bus_factory=chip)
    chip.src = {L.INT1_SRC: L.SRC_IA | L.ZLIE, L.INT2_SRC: L.SRC_IA | 0x15}
    assert acc.wake_source() == {"tilt", "freefall"}
    assert acc.wake_source() == set()


def test_i2c_errors_become_accel_errors() -> None:
    chip = ChipModel()
    acc = Lis3dh(bus_factory=chip)
    chip.fail_reads = True
    with pytest.raises(AccelError, match="I2C read of LIS3DH register 0x2f failed"):
        acc.read_fifo()
    with pytest.raises(AccelError, match="burst read"):
        acc.read_now()


# --------------------------------------------------------------------------- simulated chip


def _wait(pred, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return bool(pred())


def test_sim_raises_the_wake_line_on_a_fall_and_streams_on_the_data_line() -> None:
    factory = MockFactory()
    edges = threading.Event()
    lines = InterruptLines(5, 6, edges.set, pin_factory=factory)
    sim = SimAccelerometer(traces.fall_forward(1), pin_factory=factory, data_pin=5, wake_pin=6, speed=8)
    try:
        sim.configure(WakeSettings())
        assert not lines.wake_active and not lines.data_active
        assert _wait(lambda: lines.wake_active), "no wake edge for the fall"
        assert edges.is_set()
        kinds = sim.wake_source()
        assert kinds and kinds <= {"freefall", "tilt"}
        assert not lines.wake_active  # reading the source clears the latch
        fall_at = sim.raised[0][0]
        assert 4.0 < fall_at < 8.0  # the trace walks 4-7 s before falling
        sim.set_mode("stream")
        assert _wait(lambda: lines.data_active), "no FIFO watermark edge"
        batch = sim.read_fifo()
        assert 25 <= len(batch) <= 32 and not lines.data_active
        assert all(b.t > a.t for a, b in zip(batch, batch[1:]))
        sim.set_mode("off")
        time.sleep(0.5)
        assert not lines.data_active and not lines.wake_active
        sim.fail = True
        with pytest.raises(AccelError):
            sim.read_fifo()
    finally:
        sim.close()
        lines.close()


def test_sim_keeps_the_last_reading_after_the_trace_and_can_loop() -> None:
    factory = MockFactory()
    short = Trace.of([TraceSample(i / 50, 0.0, -1.0, 0.0) for i in range(25)])
    sim = SimAccelerometer(short, pin_factory=factory, data_pin=5, wake_pin=6, speed=20).start()
    try:
        assert _wait(lambda: sim.finished)
        assert _wait(lambda: sim.clock() > 3.0)
        assert (sim.read_now().ay, sim.read_now().t > 1.0) == (-1.0, True)
    finally:
        sim.close()
    looped = SimAccelerometer(short, pin_factory=factory, data_pin=5, wake_pin=6, speed=20, loop=True).start()
    try:
        assert _wait(lambda: looped.clock() > 3.0)
        assert not looped.finished and looped.read_now().t > 0.5  # past the end of one pass
    finally:
        looped.close()
