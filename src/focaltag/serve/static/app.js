// focaltag serve: the page. Plain JS, no external assets: it must work with no internet.
"use strict";

(function () {
  const TOKEN_KEY = "focaltag.serve.token";
  const $ = (sel) => document.querySelector(sel);
  const state = { token: localStorage.getItem(TOKEN_KEY) || "", models: [], results: [], queue: [], busy: false,
                  library: null };

  function authHeaders() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  function shortTag(tag) {
    const cut = tag.lastIndexOf("---");
    return cut >= 0 ? tag.slice(cut + 3) : tag;
  }

  function mmss(seconds) {
    if (!isFinite(seconds)) return "?";
    const s = Math.round(seconds);
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function setStatus(text) { $("#status").textContent = text; }

  // -- token -------------------------------------------------------------------------------------------
  function askToken(message) {
    $("#token-box").hidden = false;
    $("#token-error").textContent = message || "";
    $("#token-input").focus();
  }

  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("#token-input").value.trim();
    localStorage.setItem(TOKEN_KEY, state.token);
    loadModels();
  });

  // -- models ------------------------------------------------------------------------------------------
  async function loadModels() {
    let response;
    try {
      response = await fetch("/api/v1/models", { headers: authHeaders() });
    } catch (err) {
      setStatus("cannot reach the server: " + err);
      return;
    }
    if (response.status === 401) {
      askToken(state.token ? "That token was not accepted." : "");
      setStatus("waiting for the token");
      return;
    }
    if (!response.ok) {
      setStatus("the server answered " + response.status);
      return;
    }
    $("#token-box").hidden = true;
    const info = await response.json();
    state.models = info.models;
    state.library = info.library || null;  // serve --library: similar tracks are shown for each file
    const select = $("#model");
    select.textContent = "";
    for (const model of info.models) {
      const option = document.createElement("option");
      option.value = model.name;
      option.textContent = model.name + " (" + model.n_tags + " tags" + (model.has_thresholds ? ", thresholds" : "") + ")";
      option.selected = model.default;
      select.appendChild(option);
    }
    $("#limit").textContent = (info.max_upload_bytes / 1048576).toFixed(0);
    setStatus("ready");
    pump();
  }

  // -- files -------------------------------------------------------------------------------------------
  function addFiles(fileList) {
    for (const file of fileList) {
      const card = document.importNode($("#card-template").content, true).firstElementChild;
      card.querySelector(".name").textContent = file.name;
      card.querySelector(".state").textContent = "waiting";
      $("#results").prepend(card);
      state.queue.push({ file, card });
    }
    $("#clear").disabled = false;
    pump();
  }

  function fail(card, message, file) {
    if (file) {  // a file the server could not tag: kept in the download, as the API reports it
      state.results.push({ file: file.name, error: message });
      $("#download").disabled = false;
    }
    card.classList.add("failed");
    card.querySelector(".progress").remove();
    card.querySelector(".state").textContent = "";
    const error = card.querySelector(".error");
    error.textContent = message;
    error.hidden = false;
  }

  function pump() {
    if (state.busy || !state.queue.length || !state.models.length) return;
    const job = state.queue.shift();
    state.busy = true;
    send(job).finally(() => {
      state.busy = false;
      setStatus(state.queue.length ? state.queue.length + " file(s) waiting" : "ready");
      pump();
    });
  }

  function send({ file, card }) {
    return new Promise((resolve) => {
      const form = new FormData();
      form.append("file", file, file.name);
      form.append("model", $("#model").value);
      form.append("top_k", String(Math.max(1, parseInt($("#top-k").value, 10) || 8)));
      form.append("taggram", $("#want-taggram").checked ? "true" : "false");
      const xhr = new XMLHttpRequest();
      const bar = card.querySelector(".progress-bar");
      const stateText = card.querySelector(".state");
      xhr.open("POST", "/api/v1/tag");
      for (const [key, value] of Object.entries(authHeaders())) xhr.setRequestHeader(key, value);
      xhr.responseType = "json";
      stateText.textContent = "uploading";
      setStatus("tagging " + file.name);
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) bar.style.width = (100 * event.loaded / event.total).toFixed(1) + "%";
      };
      xhr.upload.onload = () => {
        stateText.textContent = "tagging…";
        card.querySelector(".progress").classList.add("busy");
      };
      xhr.onload = () => {
        const body = xhr.response;
        if (xhr.status === 401) {
          askToken("The server needs a token.");
          fail(card, "the server needs a token: enter it above, then drop the file again");
        } else if (xhr.status === 200 && Array.isArray(body) && body.length) {
          const result = body[0];
          if (result.error) fail(card, result.error, file);
          else {
            render(card, result);
            if (state.library) { similar(file, card).finally(resolve); return; }
          }
        } else {
          fail(card, (body && body.error) || ("the server answered " + xhr.status), file);
        }
        resolve();
      };
      xhr.onerror = () => { fail(card, "network error: is the server still running?"); resolve(); };
      xhr.send(form);
    });
  }

  function render(card, result) {
    state.results.push(result);
    $("#download").disabled = false;
    card.querySelector(".progress").remove();
    card.querySelector(".state").textContent = "";
    card.querySelector(".meta").textContent = mmss(result.duration) + " · model " + (result.model || "?");
    const bars = card.querySelector(".bars");
    const decided = result.decisions || null;
    for (const item of result.top) {
      const row = document.createElement("li");
      row.className = "bar";
      const label = document.createElement("span");
      label.className = "label" + (decided && decided[item.tag] ? " on" : "");
      label.textContent = shortTag(item.tag) + (decided ? (decided[item.tag] ? " ✓" : "") : "");
      label.title = item.tag;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.display = "block";
      fill.style.width = (100 * item.probability).toFixed(1) + "%";
      track.appendChild(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = item.probability.toFixed(3);
      row.append(label, track, value);
      bars.appendChild(row);
    }
    if (decided) {
      const box = card.querySelector(".decisions");
      const list = box.querySelector("ul");
      const yes = Object.keys(decided).filter((t) => decided[t]);
      for (const tag of yes) {
        const chip = document.createElement("li");
        chip.className = "yes";
        chip.textContent = "yes: " + shortTag(tag);
        list.appendChild(chip);
      }
      const no = document.createElement("li");
      no.textContent = yes.length ? "no: the other " + (Object.keys(decided).length - yes.length) : "no tag above its threshold";
      list.appendChild(no);
      box.hidden = false;
    }
    if (result.taggram_png) {
      const img = card.querySelector(".taggram");
      img.src = "data:image/png;base64," + result.taggram_png;
      img.hidden = false;
    }
    card.querySelector(".body").hidden = false;
  }

  // -- similar tracks (serve --library) ---------------------------------------------------------------------
  async function similar(file, card) {
    const box = card.querySelector(".similar");
    const list = box.querySelector("ol");
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("n", "10");
    setStatus("finding tracks like " + file.name);
    let body = null;
    let status = 0;
    try {
      const response = await fetch("/api/v1/similar", { method: "POST", headers: authHeaders(), body: form });
      status = response.status;
      body = await response.json();
    } catch (err) {
      body = { error: "network error: " + err };
    }
    box.hidden = false;
    if (status !== 200 || !body || !Array.isArray(body.results)) {
      const item = document.createElement("li");
      item.className = "error";
      item.textContent = (body && body.error) || ("the server answered " + status);
      list.appendChild(item);
      return;
    }
    if (!body.results.length) {
      const item = document.createElement("li");
      item.textContent = "no other track of the library has an embedding";
      list.appendChild(item);
    }
    for (const match of body.results) {
      const item = document.createElement("li");
      const name = match.file.split(/[\\/]/).pop();
      item.textContent = name + " · " + match.score.toFixed(3);
      item.title = match.file;
      list.appendChild(item);
    }
  }

  // -- drop zone, picker, buttons ------------------------------------------------------------------------
  const drop = $("#drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (event) => { if (event.dataTransfer) addFiles(event.dataTransfer.files); });
  window.addEventListener("dragover", (event) => event.preventDefault());  // a near miss must not navigate away
  window.addEventListener("drop", (event) => event.preventDefault());
  $("#file-input").addEventListener("change", (event) => {
    addFiles(event.target.files);
    event.target.value = "";
  });
  $("#download").addEventListener("click", () => {
    const blob = new Blob([JSON.stringify(state.results, null, 2) + "\n"], { type: "application/json" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "focaltag-results.json";
    document.body.appendChild(link);
    link.click();
    setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  });
  $("#clear").addEventListener("click", () => {
    state.results = [];
    $("#results").textContent = "";
    $("#download").disabled = true;
    $("#clear").disabled = true;
  });

  loadModels();
})();
