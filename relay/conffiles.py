"""The relay side's shipped configuration files, in ``relay/conf/`` (one source for each).

* ``mosquitto.conf`` — the loopback broker of the lab and the tests (password file + ACL);
* ``mosquitto-tls.conf`` — the production broker (TLS listener; password or client certificate);
* ``acl`` — the project ACL: each device only its own topics, the relay all (SPEC §2 "MQTT");
* ``redis.conf`` — AOF on, ``appendfsync always`` (SPEC §6: no alarm lost on a Redis restart);
* ``registry.example.toml`` — a registry to start from (SPEC §5 registry admin).

Used by the installer (:mod:`installer.provision` copies the ACL), the lab and demo servers
(:mod:`labstack.servers`) and the docs; the files are package data of ``relay``.
"""

from __future__ import annotations

from pathlib import Path

#: The folder holding the files above.
CONF_DIR = Path(__file__).with_name("conf")
