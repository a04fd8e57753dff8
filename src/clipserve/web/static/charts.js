// Charts drawn by hand (no library, no CDN): the console's usage bars as SVG and the playground's heatmap.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const name in attributes) node.setAttribute(name, String(attributes[name]));
    return node;
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  // One bar per day: rect.bar[data-day][data-value]; `format` writes a value for labels and tooltips.
  function drawBarChart(container, days, values, format, label) {
    while (container.firstChild) container.removeChild(container.firstChild);
    // drawn at the container's own width, so labels keep their size on a phone
    const width = Math.max(280, Math.round(container.clientWidth || 720));
    const height = width < 500 ? 180 : 240, left = 56, right = 8, top = 12, bottom = 28;
    const plotW = width - left - right, plotH = height - top - bottom;
    const max = niceMax(Math.max.apply(null, values.concat([0])));
    const chart = svg("svg", {
      viewBox: "0 0 " + width + " " + height, width: width, height: height, role: "img", class: "bar-chart",
    });
    const title = svg("title", {});
    title.textContent = label;
    chart.appendChild(title);
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - (plotH * i) / 4;
      chart.appendChild(svg("line", { x1: left, x2: width - right, y1: y, y2: y, class: "grid-line" }));
      const tick = svg("text", { x: left - 6, y: y + 4, class: "axis-label", "text-anchor": "end" });
      tick.textContent = format((max * i) / 4, true);
      chart.appendChild(tick);
    }
    const slot = plotW / Math.max(days.length, 1);
    days.forEach(function (day, i) {
      const value = values[i];
      const h = max > 0 ? (plotH * value) / max : 0;
      const x = left + i * slot + slot * 0.15;
      const bar = svg("rect", {
        x: x.toFixed(2), y: (top + plotH - h).toFixed(2), width: (slot * 0.7).toFixed(2),
        height: Math.max(h, value > 0 ? 1 : 0).toFixed(2), rx: 2, class: "bar", "data-day": day, "data-value": value,
      });
      const tip = svg("title", {});
      tip.textContent = day + ": " + format(value, false);
      bar.appendChild(tip);
      chart.appendChild(bar);
      const every = width < 500 ? 10 : 5;
      if (i % every === 0 || i === days.length - 1) {
        const text = svg("text", { x: (x + slot * 0.35).toFixed(2), y: height - 8, class: "axis-label", "text-anchor": "middle" });
        text.textContent = day.slice(5);
        chart.appendChild(text);
      }
    });
    container.appendChild(chart);
  }

  // Cosine in [-1, 1] -> a light-to-deep blue (text stays dark on light cells, white on deep ones).
  function heatColor(cosine) {
    const t = Math.max(0, Math.min(1, (cosine + 1) / 2));
    const lightness = 97 - t * 62;
    return { background: "hsl(220, 70%, " + lightness.toFixed(1) + "%)", dark: lightness < 55 };
  }

  // rows x cols matrix into table#compare-heatmap: td.cell[data-row][data-col][data-cosine].
  function fillHeatmap(table, rowLabels, columnHeads, matrix) {
    const head = table.tHead, body = table.tBodies[0];
    while (head.firstChild) head.removeChild(head.firstChild);
    while (body.firstChild) body.removeChild(body.firstChild);
    const headRow = document.createElement("tr");
    const corner = document.createElement("th");
    corner.scope = "col";
    corner.textContent = "Text \\ Image";
    headRow.appendChild(corner);
    columnHeads.forEach(function (node) {
      const th = document.createElement("th");
      th.scope = "col";
      th.appendChild(node);
      headRow.appendChild(th);
    });
    head.appendChild(headRow);
    rowLabels.forEach(function (text, r) {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = text;
      tr.appendChild(th);
      matrix[r].forEach(function (cosine, c) {
        const td = document.createElement("td");
        td.className = "cell";
        td.setAttribute("data-row", String(r));
        td.setAttribute("data-col", String(c));
        td.setAttribute("data-cosine", String(cosine));
        td.textContent = cosine.toFixed(3);
        const color = heatColor(cosine);
        td.style.backgroundColor = color.background;
        if (color.dark) td.classList.add("cell-dark");
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.hidden = false; // empty until the first comparison
  }

  window.clipserveCharts = { drawBarChart: drawBarChart, fillHeatmap: fillHeatmap, heatColor: heatColor };
})();
