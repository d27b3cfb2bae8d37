// Sonify web page: submit a picture, follow its job over server-sent events, play the clip;
// results are remembered by this browser, can be taken again, redone from the user's own
// words, and shared under a link their owner can end.
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
  const announce = document.getElementById("announce");
  const results = document.getElementById("results");
  const noResults = document.getElementById("no-results");
  const template = document.getElementById("result-template");
  const LANG = document.documentElement.lang || "en";
  let maxUpload = 0;
  let sending = false;
  // Every text comes from the server's catalogue, in the language the page was served in.
  const TEXTS = JSON.parse(document.getElementById("sonify-texts").textContent);

  function tr(key, params) {
    const text = TEXTS[key] || key;
    return text.replace(/\{(\w+)(?::[^}]*)?\}/g, (m, name) =>
      params && name in params ? String(params[name]) : m);
  }

  function showFormError(message) {
    formError.textContent = message || "";
  }

  function describeFailure(body, status) {
    if (body && body.error && body.error.message) return body.error.message;
    return tr("web.http_error", { status });
  }

  // ---- what this browser remembers: its results (ids) and the share links it made ----
  // The server keeps the jobs; the browser keeps which are its own, so a reload (or a
  // restart of the server) shows them again. Share tokens exist nowhere else: the server
  // stores only their hash.
  const STORE = "sonify.results";
  const KEEP = 40;

  function saved() {
    try {
      const list = JSON.parse(localStorage.getItem(STORE) || "[]");
      return Array.isArray(list) ? list.filter((e) => e && typeof e.id === "string") : [];
    } catch (err) {
      return [];
    }
  }

  function store(list) {
    try {
      localStorage.setItem(STORE, JSON.stringify(list.slice(-KEEP)));
    } catch (err) {
      // Private mode or a full store: results then last as long as the page.
    }
  }

  function remember(id) {
    store(saved().filter((e) => e.id !== id).concat([{ id }]));
  }

  function forget(id) {
    store(saved().filter((e) => e.id !== id));
  }

  function shareToken(id) {
    const entry = saved().find((e) => e.id === id);
    return entry && entry.share ? entry.share : null;
  }

  function keepShareToken(id, token) {
    store(saved().map((e) => (e.id === id ? { id, share: token || undefined } : e)));
  }

  // ---- the form ----
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
    if (file) {
      urlInput.value = "";
      showFormError(""); // a new picture: the old one's complaint no longer applies
    }
  }
  fileInput.addEventListener("change", showFile);
  // The hint says "press to choose a file": Enter and Space both open the chooser (by
  // itself a file input answers Space only, and not in every browser).
  fileInput.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" && e.key !== " ") return;
    e.preventDefault();
    fileInput.click();
  });
  urlInput.addEventListener("input", () => {
    showFormError("");
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

  function setSending(on) {
    sending = on;
    // aria-disabled, not disabled: a disabled button loses keyboard focus to <body>.
    submitButton.setAttribute("aria-disabled", on ? "true" : "false");
    submitButton.textContent = tr(on ? "web.sending" : "web.submit");
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (sending) return;
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

    setSending(true);
    try {
      const response = await fetch("/api/jobs", {
        method: "POST", body, credentials: "same-origin",
      });
      const data = await response.json().catch(() => null);
      if (response.status !== 202 || !data || !data.id) {
        showFormError(describeFailure(data, response.status));
        return;
      }
      // Keep the options for the next picture; clear only the picture itself.
      urlInput.value = "";
      fileInput.value = "";
      showFile();
      started(data);
    } catch (err) {
      showFormError(tr("web.unreachable"));
    } finally {
      setSending(false);
    }
  });

  // ---- result cards ----
  function newCard(id, atEnd) {
    const node = template.content.firstElementChild.cloneNode(true);
    node.dataset.jobId = id;
    node.setAttribute("aria-label", tr("web.request_label", { id }));
    if (atEnd) results.append(node);
    else results.prepend(node); // newest first
    noResults.hidden = true;
    const q = (selector) => node.querySelector(selector);
    const card = {
      id, root: node, preview: q(".preview"), status: q(".status"), bar: q(".bar"),
      caption: q(".caption"), prompt: q(".prompt"), facts: q(".facts"), audio: q(".player"),
      wave: q(".wave"), downloads: q(".downloads"), ogg: q(".dl-ogg"), mp3: q(".dl-mp3"),
      video: q(".video-player"), mp4: q(".dl-mp4"), notes: q(".notes"),
      actions: q(".actions"), retake: q(".retake"), wordsOpen: q(".words-open"),
      shareOpen: q(".share-open"), wordsForm: q(".words-form"), words: q(".words-input"),
      wordsSend: q(".words-send"), wordsCancel: q(".words-cancel"), shareBox: q(".share-box"),
      shareLive: q(".share-live"), shareUrl: q(".share-url"), shareCopy: q(".share-copy"),
      shareStop: q(".share-stop"), note: q(".card-note"), error: q(".job-error"),
      shown: false,
    };
    wireActions(card);
    return card;
  }

  function showPicture(card, src) {
    if (src && !card.preview.getAttribute("src")) card.preview.src = src;
    const has = Boolean(card.preview.getAttribute("src"));
    card.preview.hidden = !has || !card.video.hidden; // a video answer shows the clip itself
    card.root.classList.toggle("no-picture", !has);
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

  function number(value) {
    return Number(value).toLocaleString(LANG, { maximumFractionDigits: 1 });
  }

  function setDone(card, view) {
    card.root.dataset.status = "done";
    card.bar.value = 100;
    card.status.textContent = tr(view.cache_hit ? "web.done_cached" : "web.done");
    if (view.kind === "text") {
      // The user's own words are what the sound was made from: they are its caption here.
      card.caption.textContent = view.prompt || "";
      card.prompt.textContent = card.context && card.context.caption
        ? tr("web.words_for", { caption: card.context.caption }) : tr("web.your_words");
    } else {
      card.caption.textContent = view.caption || "";
      card.prompt.textContent = view.prompt ? tr("web.prompt", { prompt: view.prompt }) : "";
    }
    if (view.duration != null && view.seed != null) {
      card.facts.textContent = tr("web.clip_facts",
        { seconds: number(view.duration), seed: view.seed });
    }
    card.actions.hidden = false;
    card.notes.textContent = (view.notes || []).join(" ");
    showShare(card, view.shared);
    if (card.shown) return; // a replayed "done" after a reconnect: the player is set up
    card.shown = true;
    if (view.video) {
      // A moving picture's answer: the same video with its new sound. It plays here; the
      // sound alone stays downloadable below.
      card.video.src = view.video;
      card.video.setAttribute("aria-label",
        tr("web.sound_of", { caption: view.caption || view.prompt || tr("web.your_picture") }));
      card.video.hidden = false;
      card.mp4.href = view.video;
      card.mp4.download = "sonify-" + view.id + ".mp4";
      card.mp4.hidden = false;
      card.preview.hidden = true;
    }
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
        tr("web.sound_of", { caption: view.caption || view.prompt || tr("web.your_picture") }));
      audio.hidden = Boolean(view.video); // the video carries the sound
      card.downloads.hidden = false;
      audio.load();
      const first = view.audio.ogg || view.audio.mp3;
      if (window.SonifyWave) window.SonifyWave.draw(card.wave, first).catch(() => {
        card.wave.hidden = true; // a nicety: the player works without it
      });
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
    showPicture(card, view.image);
    if (view.status === "done") setDone(card, view);
    else if (view.status === "failed") setFailed(card, view.error);
    else if (view.status === "running") setProgress(card, view.progress || 0);
    else setQueued(card, view.position || 1);
  }

  // A job just accepted (202): its card goes on top, into view, with the focus on it.
  function started(data, from) {
    remember(data.id);
    showFormError(""); // accepted: an older complaint of the form no longer applies
    const card = newCard(data.id);
    if (from) card.context = from; // the result these words are for
    showPicture(card, data.image || (from && from.picture));
    setQueued(card, data.position || 1);
    follow(card);
    card.root.focus({ preventScroll: true });
    card.root.scrollIntoView({ block: "start" });
    announce.textContent = tr("web.sent");
  }

  function follow(card) {
    const id = card.id;
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
      setFailed(card, JSON.parse(e.data).error);
    });
    source.addEventListener("error", () => {
      // A network error makes EventSource retry by itself; a refusal (e.g. 404 while the
      // server restarts and has not taken the job back yet) closes it: poll from then on.
      if (finished || source.readyState !== EventSource.CLOSED) return;
      poll(card, 0);
    });
  }

  function poll(card, attempt) {
    fetch("/api/jobs/" + encodeURIComponent(card.id), { credentials: "same-origin" })
      .then(async (r) => {
        const body = await r.json().catch(() => null);
        if (!r.ok || !body) {
          setFailed(card, body && body.error);
          return;
        }
        apply(card, body);
        if (body.status !== "done" && body.status !== "failed") {
          setTimeout(() => poll(card, attempt + 1), Math.min(10000, 1000 + attempt * 500));
        }
      })
      .catch(() => {
        if (attempt < 30) setTimeout(() => poll(card, attempt + 1), 3000);
        else setFailed(card, { message: tr("web.lost_contact") });
      });
  }

  // ---- "Another take", "Use my words", "Share" ----
  async function post(path, init) {
    const response = await fetch(path, { method: "POST", credentials: "same-origin", ...init });
    const data = response.status === 204 ? {} : await response.json().catch(() => null);
    return { response, data };
  }

  async function newTake(card, button, path, init, from) {
    if (button.getAttribute("aria-busy") === "true") return false;
    card.error.textContent = "";
    button.setAttribute("aria-busy", "true");
    try {
      const { response, data } = await post(path, init);
      if (response.status !== 202 || !data || !data.id) {
        card.error.textContent = describeFailure(data, response.status);
        return false;
      }
      started(data, from);
      return true;
    } catch (err) {
      card.error.textContent = tr("web.unreachable");
      return false;
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  function jobPath(card, tail) {
    return "/api/jobs/" + encodeURIComponent(card.id) + "/" + tail;
  }

  function toggleWords(card, open) {
    card.wordsForm.hidden = !open;
    card.wordsOpen.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) card.words.focus();
  }

  function showShare(card, shared) {
    let token = shareToken(card.id);
    if (shared === false && token) {
      keepShareToken(card.id, null); // ended elsewhere (another tab): the link is dead
      token = null;
    }
    const live = Boolean(token) || shared === true;
    card.shareBox.hidden = !live;
    card.shareLive.hidden = !token;
    card.shareCopy.hidden = !token;
    // Without the token (it exists only in the browser that made the link) the link
    // cannot be shown again; "Share" then makes a new one, which ends the old.
    card.shareOpen.hidden = Boolean(token);
    card.shareUrl.value = token ? new URL("/s/" + token, location.href).href : "";
  }

  function wireActions(card) {
    card.retake.addEventListener("click", () =>
      newTake(card, card.retake, jobPath(card, "retake")));
    card.wordsOpen.addEventListener("click", () => toggleWords(card, card.wordsForm.hidden));
    card.wordsCancel.addEventListener("click", () => {
      toggleWords(card, false);
      card.wordsOpen.focus();
    });
    card.words.addEventListener("input", () => { card.error.textContent = ""; });
    card.wordsForm.addEventListener("keydown", (e) => {
      if (e.key !== "Escape") return;
      e.preventDefault();
      toggleWords(card, false);
      card.wordsOpen.focus();
    });
    card.wordsForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const words = card.words.value.trim();
      if (!words) {
        card.error.textContent = tr("web.error.no_words");
        card.words.focus();
        return;
      }
      const ok = await newTake(card, card.wordsSend, jobPath(card, "words"), {
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ words }),
      }, {
        caption: card.root.dataset.status === "done" ? card.caption.textContent : "",
        picture: card.preview.getAttribute("src"),
      });
      if (ok) {
        card.words.value = "";
        card.wordsForm.hidden = true;
        card.wordsOpen.setAttribute("aria-expanded", "false");
      }
    });
    card.shareOpen.addEventListener("click", async () => {
      card.error.textContent = "";
      card.note.textContent = "";
      try {
        const { response, data } = await post(jobPath(card, "share"));
        if (response.status !== 201 || !data || !data.token) {
          card.error.textContent = describeFailure(data, response.status);
          return;
        }
        keepShareToken(card.id, data.token);
        showShare(card, true);
        card.shareUrl.focus();
        card.shareUrl.select();
      } catch (err) {
        card.error.textContent = tr("web.unreachable");
      }
    });
    card.shareCopy.addEventListener("click", async () => {
      card.shareUrl.select();
      try {
        await navigator.clipboard.writeText(card.shareUrl.value);
        card.note.textContent = tr("web.link_copied");
      } catch (err) {
        // No clipboard access: the link stays selected for the user to copy.
      }
    });
    card.shareStop.addEventListener("click", async () => {
      card.error.textContent = "";
      try {
        const response = await fetch(jobPath(card, "share"),
          { method: "DELETE", credentials: "same-origin" });
        if (response.status !== 204) {
          const data = await response.json().catch(() => null);
          card.error.textContent = describeFailure(data, response.status);
          return;
        }
        keepShareToken(card.id, null);
        showShare(card, false);
        card.note.textContent = tr("web.share_stopped");
        card.shareOpen.focus();
      } catch (err) {
        card.error.textContent = tr("web.unreachable");
      }
    });
  }

  // ---- results from earlier visits ----
  async function restore() {
    const entries = saved();
    if (!entries.length) return;
    const views = await Promise.all(entries.map((entry) =>
      fetch("/api/jobs/" + encodeURIComponent(entry.id), { credentials: "same-origin" })
        .then(async (r) => (r.status === 404 ? null : r.ok ? r.json() : undefined))
        .catch(() => undefined)));
    // Newest first, below anything submitted while these were being fetched.
    for (let i = entries.length - 1; i >= 0; i--) {
      const view = views[i];
      if (view === null) {
        forget(entries[i].id); // gone from the server (or never this browser's): drop it
        continue;
      }
      if (!view || results.querySelector('[data-job-id="' + CSS.escape(view.id) + '"]')) {
        continue;
      }
      const card = newCard(view.id, true);
      apply(card, view);
      if (view.status !== "done" && view.status !== "failed") follow(card);
    }
  }
  restore();
})();
