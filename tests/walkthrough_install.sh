#!/usr/bin/env bash
# The README's "Installing a device" walkthrough, exactly as an installer types it (comments
# aside), run by tests/test_walkthrough.py in a fresh directory with lonewatch on PATH.
set -euo pipefail

# 1. A relay side on this machine: TLS broker, Redis, relay and a pysiaalarm ARC.
lonewatch lab --dir lab &
until [ -f lab/lab.json ]; do sleep 0.2; done

# 2. Provision the device: broker password (stored hashed), device.toml (0600), registry entry.
lonewatch provision lw-0042 --worker "Anna Hansen" --site "Vestergade 12" \
    --account 1234AB --zone 42 \
    --broker-dir lab/broker --relay-config lab/relay.toml --out lab/lw-0042 \
    --device-dir "$PWD/lab/lw-0042" --state-dir "$PWD/lab/lw-0042/state"

# 3. Flash: write the image, read it back, put the device into the boot partition.
lonewatch flash lab/raspios-lite-test.img.xz lab/sd-card.img --config lab/lw-0042/device.toml

# 4. Doctor: every check, with the modem simulator and a simulated finger on the button.
lonewatch doctor -c lab/lw-0042/device.toml --simulate

# 5. Test alarm: Contact ID 601 to the ARC and back.
lonewatch test-alarm -c lab/lw-0042/device.toml

# 6. The relay's view of the device.
lonewatch status --relay-config lab/relay.toml

# Stop the lab.
kill %1
wait
