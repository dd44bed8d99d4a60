#!/bin/bash
# lonewatch first boot, second half: run by lonewatch-install.service once the network is
# up. Creates /opt/lonewatch/venv (with the system's python3-lgpio visible), installs the
# device software ONLY from the wheels `lonewatch flash` put on the card (copied to
# /var/cache/lonewatch by firstboot.sh: the lonewatch wheel flash built and the device's
# dependencies, installer/supply.py) — never a bare name from a package index — then starts
# the device service. Where PyPI has no wheel for this CPU (armv7l: dbus-fast), the card holds
# requirements-<arch>.txt pinned by SHA-256, installed with --require-hashes.
set -eu
VENV=/opt/lonewatch/venv
WHEELS="${LONEWATCH_WHEELS:-/var/cache/lonewatch}"
VERSION="@VERSION@"
if ! ls "$WHEELS"/lonewatch-*.whl >/dev/null 2>&1; then
  echo "no lonewatch wheel in $WHEELS: flash the card again with lonewatch flash" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  apt-get install -y --no-install-recommends python3-venv python3-lgpio || true
  python3 -m venv --system-site-packages "$VENV"
fi
PINNED="$WHEELS/requirements-$(uname -m).txt"
if [ -f "$PINNED" ]; then
  "$VENV/bin/pip" install --require-hashes --no-deps -r "$PINNED"
fi
# click: the `lonewatch` installer commands (doctor, test-alarm, device shift); the daemon itself runs as `python -m device`.
SPEC="lonewatch[device]"
if [ -n "$VERSION" ]; then SPEC="lonewatch[device]==$VERSION"; fi
"$VENV/bin/pip" install --no-index --find-links "$WHEELS" "$SPEC" click
systemctl daemon-reload
systemctl enable --now lonewatch-device.service
systemctl disable lonewatch-install.service
echo "lonewatch installed; the device service is running"
