#!/bin/bash
# lonewatch first boot, second half: run by lonewatch-install.service once the network is
# up. Creates /opt/lonewatch/venv (with the system's python3-lgpio visible), installs the
# device software — offline from /var/cache/lonewatch/*.whl if `lonewatch flash --wheel`
# put wheels on the card, else from the package index — then starts the device service.
set -eu
VENV=/opt/lonewatch/venv
VERSION="@VERSION@"
if [ ! -x "$VENV/bin/python" ]; then
  apt-get install -y --no-install-recommends python3-venv python3-lgpio || true
  python3 -m venv --system-site-packages "$VENV"
fi
# click: the `lonewatch` installer commands (doctor, test-alarm, device shift); the daemon itself runs as `python -m device`.
if ls /var/cache/lonewatch/*.whl >/dev/null 2>&1; then
  "$VENV/bin/pip" install --no-index --find-links /var/cache/lonewatch "lonewatch[device]" click
elif [ -n "$VERSION" ]; then
  "$VENV/bin/pip" install "lonewatch[device]==$VERSION" click
else
  "$VENV/bin/pip" install "lonewatch[device]" click
fi
systemctl daemon-reload
systemctl enable --now lonewatch-device.service
systemctl disable lonewatch-install.service
echo "lonewatch installed; the device service is running"
