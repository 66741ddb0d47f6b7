// Renders the OpenAPI document next to this page (openapi.json) as HTML.
// Only DOM APIs with textContent: nothing from the document is parsed as HTML.
"use strict";

(function () {
  const METHODS = ["get", "put", "post", "delete", "patch", "head", "options"];

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // The little Markdown the document uses: paragraphs, **bold** and `code`.
  function markdown(text) {
    const out = document.createDocumentFragment();
    for (const block of String(text || "").split(/\n\s*\n/)) {
      if (!block.trim()) continue;
      const p = el("p");
      for (const part of block.split(/(`[^`]+`|\*\*[^*]+\*\*)/)) {
        if (part.startsWith("`") && part.endsWith("`") && part.length > 1) {
          p.append(el("code", null, part.slice(1, -1)));
        } else if (part.startsWith("**") && part.endsWith("**") && part.length > 3) {
          p.append(el("strong", null, part.slice(2, -2)));
        } else {
          p.append(part.replace(/\s*\n\s*/g, " "));
        }
      }
      out.append(p);
    }
    return out;
  }

  function resolve(doc, value) {
    let seen = 0;
    while (value && typeof value.$ref === "string" && value.$ref.startsWith("#/") && seen++ < 10) {
      value = value.$ref.slice(2).split("/").reduce((node, key) => node && node[key], doc);
    }
    return value || {};
  }

  function refName(schema) {
    return schema && typeof schema.$ref === "string" ? schema.$ref.split("/").pop() : null;
  }

  function schemaLink(schema) {
    const name = refName(schema);
    if (name) return el("a", { href: "#schema-" + name }, name);
    if (schema && schema.type === "array" && schema.items) {
      const inner = schemaLink(schema.items);
      return el("span", null, "array of ", inner);
    }
    return el("code", null, JSON.stringify(schema));
  }

  function parametersTable(doc, parameters) {
    if (!parameters || !parameters.length) return null;
    const rows = parameters.map((raw) => {
      const p = resolve(doc, raw);
      return el("tr", null,
        el("td", null, el("code", null, p.name)),
        el("td", null, p.in),
        el("td", null, p.required ? "required" : ""),
        el("td", null, schemaLink(p.schema)),
        el("td", null, markdown(p.description)));
    });
    return el("table", null,
      el("thead", null, el("tr", null, ...["name", "in", "", "schema", ""].map((h) => el("th", null, h)))),
      el("tbody", null, ...rows));
  }

  function responsesTable(doc, responses) {
    const rows = Object.entries(responses || {}).map(([status, raw]) => {
      const response = resolve(doc, raw);
      const content = Object.entries(response.content || {}).map(([type, media]) =>
        el("div", null, el("span", { class: "muted" }, type + " "), schemaLink(media.schema)));
      const headers = Object.entries(response.headers || {})
        .filter(([name]) => name !== "X-Request-ID")
        .map(([name]) => el("code", null, name));
      const headerList = headers.length ? el("div", { class: "muted" }, "headers: ",
        ...headers.flatMap((h, i) => (i ? [", ", h] : [h]))) : null;
      return el("tr", null,
        el("td", { class: "status" }, status),
        el("td", null, markdown(response.description), headerList),
        el("td", null, ...content));
    });
    return el("table", null,
      el("thead", null, el("tr", null, el("th", null, "status"), el("th", null, "meaning"), el("th", null, "body"))),
      el("tbody", null, ...rows));
  }

  function operationSection(doc, path, method, op) {
    const security = (op.security || doc.security || []).flatMap((req) => Object.keys(req));
    const body = op.requestBody ? resolve(doc, op.requestBody) : null;
    return el("section", { id: "op-" + (op.operationId || method + path) },
      el("h3", null, el("span", { class: "method " + method }, method), path),
      el("p", null, el("strong", null, op.summary || "")),
      op.description ? markdown(op.description) : null,
      el("p", { class: "muted" }, security.length ? "Authorization: " + security.join(", ") : "No authorization."),
      parametersTable(doc, op.parameters),
      body ? el("p", null, "Body: ", ...Object.entries(body.content || {}).map(([type, media]) =>
        el("span", null, el("span", { class: "muted" }, type + " "), schemaLink(media.schema)))) : null,
      responsesTable(doc, op.responses));
  }

  function render(doc) {
    document.title = (doc.info && doc.info.title ? doc.info.title : "API") + " API";
    document.getElementById("title").textContent = document.title + " " + (doc.info.version || "");
    const content = document.getElementById("content");
    content.replaceChildren(markdown(doc.info.description));

    const byTag = new Map((doc.tags || []).map((t) => [t.name, []]));
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const method of METHODS) {
        if (!item[method]) continue;
        const tag = (item[method].tags || ["other"])[0];
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push([path, method, item[method]]);
      }
    }
    const toc = el("ul");
    for (const [tag, operations] of byTag) {
      if (!operations.length) continue;
      content.append(el("h2", { id: "tag-" + tag }, tag));
      for (const [path, method, op] of operations) {
        content.append(operationSection(doc, path, method, op));
        toc.append(el("li", null, el("a", { href: "#op-" + (op.operationId || method + path) },
          method.toUpperCase() + " " + path)));
      }
    }
    document.getElementById("toc").replaceChildren(toc);

    const schemas = (doc.components && doc.components.schemas) || {};
    content.append(el("h2", { id: "schemas" }, "schemas"));
    for (const [name, schema] of Object.entries(schemas)) {
      content.append(el("details", { id: "schema-" + name },
        el("summary", null, el("code", null, name)),
        el("pre", null, JSON.stringify(schema, null, 2))));
    }
    if (location.hash) {
      const target = document.getElementById(location.hash.slice(1));
      if (target) target.scrollIntoView();
    }
  }

  fetch("openapi.json", { headers: { Accept: "application/json" } })
    .then((response) => {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    })
    .then(render)
    .catch((error) => {
      document.getElementById("status").textContent = "Could not load openapi.json: " + error.message;
    });
})();
