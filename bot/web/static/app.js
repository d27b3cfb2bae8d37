// Sonify web page: submit a picture, follow its job over server-sent events, play the clip.
"use strict";

(function () {
  const form = document.getElementById("job-form");
  const urlInput = document.getElementById("url");
  const fileInput = document.getElementById("image");
  const dropZone = document.getElementById("drop-zone");
  const fileName = document.getElementById("file-name");
  const secondsInput = document.getElementById("seconds");
  const seedInput = document.getElementById("seed");
  const formError = document.getElementById("form-error");
  const submitButton = document.getElementById("submit");
  const results = document.getElementById("results");
  const noResults = document.getElementById("no-results");
  const template = document.getElementById("result-template");
  let maxUpload = 0;
  // Every text comes from the server's catalogue, in the language the page was served in.
  const TEXTS = JSON.parse(document.getElementById("sonify-texts").textContent);

  function tr(key, params) {
    const template = TEXTS[key] || key;
    return template.replace(/\{(\w+)(?::[^}]*)?\}/g, (m, name) =>
      params && name in params ? String(params[name]) : m);
  }

  function showFormError(message) {
    formError.textContent = message || "";
  }

  function describeFailure(body, status) {
    if (body && body.error && body.error.message) return body.error.message;
    return tr("web.http_error", { status });
  }

  // Limits come from the server's configuration, so the form never disagrees with it.
  fetch("/api/config", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : null))
    .then((cfg) => {
      if (!cfg) return;
      secondsInput.max = String(cfg.max_seconds);
      secondsInput.value = String(cfg.seconds);
      secondsInput.defaultValue = String(cfg.seconds);
      seedInput.max = String(cfg.max_seed);
      maxUpload = cfg.max_upload_bytes;
    })
    .catch(() => {});

  function showFile() {
    const file = fileInput.files && fileInput.files[0];
    fileName.textContent = file ? tr("web.selected", { name: file.name }) : "";
    dropZone.classList.toggle("has-file", Boolean(file));
    if (file) urlInput.value = "";
  }
  fileInput.addEventListener("change", showFile);
  urlInput.addEventListener("input", () => {
    if (urlInput.value && fileInput.value) {
      fileInput.value = "";
      showFile();
    }
  });

  ["dragenter", "dragover"].forEach((type) =>
    dropZone.addEventListener(type, (e) => {
      e.preventDefault();
      dropZone.classList.add("dragging");
    })
  );
  ["dragleave", "drop"].forEach((type) =>
    dropZone.addEventListener(type, () => dropZone.classList.remove("dragging"))
  );
  dropZone.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) {
      fileInput.files = e.dataTransfer.files;
      showFile();
    }
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showFormError("");
    const file = fileInput.files && fileInput.files[0];
    const url = urlInput.value.trim();
    if (!file && !url) {
      showFormError(tr("web.error.no_image"));
      return;
    }
    if (file && maxUpload && file.size > maxUpload) {
      const mb = Math.round((maxUpload / 1e6) * 10) / 10;
      showFormError(tr("error.too_large", { max_mb: mb }));
      return;
    }
    const body = new FormData();
    if (file) body.append("image", file, file.name);
    else body.append("url", url);
    if (secondsInput.value) body.append("seconds", secondsInput.value);
    if (seedInput.value) body.append("seed", seedInput.value);

    submitButton.disabled = true;
    submitButton.textContent = tr("web.sending");
    try {
      const response = await fetch("/api/jobs", {
        method: "POST", body, credentials: "same-origin",
      });
      const data = await response.json().catch(() => null);
      if (response.status !== 202 || !data) {
        const message = describeFailure(data, response.status);
        showFormError(message);
        return;
      }
      // Keep the options for the next picture; clear only the picture itself.
      urlInput.value = "";
      fileInput.value = "";
      showFile();
      if (data && data.id) followJob(data);
    } catch (err) {
      showFormError(tr("web.unreachable"));
    } finally {
      submitButton.disabled = false;
      submitButton.textContent = tr("web.submit");
    }
  });

  function newCard(id) {
    const node = template.content.firstElementChild.cloneNode(true);
    node.dataset.jobId = id;
    node.setAttribute("aria-label", tr("web.request_label", { id }));
    results.prepend(node); // newest first
    noResults.hidden = true;
    return {
      root: node,
      preview: node.querySelector(".preview"),
      status: node.querySelector(".status"),
      bar: node.querySelector(".bar"),
      caption: node.querySelector(".caption"),
      prompt: node.querySelector(".prompt"),
      audio: node.querySelector(".player"),
      downloads: node.querySelector(".downloads"),
      ogg: node.querySelector(".dl-ogg"),
      mp3: node.querySelector(".dl-mp3"),
      error: node.querySelector(".job-error"),
    };
  }

  function setQueued(card, position) {
    card.root.dataset.status = "queued";
    card.status.textContent = position > 1 ? tr("queued", { position }) : tr("web.queued_next");
  }

  function setProgress(card, share) {
    const percent = Math.max(0, Math.min(100, Math.round(share * 100)));
    card.root.dataset.status = "running";
    card.bar.value = percent;
    card.status.textContent = tr("progress", { percent });
  }

  function setDone(card, view) {
    card.root.dataset.status = "done";
    card.bar.value = 100;
    card.status.textContent = tr(view.cache_hit ? "web.done_cached" : "web.done");
    card.caption.textContent = view.caption || "";
    card.prompt.textContent = view.prompt ? tr("web.prompt", { prompt: view.prompt }) : "";
    if (view.audio) {
      // Per-job URLs: a new result can never pick up an older clip from the cache.
      const audio = card.audio;
      for (const [fmt, type] of [["ogg", "audio/ogg"], ["mp3", "audio/mpeg"]]) {
        const url = view.audio[fmt];
        if (!url) { card[fmt].hidden = true; continue; }
        const s = document.createElement("source");
        s.src = url;
        s.type = type;
        audio.appendChild(s);
        card[fmt].href = url;
        card[fmt].download = "sonify-" + view.id + "." + fmt;
      }
      audio.setAttribute("aria-label",
        tr("web.sound_of", { caption: view.caption || tr("web.your_picture") }));
      audio.hidden = false;
      card.downloads.hidden = false;
      audio.load();
    } else if (view.error) {
      card.error.textContent = view.error.message;
    }
  }

  function setFailed(card, error) {
    card.root.dataset.status = "failed";
    card.status.textContent = tr("web.failed");
    card.bar.hidden = true;
    card.error.textContent = (error && error.message) || tr("error.failed");
  }

  function apply(card, view) {
    if (view.image && !card.preview.getAttribute("src")) card.preview.src = view.image;
    if (view.status === "done") setDone(card, view);
    else if (view.status === "failed") setFailed(card, view.error);
    else if (view.status === "running") setProgress(card, view.progress || 0);
    else setQueued(card, view.position || 1);
  }

  function followJob(submitted) {
    const id = submitted.id;
    const card = newCard(id);
    card.preview.src = "/api/jobs/" + encodeURIComponent(id) + "/image";
    setQueued(card, submitted.position || 1);
    const source = new EventSource("/api/jobs/" + encodeURIComponent(id) + "/events");
    let finished = false;
    source.addEventListener("queued", (e) => setQueued(card, JSON.parse(e.data).position));
    source.addEventListener("started", () => {
      card.root.dataset.status = "running";
      card.status.textContent = tr("started");
    });
    source.addEventListener("progress", (e) => setProgress(card, JSON.parse(e.data).progress));
    source.addEventListener("done", (e) => {
      finished = true;
      source.close();
      setDone(card, JSON.parse(e.data));
    });
    source.addEventListener("failed", (e) => {
      finished = true;
      source.close();
      const data = JSON.parse(e.data);
      setFailed(card, data.error);
    });
    source.addEventListener("error", () => {
      // A network error makes EventSource retry by itself; a refusal (e.g. 404 while the
      // server restarts and has not taken the job back yet) closes it: poll from then on.
      if (finished || source.readyState !== EventSource.CLOSED) return;
      poll(card, id, 0);
    });
  }

  function poll(card, id, attempt) {
    fetch("/api/jobs/" + encodeURIComponent(id), { credentials: "same-origin" })
      .then(async (r) => {
        const body = await r.json().catch(() => null);
        if (!r.ok || !body) {
          setFailed(card, body && body.error);
          return;
        }
        apply(card, body);
        if (body.status !== "done" && body.status !== "failed") {
          setTimeout(() => poll(card, id, attempt + 1), Math.min(10000, 1000 + attempt * 500));
        }
      })
      .catch(() => {
        if (attempt < 30) setTimeout(() => poll(card, id, attempt + 1), 3000);
        else setFailed(card, { message: tr("web.lost_contact") });
      });
  }
})();
