/* The page's only script: sort and filter the index, and show one neuron, whose page is loaded
   from neurons/<id>.js the first time it is opened (a script tag: browsers load those from disk,
   where they refuse fetch). Every page was rendered by the templates; nothing is built here. */
(function () {
  "use strict";
  var tbody = document.querySelector("#neurons tbody");
  var rows = Array.prototype.slice.call(tbody.rows);
  var pages = {};

  window.tlln = {
    loaded: function (id, html) {
      pages[id] = html;
      if (currentId() === id) { show(id); }
    }
  };

  function currentId() {
    var m = /^#(L\d+-\d+)$/.exec(window.location.hash);
    return m ? m[1] : null;
  }

  function show(id) {
    var body = document.getElementById("neuron-body");
    body.innerHTML = pages[id];
    document.getElementById("neuron").hidden = false;
    document.getElementById("index").hidden = true;
    document.title = id + " · " + document.querySelector("header h1").textContent;
    window.scrollTo(0, 0);
  }

  function route() {
    var id = currentId();
    if (!id) {
      document.getElementById("neuron").hidden = true;
      document.getElementById("index").hidden = false;
      return;
    }
    if (pages[id] !== undefined) { show(id); return; }
    var s = document.createElement("script");
    s.src = "neurons/" + id + ".js";
    s.onerror = function () {
      document.getElementById("neuron-body").textContent = "no page for neuron " + id + " in this site";
      document.getElementById("neuron").hidden = false;
      document.getElementById("index").hidden = true;
    };
    document.head.appendChild(s);
  }

  function filter() {
    var lang = document.getElementById("f-lang").value;
    var layer = document.getElementById("f-layer").value;
    var spec = parseFloat(document.getElementById("f-spec").value) || 0;
    var shared = parseInt(document.getElementById("f-shared").value, 10) || 1;
    var shown = 0;
    rows.forEach(function (r) {
      var ok = (!lang || r.dataset.langs.indexOf(" " + lang + " ") >= 0) &&
               (!layer || r.dataset.layer === layer) &&
               parseFloat(r.dataset.spec) >= spec && parseInt(r.dataset.shared, 10) >= shared;
      r.hidden = !ok;
      if (ok) { shown += 1; }
    });
    document.getElementById("count").textContent = shown + " of " + rows.length + " neurons";
  }

  function sortBy(th) {
    var key = th.dataset.key, num = th.dataset.type === "num";
    var desc = !th.classList.contains("desc");
    document.querySelectorAll("#neurons th").forEach(function (h) { h.classList.remove("asc", "desc"); });
    th.classList.add(desc ? "desc" : "asc");
    var value = function (r) {
      if (key === "id") { return [parseInt(r.dataset.layer, 10), parseInt(r.dataset.index, 10)]; }
      var v = r.dataset[key];
      return num ? parseFloat(v) : v;
    };
    rows.sort(function (a, b) {
      var x = value(a), y = value(b), c;
      if (Array.isArray(x)) { c = x[0] - y[0] || x[1] - y[1]; }
      else { c = num ? x - y : (x < y ? -1 : x > y ? 1 : 0); }
      return desc ? -c : c;
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
  }

  document.querySelectorAll("#neurons th").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); });
  });
  ["f-lang", "f-layer", "f-spec", "f-shared"].forEach(function (id) {
    document.getElementById(id).addEventListener("input", filter);
  });
  window.addEventListener("hashchange", route);
  filter();
  route();
})();
