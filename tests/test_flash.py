"""``lonewatch flash``: images the tests build themselves (an MBR + a FAT boot partition made
by mtools, like Raspberry Pi OS's), written to image files and — where the kernel lets us —
to real loop block devices; target safety checks on real and on hand-made sysfs trees."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from installer.bootpart import (
    FIRSTRUN_ARGS,
    BootPartitionError,
    FatImage,
    boot_partition,
    install_lonewatch,
    make_test_image,
    read_partitions,
)
from cli.main import main
from installer.flash import FlashError, TargetRefused, open_image, probe_target, read_back, write_image

pytestmark = [pytest.mark.skipif(shutil.which("mformat") is None, reason="GNU mtools not installed (apt-get install mtools)"),
              pytest.mark.timeout(900)]  # the first flash of a run fetches the device's wheels (installer/supply.py)


@pytest.fixture(autouse=True)
def _device_wheels(supply_env):
    """flash always builds the lonewatch wheel and fetches its dependencies: one cache per run."""

DEVICE_TOML = """[device]
id = "lw-0042"

[mqtt]
host = "mqtt.example.com"
password = "s3cret-s3cret-s3cret"
ca_file = "/etc/lonewatch/ca.crt"

[worker]
name = "Anna Hansen"
site = "Vestergade 12"
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("images")
    img = make_test_image(d / "raspios.img")
    xz = d / "raspios.img.xz"
    with open(img, "rb") as src, lzma.open(xz, "wb", preset=0) as out:
        shutil.copyfileobj(src, out)
    cloud = make_test_image(d / "raspios-cloud.img", cloud_init=True)
    small = make_test_image(d / "fat16.img", size_mb=12, boot_mb=6, fat32=False)
    return {"img": img, "xz": xz, "cloud": cloud, "fat16": small}


