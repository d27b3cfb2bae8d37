// Sonify web page: the waveform under a result's player, drawn from the decoded clip.
"use strict";

(function () {
  // Decoding needs no playback, so an offline context: it is not held back by autoplay
  // rules, and 8 kHz is plenty for a picture of the loudness.
  const RATE = 8000;

  function peaks(samples, columns) {
    const out = new Float32Array(columns);
    const per = Math.max(1, Math.floor(samples.length / columns));
    for (let c = 0; c < columns; c++) {
      let peak = 0;
      const end = Math.min(samples.length, (c + 1) * per);
      for (let i = c * per; i < end; i++) {
        const v = Math.abs(samples[i]);
        if (v > peak) peak = v;
      }
      out[c] = peak;
    }
    return out;
  }

  function paint(canvas, values) {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    // The page's own colours, so the waveform follows the light or dark scheme.
    ctx.fillStyle = getComputedStyle(canvas).color;
    const loudest = Math.max(...values, 1e-6);
    const bar = width / values.length;
    const middle = height / 2;
    values.forEach((v, i) => {
      // Scaled to the loudest moment, with a floor so silence still shows as a line.
      const h = Math.max(ratio, (v / loudest) * (height - 2 * ratio));
      ctx.fillRect(i * bar, middle - h / 2, Math.max(ratio, bar * 0.7), h);
    });
  }

  async function draw(canvas, url) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    const data = await response.arrayBuffer();
    const context = new OfflineAudioContext(1, 1, RATE);
    const buffer = await context.decodeAudioData(data);
    canvas.hidden = false;
    const columns = Math.max(16, Math.min(160, Math.floor(canvas.clientWidth / 4)));
    paint(canvas, peaks(buffer.getChannelData(0), columns));
    canvas.dataset.drawn = "1";
  }

  window.SonifyWave = { draw };
})();
