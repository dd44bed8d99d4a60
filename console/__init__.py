"""The console: a web application for the people who answer alarms (issue 13, SPEC §5b).

Its own process (``lonewatch console run -c relay.toml``) over the relay's Redis; any number
may run at once, all state is in Redis. Server-rendered pages (Starlette + Jinja2, served by
uvicorn), live updates by Server-Sent Events, every asset served by the console itself.

Modules: :mod:`console.config` (``[console]`` of relay.toml), :mod:`console.users` (users,
roles, argon2 hashes), :mod:`console.security` (sessions, CSRF, login rate limit),
:mod:`console.audit` (the audit trail), :mod:`console.queries` (what the pages show),
:mod:`console.actions` (take charge, resolve, note), :mod:`console.figures` (monthly
figures), :mod:`console.live` (change feed for SSE), :mod:`console.web` (routes),
:mod:`console.server` (uvicorn).
"""