@pytest.fixture
def provisioned(tmp_path) -> Path:
    """What ``lonewatch provision`` leaves in --out: device.toml (0600) and ca.crt."""
    out = tmp_path / "lw-0042"
    out.mkdir()
    fd = os.open(out / "device.toml", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(DEVICE_TOML)
    (out / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nstand-in\n-----END CERTIFICATE-----\n")
    return out / "device.toml"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fat(target: Path) -> FatImage:
    return FatImage(target, boot_partition(target).start)


# --------------------------------------------------------------------------- CLI, image files


def test_flash_xz_image_to_a_file_writes_verifies_and_adds_the_device(images, provisioned, tmp_path):
    target = tmp_path / "card.img"
    r = CliRunner().invoke(main, ["flash", str(images["xz"]), str(target), "--config", str(provisioned), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output[r.output.index("{"):])
    assert doc["verified"] and doc["sha256"] == _sha(images["img"]) and doc["bytes"] == images["img"].stat().st_size
    assert doc["image_file_sha256"] == _sha(images["xz"])
    # The partition table and everything outside the boot partition are the image's.
    raw, written = images["img"].read_bytes(), target.read_bytes()
    part = boot_partition(target)
    assert written[:512] == raw[:512] and written[part.start + part.size:] == raw[part.start + part.size:]
    fat = _fat(target)
    assert fat.read("lonewatch/device.toml") == provisioned.read_bytes()
    assert fat.read("lonewatch/ca.crt") == provisioned.with_name("ca.crt").read_bytes()
    names = set(fat.listdir("lonewatch"))
    assert {"firstboot.sh", "install.sh", "lonewatch-device.service", "lonewatch-install.service",
            "99-lonewatch-modem.rules"} <= names
    assert fat.read("lonewatch/lonewatch-device.service") == Path("systemd/lonewatch-device.service").read_bytes()
    cmdline = fat.read("cmdline.txt").decode()
    assert cmdline.count("\n") == 1 and cmdline.rstrip().endswith(FIRSTRUN_ARGS.format(boot="/boot/firmware"))
    assert "console=serial0,115200" in cmdline  # only --uart-modem takes the serial console away
    assert fat.read("firstrun.sh").startswith(b"#!/bin/bash")


def test_flash_plain_img_with_the_published_checksum(images, provisioned, tmp_path):
    target = tmp_path / "card.img"
    r = CliRunner().invoke(main, ["flash", str(images["img"]), str(target), "--config", str(provisioned),
                                  "--sha256", _sha(images["img"]).upper()])
    assert r.exit_code == 0, r.output
    assert "read back and verified" in r.output


def test_flash_refuses_a_damaged_download(images, provisioned, tmp_path):
    r = CliRunner().invoke(main, ["flash", str(images["img"]), str(tmp_path / "card.img"), "--config", str(provisioned),
                                  "--sha256", "0" * 64])
    assert r.exit_code == 1 and "do not use the card" in r.output
    broken = tmp_path / "broken.img.xz"
    data = bytearray(images["xz"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken.write_bytes(bytes(data))
    r = CliRunner().invoke(main, ["flash", str(broken), str(tmp_path / "card2.img"), "--config", str(provisioned)])
    assert r.exit_code == 1 and "download it again" in r.output


def test_flash_checks_the_config_before_touching_the_target(images, tmp_path):
    bad = tmp_path / "device.toml"
    bad.write_text("[device]\nid = \"NOT VALID\"\n")
    target = tmp_path / "card.img"
    r = CliRunner().invoke(main, ["flash", str(images["img"]), str(target), "--config", str(bad)])
    assert r.exit_code == 2 and "device.toml:2" in r.output
    assert not target.exists()


def test_flash_refuses_an_image_that_is_not_raspberry_pi_os(provisioned, tmp_path):
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\0" * 1024 * 1024)
    r = CliRunner().invoke(main, ["flash", str(blank), str(tmp_path / "card.img"), "--config", str(provisioned)])
    assert r.exit_code == 1 and "no MBR partition table" in r.output
    zipped = tmp_path / "raspios.zip"
    zipped.write_bytes(b"PK")
    r = CliRunner().invoke(main, ["flash", str(zipped), str(tmp_path / "card.img"), "--config", str(provisioned)])
    assert r.exit_code == 2 and ".img or .img.xz" in r.output


def test_flash_with_uart_modem_wheels_and_boot_files(images, provisioned, tmp_path):
    wheel = tmp_path / "lonewatch-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x03\x04 stand-in wheel")
    userconf = tmp_path / "userconf"
    userconf.write_text("installer:$6$hash\n")
    target = tmp_path / "card.img"
    r = CliRunner().invoke(main, ["flash", str(images["img"]), str(target), "--config", str(provisioned), "--uart-modem",
                                  "--wheel", str(wheel), "--boot-file", f"{userconf}:userconf.txt"])
    assert r.exit_code == 0, r.output
    fat = _fat(target)
    assert fat.read(f"lonewatch/wheels/{wheel.name}") == wheel.read_bytes()
    assert fat.read("userconf.txt") == userconf.read_bytes()
    config = fat.read("config.txt").decode().splitlines()
    assert "enable_uart=1" in config and "dtoverlay=disable-bt" in config
    assert "console=serial0" not in fat.read("cmdline.txt").decode()
    assert "console=tty1" in fat.read("cmdline.txt").decode()


def test_cloud_init_images_get_a_runcmd_instead_of_systemd_run(images, provisioned, tmp_path):
    target = tmp_path / "card.img"
    shutil.copyfile(images["cloud"], target)
    install_lonewatch(target, provisioned)
    fat = _fat(target)
    user_data = fat.read("user-data").decode()
    assert user_data.startswith("#cloud-config") and "  - [bash, /boot/firmware/lonewatch/firstboot.sh]" in user_data
    assert "systemd.run" not in fat.read("cmdline.txt").decode()
    assert not fat.exists("firstrun.sh")
    install_lonewatch(target, provisioned)  # again: the same, not twice
    assert fat.read("user-data").decode() == user_data


def test_install_is_idempotent_and_refuses_a_foreign_first_boot_hook(images, provisioned, tmp_path):
    target = tmp_path / "card.img"
    shutil.copyfile(images["fat16"], target)
    install_lonewatch(target, provisioned)
    install_lonewatch(target, provisioned)
    cmdline = _fat(target).read("cmdline.txt").decode()
    assert cmdline.count("systemd.run=") == 1
    other = tmp_path / "other.img"
    shutil.copyfile(images["fat16"], other)
    _fat(other).write("cmdline.txt", b"console=tty1 root=/dev/mmcblk0p2 systemd.run=/boot/imager.sh\n")
    with pytest.raises(BootPartitionError, match="another first-boot script"):
        install_lonewatch(other, provisioned)


def test_partition_table_reading(images, tmp_path):
    parts = read_partitions(images["img"])
    assert [(p.number, p.type_id, p.start) for p in parts] == [(1, 0x0C, 4 * 1024 * 1024), (2, 0x83, 40 * 1024 * 1024)]
    assert read_partitions(images["fat16"])[0].type_id == 0x0E
    gpt = bytearray(images["img"].read_bytes()[:512])
    gpt[446 + 4] = 0xEE
    (tmp_path / "gpt.img").write_bytes(bytes(gpt))
    with pytest.raises(BootPartitionError, match="GPT"):
        read_partitions(tmp_path / "gpt.img")
    nofat = bytearray(images["img"].read_bytes()[:512])
    nofat[446 + 4] = 0x83
    (tmp_path / "nofat.img").write_bytes(bytes(nofat) + b"\0" * 512)
    with pytest.raises(BootPartitionError, match="no FAT boot partition"):
        boot_partition(tmp_path / "nofat.img")


def test_missing_mtools_is_reported_with_the_install_line(images, provisioned, tmp_path, monkeypatch):
    target = tmp_path / "card.img"
    shutil.copyfile(images["fat16"], target)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    with pytest.raises(BootPartitionError, match="apt-get install -y mtools"):
        install_lonewatch(target, provisioned)


def test_write_image_reports_progress_in_file_bytes(images, tmp_path):
    from installer.flash import Target

    seen: list[int] = []
    result = write_image(images["xz"], Target(tmp_path / "t.img", "file", None, ""), progress=seen.append)
    assert sum(seen) == images["xz"].stat().st_size
    assert read_back(tmp_path / "t.img", result.length) == result.sha256
    with pytest.raises(FlashError, match="only"):
        read_back(tmp_path / "t.img", result.length + 1)
    with open_image(images["xz"]) as reader:
        assert reader.file_size == images["xz"].stat().st_size


# --------------------------------------------------------------------------- target checks


def test_regular_file_targets(images, tmp_path):
    assert probe_target(tmp_path / "new.img").kind == "file"
    with pytest.raises(TargetRefused, match="is the image itself"):
        probe_target(images["img"], image=images["img"])
    with pytest.raises(TargetRefused, match="does not exist"):
        probe_target(tmp_path / "no" / "dir" / "card.img")
    with pytest.raises(TargetRefused, match="neither a block device"):
        probe_target(Path("/dev/null"))


def _root_disk() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        f = line.split()
        if f[4] == "/":
            node = Path(f"/sys/dev/block/{f[2]}")
            if not node.exists():
                return None
            real = node.resolve()
            disk = real.parent if (real / "partition").exists() else real
            dev = Path("/dev") / disk.name
            return dev if dev.exists() else None
    return None


def test_the_system_disk_is_refused():
    disk = _root_disk()
    if disk is None:
        pytest.skip("/ is not on a block device this container can see (overlay root)")
    with pytest.raises(TargetRefused, match="system disk"):
        probe_target(disk)


class FakeSys:
    """A hand-made /sys and /proc for block devices made with mknod (major 240, reserved
    for local use): a disk 240:0 with partitions 240:1 and 240:2."""

    def __init__(self, root: Path) -> None:
        self.sys, self.proc, self.dev = root / "sys", root / "proc", root / "dev"
        disk = self.sys / "devices" / "virtual" / "block" / "sdz"
        for name, minor in (("sdz", 0), ("sdz1", 1), ("sdz2", 2)):
            d = disk if name == "sdz" else disk / name
            (d / "holders").mkdir(parents=True)
            (d / "dev").write_text(f"240:{minor}\n")
            if name != "sdz":
                (d / "partition").write_text(f"{minor}\n")
            (self.sys / "dev" / "block").mkdir(parents=True, exist_ok=True)
            (self.sys / "dev" / "block" / f"240:{minor}").symlink_to(d)
        (disk / "size").write_text(str(2 * 1024 * 1024) + "\n")  # 1 GiB in sectors
        (disk / "removable").write_text("1\n")
        (disk / "device").mkdir()
        (disk / "device" / "model").write_text("SD Card Reader\n")
        (self.proc / "self").mkdir(parents=True)
        self.mounts("")
        (self.proc / "swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n")
        self.dev.mkdir()
        try:
            for minor, name in ((0, "sdz"), (1, "sdz1")):
                os.mknod(self.dev / name, 0o600 | 0o060000, os.makedev(240, minor))
        except PermissionError:
            pytest.skip("cannot create block device nodes here (needs root / CAP_MKNOD)")
        self.disk = disk

    def mounts(self, mountinfo: str) -> None:
        (self.proc / "self" / "mountinfo").write_text(mountinfo)
        (self.proc / "mounts").write_text("")

    def probe(self, name: str = "sdz", **kw):
        return probe_target(self.dev / name, sys_root=self.sys, proc_root=self.proc, **kw)


@pytest.fixture
def fake(tmp_path) -> FakeSys:
    return FakeSys(tmp_path)


def test_an_unused_card_is_accepted_and_described(fake):
    t = fake.probe(image_size=500 * 1024 * 1024)
    assert t.kind == "block" and t.size == 1024 ** 3
    assert "SD Card Reader" in t.description and "removable" in t.description


@pytest.mark.parametrize("setup,message", [
    ("partition", "is a partition of /dev/sdz"),
    ("mounted", "is mounted (/dev/sdz1)"),
    ("swap", "in use as swap"),
    ("holder", "in use by LVM, RAID or dm-crypt (sdz2)"),
    ("small", "the image needs"),
])  # fmt: skip
def test_unsafe_cards_are_refused(fake, setup, message):
    kw = {}
    name = "sdz"
    if setup == "partition":
        name = "sdz1"
    elif setup == "mounted":
        fake.mounts("36 25 240:1 / /media/pi/bootfs rw,relatime - vfat /dev/sdz1 rw\n")
    elif setup == "swap":
        (fake.proc / "swaps").write_text(f"Filename\tType\tSize\tUsed\tPriority\n{fake.dev / 'sdz1'}\tpartition\t1\t0\t-2\n")
    elif setup == "holder":
        (fake.disk / "sdz2" / "holders" / "dm-0").touch()
    elif setup == "small":
        kw["image_size"] = 2 * 1024 ** 3
    with pytest.raises(TargetRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        fake.probe(name, **kw)


# --------------------------------------------------------------------------- real loop devices


@pytest.fixture
def loop(images, tmp_path):
    """A real block device: a loop device over a file, with partition scanning."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup for a loop block device")
    backing = tmp_path / "card.bin"
    with open(backing, "wb") as fh:
        fh.truncate(64 * 1024 * 1024)
    done = subprocess.run(["losetup", "-f", "--show", "-P", str(backing)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"no loop device available: {done.stderr.strip()}")
    dev = Path(done.stdout.strip())
    yield dev
    subprocess.run(["losetup", "-d", str(dev)], capture_output=True)


def test_flash_to_a_real_block_device(images, provisioned, loop):
    r = CliRunner().invoke(main, ["flash", str(images["xz"]), str(loop), "--config", str(provisioned), "--yes"])
    assert r.exit_code == 0, r.output
    assert read_back(loop, images["img"].stat().st_size) != ""  # readable
    fat = FatImage(loop, boot_partition(loop).start)
    assert tomllib.loads(fat.read("lonewatch/device.toml").decode())["device"]["id"] == "lw-0042"


def test_a_claimed_card_cannot_be_mounted_or_claimed_meanwhile(loop):
    """While flash holds its O_EXCL claim, the kernel refuses other exclusive users (mount
    is one): an automounter cannot grab the fresh boot partition half-written."""
    from installer.flash import Target, claim

    target = probe_target(loop)
    with claim(target) as claimed:
        assert claimed
        with pytest.raises(TargetRefused, match="busy"):
            with claim(target):
                pass
    with claim(target):  # released again
        pass
    with claim(Target(Path("/nonexistent/x.img"), "file", None, "")) as claimed:
        assert claimed is False  # image files need no claim


def test_flash_asks_before_erasing_a_card(images, provisioned, loop):
    r = CliRunner().invoke(main, ["flash", str(images["img"]), str(loop), "--config", str(provisioned)], input="n\n")
    assert r.exit_code == 1 and "Erase everything on /dev/" in r.output
    with open(loop, "rb") as fh:
        assert fh.read(512) == b"\0" * 512  # untouched


def test_a_mounted_loop_device_is_refused(images, provisioned, loop, tmp_path):
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 not installed")
    subprocess.run(["mkfs.ext4", "-q", "-F", str(loop)], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", str(loop), str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount here")
    try:
        with pytest.raises(TargetRefused, match="is mounted"):
            probe_target(loop)
        r = CliRunner().invoke(main, ["flash", str(images["img"]), str(loop), "--config", str(provisioned), "--yes"])
        assert r.exit_code == 1 and "is mounted" in r.output
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_partition_of_a_real_disk_is_refused(images, loop):
    with open(loop, "r+b") as fh:
        fh.write(images["img"].read_bytes())
    subprocess.run(["blockdev", "--rereadpt", str(loop)], capture_output=True)
    part = Path(f"{loop}p1")
    if not part.exists():
        pytest.skip("the kernel did not scan the loop device's partitions")
    with pytest.raises(TargetRefused, match="is a partition"):
        probe_target(part)
