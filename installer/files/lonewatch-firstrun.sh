#!/bin/bash
# Started once by the kernel command line (systemd.run=…), put there by `lonewatch flash`:
# runs lonewatch/firstboot.sh, then removes itself and its kernel arguments, then the Pi
# reboots (systemd.run_success_action=reboot) into the normal system.
BOOT=/boot/firmware
[ -f "$BOOT/cmdline.txt" ] || BOOT=/boot
bash "$BOOT/lonewatch/firstboot.sh" || echo "lonewatch firstboot.sh failed: see /var/log/lonewatch-firstboot.log" >&2
sed -i 's| systemd.run=[^ ]*firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target||' "$BOOT/cmdline.txt"
rm -f "$BOOT/firstrun.sh"
exit 0
