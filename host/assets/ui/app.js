// The dashboard's live parts. Served from our own origin (the page's
// Content-Security-Policy allows no inline script). Everything a tenant
// wrote reaches the page as text (textContent), or as HTML the server
// rendered and escaped (the rows fragment); nothing here builds markup
// from data.
"use strict";
(function () {
  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  // The executions list: re-read the first page when something changes.
  var rows = document.getElementById("rows");
  if (rows && rows.dataset.liveRows) {
    var url = rows.dataset.liveRows;
    var busy = false;
    var again = false;
    var refresh = function () {
      if (busy) { again = true; return; }
      busy = true;
      fetch(url, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { rows.innerHTML = html; } })
        .finally(function () {
          busy = false;
          if (again) { again = false; refresh(); }
        });
    };
    var changes = new EventSource("/ui/live/changes");
    changes.addEventListener("changed", refresh);
    // Says the page is live (tests wait for it before changing anything).
    changes.addEventListener("open", function () { rows.dataset.live = "open"; });
  }

  // An execution's frames, state and end, live.
  var frames = document.getElementById("frames");
  if (frames && frames.dataset.stream) {
    var after = frames.dataset.after || "";
    var stream = new EventSource(frames.dataset.stream + "?after=" + encodeURIComponent(after));
    stream.addEventListener("frame", function (event) {
      var frame = JSON.parse(event.data);
      var id = frame.attempt + ":" + frame.seq;
      var seen = Array.prototype.some.call(frames.children, function (li) { return li.dataset.id === id; });
      if (seen) { return; }
      var li = document.createElement("li");
      li.dataset.id = id;
      var type = document.createElement("span");
      type.className = "frame-type";
      type.textContent = frame.frame_type;
      var at = document.createElement("span");
      at.className = "mono muted";
      at.textContent = " " + frame.created_at.replace("T", " ").slice(0, 19);
      var body = document.createElement("pre");
      var value = frame.payload.value;
      body.textContent = typeof value === "string" ? value
        : (value === null || value === undefined ? "" : JSON.stringify(value));
      li.append(type, at, body);
      frames.append(li);
    });
    stream.addEventListener("state", function (event) {
      var change = JSON.parse(event.data);
      var badge = document.getElementById("state");
      if (badge) {
        badge.textContent = change.state;
        badge.className = "state state-" + change.state;
      }
    });
    stream.addEventListener("end", function () {
      stream.close();
      var ended = document.getElementById("ended");
      if (ended) { ended.hidden = false; }
    });
  }

  // Component upload: the file as the request body, the CSRF token in a header.
  var upload = document.getElementById("upload-form");
  if (upload) {
    upload.addEventListener("submit", function (event) {
      event.preventDefault();
      var kind = document.getElementById("upload-kind").value.trim();
      var file = document.getElementById("upload-file").files[0];
      var status = document.getElementById("upload-status");
      if (!kind || !file) { return; }
      status.textContent = "uploading…";
      fetch("/ui/components/" + encodeURIComponent(kind), {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/wasm", "x-csrf-token": csrfToken() },
        body: file
      }).then(function (r) {
        return r.text().then(function (text) {
          if (r.ok) { window.location.reload(); return; }
          var doc = new DOMParser().parseFromString(text, "text/html");
          var message = doc.getElementById("error-message");
          status.textContent = "upload refused: " + (message ? message.textContent : r.status);
        });
      });
    });
  }
})();
