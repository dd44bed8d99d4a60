/* lonewatch console: live alarm queue (Server-Sent Events), alarm sound, time-since
   counters and a small slippy-map tile view. No library, no build step, no CDN. */
(function () {
  "use strict";
  var $ = function (s, r) { return (r || document).querySelector(s); };
  var SOUND_KEY = "lonewatch-console-sound";
  var soundOn = localStorage.getItem(SOUND_KEY) !== "off";
  var audio = null;
  window.lwConsole = { chimes: 0, events: 0, connects: 0 };

  function showSound() {
    var b = $("#sound-toggle");
    if (!b) return;
    b.textContent = soundOn ? b.dataset.on : b.dataset.off;
    b.setAttribute("aria-pressed", soundOn ? "true" : "false");
  }

  function chime() {
    if (!soundOn) return;
    window.lwConsole.chimes++;
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      var t = audio.currentTime, o = audio.createOscillator(), g = audio.createGain();
      o.type = "square"; g.gain.value = 0.12;
      o.frequency.setValueAtTime(880, t); o.frequency.setValueAtTime(660, t + 0.25);
      o.frequency.setValueAtTime(880, t + 0.5); o.connect(g); g.connect(audio.destination);
      o.start(t); o.stop(t + 0.75);
    } catch (e) { /* no audio device: the red row is the alert */ }
  }

  document.addEventListener("click", function (ev) {
    if (ev.target && ev.target.id === "sound-toggle") {
      soundOn = !soundOn;
      localStorage.setItem(SOUND_KEY, soundOn ? "on" : "off");
      showSound();
    }
  });

  function fmt(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + " min";
    return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h";
  }
  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("[data-since]").forEach(function (el) {
      el.textContent = fmt(now - parseFloat(el.dataset.since));
    });
  }

  function setStatus(name) {
    var el = $("#live-status");
    if (!el) return;
    el.textContent = el.dataset[name] || name;
    el.className = "live is-" + name;
    document.body.dataset.live = name;
  }

  function liveQueue() {
    var table = $("#queue");
    if (!table) { if (!$("#alarm-title")) setStatus("live"); return; }
    var known = new Set(JSON.parse(table.dataset.ids || "[]"));
    var source = null;
    function connect() {
      window.lwConsole.connects++;
      source = new EventSource("/events");
      source.addEventListener("queue", function (ev) {
        var d = JSON.parse(ev.data);
        $("#queue-rows").innerHTML = d.html;
        var fresh = d.urgent.filter(function (id) { return !known.has(id); });
        d.ids.forEach(function (id) { known.add(id); });
        if (fresh.length) chime();
        window.lwConsole.events++;
        table.dataset.version = d.version;
        setStatus(d.redis_ok ? "live" : "stale");
        tick();
      });
      source.onopen = function () { setStatus("live"); };
      source.onerror = function () {
        setStatus("reconnecting");
        if (source.readyState === EventSource.CLOSED) { setTimeout(connect, 1000); }
      };
    }
    connect();
  }

  function maps() {
    document.querySelectorAll(".map[data-tile]").forEach(function (el) {
      var lat = parseFloat(el.dataset.lat), lon = parseFloat(el.dataset.lon), z = parseInt(el.dataset.zoom || "16", 10);
      var n = Math.pow(2, z), xf = (lon + 180) / 360 * n, r = lat * Math.PI / 180;
      var yf = (1 - Math.log(Math.tan(r) + 1 / Math.cos(r)) / Math.PI) / 2 * n;
      var x0 = Math.floor(xf), y0 = Math.floor(yf), w = el.clientWidth || 512, h = el.clientHeight || 320;
      var failed = 0, total = 0;
      for (var dx = -2; dx <= 2; dx++) {
        for (var dy = -1; dy <= 1; dy++) {
          var img = document.createElement("img");
          img.className = "tile"; img.alt = ""; total++;
          img.style.left = (w / 2 + (x0 + dx - xf) * 256) + "px";
          img.style.top = (h / 2 + (y0 + dy - yf) * 256) + "px";
          img.onerror = function () { this.remove(); failed++; if (failed === total) el.classList.add("map-failed"); };
          img.src = el.dataset.tile.replace("{z}", z).replace("{x}", ((x0 + dx) % n + n) % n).replace("{y}", y0 + dy);
          el.appendChild(img);
        }
      }
      var m = document.createElement("div");
      m.className = "marker"; el.appendChild(m);
    });
  }

  function liveAlarm() {
    var title = $("#alarm-title");
    if (!title) return;
    var url = "/alarm/" + title.dataset.alarm + "/fragment", last = null;
    function refresh() {
      fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
        if (!r.ok) throw new Error(r.status);
        return r.json();
      }).then(function (d) {
        var key = d.facts + d.history;
        if (last !== null && key !== last) {
          $("#alarm-facts").innerHTML = d.facts;
          $("#history-rows").innerHTML = d.history;
          tick();
        }
        last = key;
        setStatus("live");
      }).catch(function () { setStatus("reconnecting"); });
    }
    refresh();
    setInterval(refresh, 2000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    showSound(); tick(); setInterval(tick, 1000); liveQueue(); liveAlarm(); maps();
  });
})();
