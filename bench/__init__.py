"""lonewatch benchmarks (``make bench`` = ``python -m bench``): the SPEC §6 figures measured
on this machine over loopback with real Mosquitto, Redis, relay, device daemon and a
pysiaalarm ARC receiver.

Modules:

* :mod:`bench.stats` — summaries (median, spread, percentiles) and the result record;
* :mod:`bench.netproxy` — a TCP proxy that counts bytes (by MQTT packet type / TLS record),
  can stop forwarding (a partition without FIN) and can run a hook on every chunk;
* :mod:`bench.arcrecorder` — a pysiaalarm receiver that records every frame it accepted;
* :mod:`bench.procs` — relay and device daemons as real subprocesses, configs, registries;
* :mod:`bench.device_proc` — the device-daemon child process (MockFactory pins, optional
  modem on a pty, stdin commands, JSON-line observer output);
* ``b_*`` — one module per benchmark; :mod:`bench.__main__` runs them and prints the table.

The fault-injection tests (``tests/test_fault_*.py``) reuse the harness modules.
"""
