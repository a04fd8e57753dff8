// The playground: classify, compare and search, each one call to the JSON API (charged like any call).
(function () {
  "use strict";
  const cs = window.clipserve;
  const $ = function (id) { return document.getElementById(id); };

  // --- tabs (role=tab; arrow keys, Home and End move between them) ---
  const tabs = Array.prototype.slice.call(document.querySelectorAll('[role="tab"]'));
  function select(tab) {
    tabs.forEach(function (other) {
      const selected = other === tab;
      other.setAttribute("aria-selected", selected ? "true" : "false");
      other.tabIndex = selected ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !selected;
    });
  }
  tabs.forEach(function (tab, i) {
    tab.addEventListener("click", function () { select(tab); });
    tab.addEventListener("keydown", function (event) {
      let next = null;
      if (event.key === "ArrowRight") next = tabs[(i + 1) % tabs.length];
      else if (event.key === "ArrowLeft") next = tabs[(i - 1 + tabs.length) % tabs.length];
      else if (event.key === "Home") next = tabs[0];
      else if (event.key === "End") next = tabs[tabs.length - 1];
      if (next) {
        event.preventDefault();
        select(next);
        next.focus();
      }
    });
  });

  function lines(text) {
    return text.split("\n").map(function (line) { return line.trim(); }).filter(function (line) { return line; });
  }

  function busy(button, on) {
    button.disabled = on;
    button.setAttribute("aria-busy", on ? "true" : "false");
  }

  // --- classify ---
  let classifyImage = null; // a data URI from a picked, dropped or pasted file
  let classifyReading = Promise.resolve(); // the file being read: a quick click on Classify waits for it
  function useClassifyFile(file) {
    if (!file) return Promise.resolve();
    classifyReading = cs.readAsDataURL(file).then(function (image) {
      classifyImage = image;
      const preview = $("classify-preview");
      preview.src = classifyImage;
      preview.hidden = false;
    });
    return classifyReading;
  }
  $("classify-file").addEventListener("change", function (event) {
    useClassifyFile(event.target.files[0]).catch(function (error) { cs.showError($("classify-error"), error); });
  });
  const drop = $("classify-drop");
  drop.addEventListener("dragover", function (event) { event.preventDefault(); drop.classList.add("dragging"); });
  drop.addEventListener("dragleave", function () { drop.classList.remove("dragging"); });
  drop.addEventListener("drop", function (event) {
    event.preventDefault();
    drop.classList.remove("dragging");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    useClassifyFile(file).catch(function (error) { cs.showError($("classify-error"), error); });
  });
  $("panel-classify").addEventListener("paste", function (event) {
    const items = event.clipboardData ? event.clipboardData.items : [];
    for (const item of items) {
      if (item.kind === "file" && item.type.indexOf("image/") === 0) {
        event.preventDefault();
        useClassifyFile(item.getAsFile()).catch(function (error) { cs.showError($("classify-error"), error); });
        return;
      }
    }
  });
  $("classify-url").addEventListener("input", function () {
    if ($("classify-url").value.trim()) classifyImage = null; // the link wins once typed
    $("classify-preview").hidden = true;
  });

  function showPredictions(predictions) {
    const list = $("classify-results");
    cs.clear(list);
    predictions.forEach(function (prediction) {
      const item = cs.el("li", "result");
      item.setAttribute("data-label", prediction.label);
      item.setAttribute("data-score", String(prediction.score));
      const percent = prediction.score * 100;
      const head = cs.el("div", "result-head");
      head.appendChild(cs.el("span", "label", prediction.label));
      head.appendChild(cs.el("span", "score", percent.toFixed(1) + "%"));
      item.appendChild(head);
      const track = cs.el("div", "bar-track");
      const bar = cs.el("div", "bar");
      bar.style.width = Math.max(0, Math.min(100, percent)).toFixed(2) + "%";
      track.appendChild(bar);
      item.appendChild(track);
      list.appendChild(item);
    });
  }

  $("classify-submit").addEventListener("click", async function () {
    const button = $("classify-submit");
    const errorBox = $("classify-error");
    cs.showError(errorBox, null);
    await classifyReading.catch(function () { return null; }); // a file that could not be read: shown when picked
    const image = classifyImage || $("classify-url").value.trim();
    const classifier = $("classify-classifier").value;
    const labels = lines($("classify-labels").value);
    if (!image) return cs.showError(errorBox, new Error("Choose, drop or paste an image, or give its URL."));
    let body;
    if (classifier) {
      body = { classifier: classifier, input: [image] }; // its own labels and weights: no labels, no template
    } else {
      if (!labels.length) return cs.showError(errorBox, new Error("Type at least one label."));
      body = { image: image, labels: labels };
      if ($("classify-template").value === "ensemble") body.template = "openai-imagenet";
    }
    busy(button, true);
    try {
      const answer = await cs.post("/v1/classify", body);
      showPredictions(answer.data[0].predictions);
    } catch (error) {
      cs.clear($("classify-results"));
      cs.showError(errorBox, error);
    } finally {
      busy(button, false);
    }
  });

  // A classifier brings its own labels: the label and prompt inputs only apply to zero-shot.
  function useClassifier() {
    const chosen = Boolean($("classify-classifier").value);
    $("classify-labels").disabled = chosen;
    $("classify-template").disabled = chosen;
  }
  $("classify-classifier").addEventListener("change", useClassifier);

  async function loadClassifiers() {
    const selectBox = $("classify-classifier");
    try {
      const classifiers = (await cs.get("/v1/classifiers")).data;
      while (selectBox.options.length > 1) selectBox.remove(1); // keep the zero-shot option
      classifiers.forEach(function (classifier) {
        const option = cs.el("option", "", classifier.name);
        option.value = classifier.id;
        selectBox.appendChild(option);
      });
    } catch (error) {
      cs.showError($("classify-error"), error);
    }
    useClassifier();
  }

  // --- compare ---
  function normalised(vector) {
    let norm = 0;
    for (const x of vector) norm += x * x;
    norm = Math.sqrt(norm) || 1;
    return vector.map(function (x) { return x / norm; });
  }
  function dot(a, b) {
    let sum = 0;
    for (let i = 0; i < a.length; i++) sum += a[i] * b[i];
    return sum;
  }

  $("compare-files").addEventListener("change", function () {
    const previews = $("compare-previews");
    cs.clear(previews);
    Array.prototype.forEach.call($("compare-files").files, function (file, i) {
      const img = cs.el("img", "thumb");
      img.alt = "Image " + (i + 1) + ": " + file.name;
      img.src = URL.createObjectURL(file);
      previews.appendChild(img);
    });
  });

  $("compare-submit").addEventListener("click", async function () {
    const button = $("compare-submit");
    const errorBox = $("compare-error");
    cs.showError(errorBox, null);
    const texts = lines($("compare-texts").value);
    const files = Array.prototype.slice.call($("compare-files").files);
    if (!texts.length || !files.length) {
      return cs.showError(errorBox, new Error("Give at least one text and pick at least one image."));
    }
    busy(button, true);
    try {
      const images = await Promise.all(files.map(cs.readAsDataURL));
      const answer = await cs.post("/v1/embeddings", { input: texts.concat(images), encoding_format: "float" });
      const vectors = answer.data.slice().sort(function (a, b) { return a.index - b.index; })
        .map(function (row) { return normalised(row.embedding); });
      const textVectors = vectors.slice(0, texts.length), imageVectors = vectors.slice(texts.length);
      const matrix = textVectors.map(function (t) { return imageVectors.map(function (v) { return dot(t, v); }); });
      const heads = images.map(function (uri, i) {
        const figure = cs.el("span", "col-head");
        const img = cs.el("img", "thumb");
        img.src = uri;
        img.alt = "";
        figure.appendChild(img);
        figure.appendChild(cs.el("span", "col-name", files[i].name));
        return figure;
      });
      window.clipserveCharts.fillHeatmap($("compare-heatmap"), texts, heads, matrix);
    } catch (error) {
      cs.showError(errorBox, error);
    } finally {
      busy(button, false);
    }
  });

  // --- search ---
  async function loadCollections() {
    const selectBox = $("search-collection");
    try {
      const collections = (await cs.get("/v1/collections")).data;
      cs.clear(selectBox);
      collections.forEach(function (collection) {
        const option = cs.el("option", "", collection.name + " (" + collection.item_count + ")");
        option.value = collection.name;
        selectBox.appendChild(option);
      });
      if (!collections.length) {
        const none = cs.el("option", "", "No collections yet");
        none.value = "";
        selectBox.appendChild(none);
      }
    } catch (error) {
      cs.showError($("search-error"), error);
    }
  }

  function imageUrlOf(metadata) {
    const url = metadata && metadata.image_url;
    if (typeof url !== "string") return null;
    return /^(https?:\/\/|data:image\/)/i.test(url) ? url : null; // never javascript: or anything else
  }

  function showHits(hits) {
    const grid = $("search-results");
    cs.clear(grid);
    if (!hits.length) grid.appendChild(cs.el("p", "muted", "No hits."));
    hits.forEach(function (hit) {
      const figure = cs.el("figure", "hit");
      figure.setAttribute("data-id", hit.id);
      figure.setAttribute("data-score", String(hit.score));
      const url = imageUrlOf(hit.metadata);
      if (url) {
        const img = document.createElement("img");
        img.referrerPolicy = "no-referrer";
        img.loading = "lazy";
        img.alt = "";
        img.addEventListener("error", function () { // unreachable image: say so instead of a broken icon
          img.replaceWith(cs.el("div", "hit-noimage", "image unavailable"));
        });
        img.src = url;
        figure.appendChild(img);
      } else {
        figure.appendChild(cs.el("div", "hit-noimage", "no image_url"));
      }
      const caption = document.createElement("figcaption");
      caption.appendChild(cs.el("span", "hit-id", hit.id));
      caption.appendChild(cs.el("span", "hit-score", hit.score.toFixed(3)));
      caption.appendChild(cs.el("code", "hit-metadata", JSON.stringify(hit.metadata)));
      figure.appendChild(caption);
      grid.appendChild(figure);
    });
  }

  $("search-submit").addEventListener("click", async function () {
    const button = $("search-submit");
    const errorBox = $("search-error");
    cs.showError(errorBox, null);
    const name = $("search-collection").value;
    if (!name) return cs.showError(errorBox, new Error("Pick a collection (create one with the API first)."));
    const file = $("search-file").files[0];
    const text = $("search-text").value.trim();
    let query;
    if (file) query = { image: await cs.readAsDataURL(file) };
    else if (text) query = { text: text };
    else return cs.showError(errorBox, new Error("Type a query or pick a query image."));
    busy(button, true);
    try {
      const answer = await cs.post("/v1/collections/" + encodeURIComponent(name) + "/search", { query: query, top_k: 12 });
      showHits(answer.results);
    } catch (error) {
      cs.showError(errorBox, error);
    } finally {
      busy(button, false);
    }
  });
  $("search-text").addEventListener("input", function () { if ($("search-text").value) $("search-file").value = ""; });

  loadClassifiers();
  loadCollections();
})();
