"""``lonewatch survey report RUN.jsonl -o report.html``: a coverage report a site manager
understands (issue 12), from a walk recorded by ``lonewatch survey run`` (:mod:`device.survey`).

The report (one self-contained HTML file, the plot embedded as PNG; the PNG is also written
beside it) has:

1. a verdict line and the list of **places where an alarm would depend on the SMS fallback**
   (no MQTT round trip there, but the modem was registered) **or fail** (neither);
2. a plot of signal (dBm) and MQTT round-trip time (ms) along the walk, the places shaded
   and named, samples without MQTT marked (matplotlib, Agg backend: no display needed);
3. a table per place: samples, worst and median signal, worst round trip, share of samples
   with MQTT / SMS ready / GNSS fix, the beacons heard (or "none"), and the verdict.

Verdict per sample: ``ok`` (MQTT worked), ``sms`` (MQTT did not, SMS could), ``fail``
(neither); a place takes its worst sample (one dead corner is one too many). Signal below
:data:`WEAK_DBM` is flagged as weak even where everything worked.

Bad or partial recordings never crash: lines that are not JSON, a cut-off last line, samples
missing fields or with out-of-range values are skipped with a warning naming the file and
line (``FILE:line N: …``); an empty file gives a report saying so (``lonewatch survey report``
then exits 1). Places come from what the installer typed, else from the
beacon — named through a places file (:mod:`relay.places`) when one is given.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Final

__all__ = ["PlaceSummary", "Survey", "WEAK_DBM", "load_survey", "render_plot", "write_report"]

#: Below this the link is weak even if it worked during the walk (SPEC doctor: −105 dBm).
WEAK_DBM: Final = -105
VERDICT_RANK: Final = {"ok": 0, "sms": 1, "fail": 2}
UNNAMED: Final = "(no place given)"


@dataclass
class Sample:
    line: int
    i: int
    t: float
    dbm: int | None
    registration: str
    rtt_ms: float | None
    sms_ready: bool
    gnss_fix: bool
    beacons: dict[str, float]
    place: str

    @property
    def verdict(self) -> str:
        if self.rtt_ms is not None:
            return "ok"
        return "sms" if self.sms_ready else "fail"


@dataclass
class PlaceSummary:
    """One place of the walk (see the module docstring for the verdict)."""

    place: str
    samples: int
    worst_dbm: int | None
    median_dbm: float | None
    worst_rtt_ms: float | None
    mqtt_pct: float
    sms_pct: float
    gnss_pct: float
    beacons: list[str]
    verdict: str
    weak: bool


@dataclass
class Survey:
    """A loaded walk: ``samples`` in order, ``warnings`` (one per skipped line or oddity)."""

    source: str
    samples: list[Sample] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: beacon id → place label (from a places file), used for the beacons heard
    names: dict[str, str] = field(default_factory=dict)

    def places(self) -> list[PlaceSummary]:
        """One summary per place, in the order the walk first reached it."""
        order: dict[str, list[Sample]] = {}
        for s in self.samples:
            order.setdefault(s.place, []).append(s)
        out = []
        for place, rows in order.items():
            dbms = [r.dbm for r in rows if r.dbm is not None]
            rtts = [r.rtt_ms for r in rows if r.rtt_ms is not None]
            verdict = max((r.verdict for r in rows), key=VERDICT_RANK.__getitem__)
            heard = sorted({self.names.get(b, b) for r in rows for b in r.beacons})
            n = len(rows)
            out.append(PlaceSummary(
                place=place, samples=n, worst_dbm=min(dbms) if dbms else None,
                median_dbm=statistics.median(dbms) if dbms else None, worst_rtt_ms=max(rtts) if rtts else None,
                mqtt_pct=100 * len(rtts) / n, sms_pct=100 * sum(r.sms_ready for r in rows) / n,
                gnss_pct=100 * sum(r.gnss_fix for r in rows) / n, beacons=heard, verdict=verdict,
                weak=bool(dbms) and min(dbms) < WEAK_DBM,
            ))  # fmt: skip
        return out

    def at_risk(self) -> list[PlaceSummary]:
        """Places where an alarm would depend on the SMS fallback or fail, worst first."""
        return sorted((p for p in self.places() if p.verdict != "ok"), key=lambda p: -VERDICT_RANK[p.verdict])


def _num(value: Any, lo: float, hi: float, *, integer: bool = False) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a number")
    if not lo <= value <= hi:
        raise ValueError(f"{value!r} outside {lo}..{hi}")
    return int(value) if integer else float(value)


def _bool(obj: Mapping[str, Any], key: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def _text(raw: bytes) -> str | None:
    """The line as text, or None when it is binary (not UTF-8, or control characters)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 32 and c not in "\t\r" for c in text):
        return None
    return text


