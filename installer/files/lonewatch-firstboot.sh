#!/bin/bash
# lonewatch first boot, first half (put on the SD card's boot partition by `lonewatch flash`).
# Runs once as root before the network is up: creates the service user, installs the device's
# configuration, credentials, udev rule and systemd units, removes the secrets from the FAT
# partition, and enables lonewatch-install.service, which installs the software once the
# network is up. Safe to run twice. Log: /var/log/lonewatch-firstboot.log
set -eu
BOOT=/boot/firmware
[ -d "$BOOT/lonewatch" ] || BOOT=/boot
SRC="$BOOT/lonewatch"
exec >>/var/log/lonewatch-firstboot.log 2>&1
echo "lonewatch first boot $(date -u +%Y-%m-%dT%H:%M:%SZ) from $SRC"

if ! id lonewatch >/dev/null 2>&1; then
  useradd --system --user-group --home-dir /var/lib/lonewatch --no-create-home \
          --shell /usr/sbin/nologin lonewatch
fi
for group in gpio dialout i2c; do
  if getent group "$group" >/dev/null; then usermod -aG "$group" lonewatch; fi
done
install -d -m 0755 /etc/lonewatch /usr/local/lib/lonewatch /var/cache/lonewatch
install -d -m 0700 -o lonewatch -g lonewatch /var/lib/lonewatch

if [ -f "$SRC/device.toml" ]; then
  install -m 0600 -o lonewatch -g lonewatch "$SRC/device.toml" /etc/lonewatch/device.toml
fi
for f in ca.crt client.crt; do
  if [ -f "$SRC/$f" ]; then install -m 0644 "$SRC/$f" "/etc/lonewatch/$f"; fi
done
if [ -f "$SRC/client.key" ]; then
  install -m 0600 -o lonewatch -g lonewatch "$SRC/client.key" /etc/lonewatch/client.key
fi
install -m 0644 "$SRC/99-lonewatch-modem.rules" /etc/udev/rules.d/99-lonewatch-modem.rules
install -m 0644 "$SRC/lonewatch-device.service" "$SRC/lonewatch-install.service" /etc/systemd/system/
install -m 0755 "$SRC/install.sh" /usr/local/lib/lonewatch/install.sh
if [ -d "$SRC/wheels" ]; then
  cp "$SRC"/wheels/*.whl "$SRC"/wheels/requirements-*.txt /var/cache/lonewatch/ 2>/dev/null || true
fi
# What `systemctl enable` does, without needing a running manager.
install -d -m 0755 /etc/systemd/system/multi-user.target.wants
ln -sf /etc/systemd/system/lonewatch-install.service \
       /etc/systemd/system/multi-user.target.wants/lonewatch-install.service

# FAT has no permissions: anyone holding the card could read the secrets. They leave now.
for f in device.toml client.key; do
  if [ -f "$SRC/$f" ]; then shred -u "$SRC/$f" 2>/dev/null || rm -f "$SRC/$f"; fi
done
echo "lonewatch first boot done"