def load_survey(path: str | PathLike[str], *, names: Mapping[str, str] | None = None) -> Survey:
    """Read a walk. ``names``: beacon id → place label (from a places file) for samples whose
    place came from a beacon. Never raises for bad content (warnings instead, each
    ``FILE:line N: …``): binary lines are "not a JSON line", ``dbm`` outside −140..0, ``lat``
    outside −90..90, ``lon`` outside −180..180 and ``sms_ready``/``gnss_fix`` that are not
    booleans are skipped.

    Raises:
        OSError: the file cannot be read at all.
    """
    names = dict(names or {})
    survey = Survey(str(path), names=names)
    raw = Path(path).read_bytes()
    lines = raw.split(b"\n")
    cut = raw and not raw.endswith(b"\n")
    last = lines[-1] if cut else b""
    lines = lines[:-1]
    for no, line in enumerate(lines, start=1):
        where = f"{path}:line {no}"
        text = _text(line)
        if text is None:
            survey.warnings.append(f"{where}: not a JSON line (binary data); skipped")
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            if obj.get("v") != 1:
                raise ValueError(f"unknown survey version {obj.get('v')!r}")
            beacons = obj.get("beacons") or {}
            if not isinstance(beacons, dict):
                raise ValueError("beacons must be an object")
            place = obj.get("place")
            if obj.get("place_source") == "beacon" and isinstance(place, str):
                place = names.get(place, place)
            _num(obj.get("lat"), -90, 90)
            _num(obj.get("lon"), -180, 180)
            sample = Sample(
                line=no, i=int(_num(obj.get("i", no), 0, 1e9, integer=True)), t=_num(obj["t"], 0, 1e11),
                dbm=_num(obj.get("dbm"), -140, 0, integer=True), registration=str(obj.get("registration", "unknown")),
                rtt_ms=_num(obj.get("mqtt_rtt_ms"), 0, 600_000), sms_ready=_bool(obj, "sms_ready"),
                gnss_fix=_bool(obj, "gnss_fix"),
                beacons={str(k): float(v) for k, v in beacons.items() if isinstance(v, (int, float))},
                place=place if isinstance(place, str) and place.strip() else UNNAMED,
            )  # fmt: skip
        except json.JSONDecodeError as exc:
            survey.warnings.append(f"{where}: not JSON ({exc.msg}); skipped")
            continue
        except KeyError as exc:
            survey.warnings.append(f"{where}: field {exc.args[0]} missing; skipped")
            continue
        except (ValueError, TypeError, OverflowError) as exc:
            survey.warnings.append(f"{where}: {exc}; skipped")
            continue
        except RecursionError:
            survey.warnings.append(f"{where}: JSON nested too deeply; skipped")
            continue
        survey.samples.append(sample)
    if cut:
        where = f"{path}:line {len(lines) + 1}"
        if _text(last) is None:
            survey.warnings.append(f"{where}: not a JSON line (binary data); skipped")
        else:
            survey.warnings.append(f"{where}: the last line is cut off (the walk ended mid-write); skipped")
    if not survey.samples:
        survey.warnings.append("no usable samples in the recording")
    return survey


# --------------------------------------------------------------------------- plot


def render_plot(survey: Survey) -> bytes:
    """PNG of signal and MQTT round trip along the walk (bytes). Matplotlib, Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7), dpi=100, layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    s = survey.samples
    if not s:
        ax1.text(0.5, 0.5, "no usable samples", ha="center", va="center", transform=ax1.transAxes)
    else:
        t0 = s[0].t
        minutes = s[-1].t - t0 > 300
        scale, unit = (60.0, "minutes") if minutes else (1.0, "seconds")
        x = [(r.t - t0) / scale for r in s]
        ax1.plot(x, [r.dbm if r.dbm is not None else math.nan for r in s], "-o", ms=3, color="#1f5fa8", label="signal")
        blind = [xi for xi, r in zip(x, s) if r.dbm is None]
        if blind:
            ax1.scatter(blind, [-117] * len(blind), marker="x", s=40, c="#c0392b", zorder=3, label="no signal reading")
        ax1.axhline(WEAK_DBM, color="#c0392b", ls="--", lw=1, label=f"weak ({WEAK_DBM} dBm)")
        ax1.set_ylabel("signal (dBm)")
        ax1.set_ylim(-120, -45)
        ax2.plot(x, [r.rtt_ms if r.rtt_ms is not None else math.nan for r in s], "-o", ms=3, color="#2e8b57",
                 label="MQTT round trip")
        fails = [(xi, r) for xi, r in zip(x, s) if r.rtt_ms is None]
        if fails:
            ax2.scatter([f[0] for f in fails], [0] * len(fails), marker="x", s=40,
                        c=["#e67e22" if r.sms_ready else "#c0392b" for _, r in fails], zorder=3,
                        label="no MQTT (orange: SMS only, red: nothing)")
        ax2.set_ylabel("MQTT round trip (ms)")
        ax2.set_xlabel(f"{unit} since the start of the walk")
        top = max([r.rtt_ms for r in s if r.rtt_ms is not None], default=1.0)
        ax2.set_ylim(-0.06 * top, top * 1.25)
        # shade each stretch of the walk spent at one place; its name stands upright in it
        spans: list[tuple[float, float, str]] = []
        for xi, r in zip(x, s):
            if spans and spans[-1][2] == r.place:
                spans[-1] = (spans[-1][0], xi, r.place)
            else:
                spans.append((xi, xi, r.place))
        colors = ("#f2f2f2", "#e3ecf7")
        step = (x[-1] - x[0]) / max(len(x) - 1, 1) if len(x) > 1 else 1.0
        for k, (a, b, name) in enumerate(spans):
            for ax in (ax1, ax2):
                ax.axvspan(a - step / 2, b + step / 2, color=colors[k % 2], zorder=0)
            ax1.text((a + b) / 2, -47, name if len(name) <= 36 else name[:35] + "…", ha="center", va="top",
                     fontsize=7.5, rotation=90, clip_on=True, color="#333")
        ax1.legend(loc="lower right", fontsize=8)
        ax2.legend(loc="upper right", fontsize=8)
    ax1.set_title(f"Coverage along the walk — {Path(survey.source).name}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --------------------------------------------------------------------------- HTML

_VERDICT_TEXT: Final = {"ok": "alarm goes by data (MQTT)", "sms": "alarm depends on the SMS fallback",
                        "fail": "an alarm would FAIL here"}
_CSS: Final = """body{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #bbb;padding:4px 6px;text-align:left}
th{background:#eee}.ok{background:#e6f4ea}.sms{background:#fff3cd}.fail{background:#f8d7da}
.warn{color:#8a4b00}img{max-width:100%}"""


def _fmt(v: float | None, unit: str, digits: int = 0) -> str:
    return "–" if v is None else f"{v:.{digits}f} {unit}"


def write_report(survey: Survey, output: str | PathLike[str]) -> Path:
    """Write the HTML report (and ``<output>.png``); returns the PNG's path.

    Raises:
        OSError: the output cannot be written.
    """
    out = Path(output)
    png = render_plot(survey)
    png_path = out.with_suffix(".png")
    png_path.write_bytes(png)
    places = survey.places()
    risky = survey.at_risk()
    e = html.escape
    parts = [f"<!doctype html><meta charset=utf-8><title>lonewatch coverage survey</title><style>{_CSS}</style>",
             f"<h1>Coverage survey: {e(Path(survey.source).name)}</h1>"]
    if survey.samples:
        span = survey.samples[-1].t - survey.samples[0].t
        parts.append(f"<p>{len(survey.samples)} samples over {span / 60:.1f} minutes at {len(places)} place(s).</p>")
    if not survey.samples:
        parts.append("<p class=fail><b>No usable samples: nothing can be said about this site.</b></p>")
    elif not risky:
        parts.append("<p class=ok><b>Every place on the walk can send an alarm by data (MQTT).</b></p>")
    else:
        parts.append("<h2>Places where an alarm would depend on the SMS fallback or fail</h2><ul>")
        for p in risky:
            parts.append(f"<li class={p.verdict}><b>{e(p.place)}</b>: {_VERDICT_TEXT[p.verdict]} "
                         f"(worst signal {_fmt(p.worst_dbm, 'dBm')}, MQTT in {p.mqtt_pct:.0f} % of samples)</li>")
        parts.append("</ul>")
    if survey.warnings:
        parts.append("<h2>Recording problems</h2><ul>" + "".join(f"<li class=warn>{e(w)}</li>" for w in survey.warnings)
                     + "</ul>")
    parts.append(f"<h2>Signal and round trip along the walk</h2><img alt='signal and MQTT round trip' "
                 f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts.append("<h2>Per place</h2><table><tr><th>place</th><th>samples</th><th>worst signal</th>"
                 "<th>median signal</th><th>worst round trip</th><th>MQTT</th><th>SMS ready</th><th>GNSS fix</th>"
                 "<th>beacon heard</th><th>verdict</th></tr>")
    for p in places:
        weak = " (weak)" if p.weak else ""
        parts.append(
            f"<tr class={p.verdict}><td>{e(p.place)}</td><td>{p.samples}</td><td>{_fmt(p.worst_dbm, 'dBm')}{weak}</td>"
            f"<td>{_fmt(p.median_dbm, 'dBm')}</td><td>{_fmt(p.worst_rtt_ms, 'ms')}</td><td>{p.mqtt_pct:.0f} %</td>"
            f"<td>{p.sms_pct:.0f} %</td><td>{p.gnss_pct:.0f} %</td>"
            f"<td>{e(', '.join(p.beacons)) if p.beacons else 'none'}</td><td>{_VERDICT_TEXT[p.verdict]}</td></tr>")
    parts.append("</table><p>Verdict per place = its worst sample. Signal below "
                 f"{WEAK_DBM} dBm is weak even where it worked during the walk.</p>")
    out.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return png_path


def beacon_names(places: Iterable[Any]) -> dict[str, str]:
    """beacon id → "site: building / floor / room" from :class:`relay.places.Place` items."""
    return {p.beacon: f"{p.label()}" for p in places}
