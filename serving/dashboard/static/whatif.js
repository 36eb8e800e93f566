// What-if panel: scores the edited feature values with POST /v1/score (session cookie + CSRF header)
// and shows the new figures, action and reasons in place. Builds DOM nodes with textContent only.
(function () {
  "use strict";
  const form = document.getElementById("whatif-form");
  const out = document.getElementById("whatif-result");
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (!form || !out || !meta) return;
  const button = document.getElementById("whatif-submit");
  const pct = (p) => (p * 100).toFixed(1) + "%";
  const money = (v) => v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  // A figure the page or the API may not have (lifetime value of an old score, or of a customer the value
  // model cannot value): null, never NaN or 0.
  const known = (v) => (v === null || v === undefined || v === "" || !Number.isFinite(Number(v)) ? null : Number(v));
  const before = {
    probability: Number(form.dataset.probability),
    clv: known(form.dataset.clv),
    valueAtRisk: known(form.dataset.valueAtRisk),
  };

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  // The change against the stored score; only a change of risk is coloured (up = worse).
  function change(now, was, format, points) {
    if (now === null || was === null) return undefined;
    const delta = points ? (now - was) * 100 : now - was;
    if (Math.abs(delta) < (points ? 0.05 : 0.005)) return el("span", "no change", "change");
    const sign = delta > 0 ? "+" : "−";
    const size = points ? Math.abs(delta).toFixed(1) + " points" : format(Math.abs(delta));
    return el("span", sign + size, "change" + (points ? (delta > 0 ? " up" : " down") : ""));
  }

  function figure(list, label, value, delta) {
    const row = el("div");
    row.append(el("dt", label));
    const dd = el("dd", value);
    if (delta) dd.append(" ", delta);
    row.append(dd);
    list.append(row);
  }

  function show(score) {
    out.replaceChildren();
    out.classList.remove("error");
    out.append(el("h3", "Result of the what-if"));
    const list = el("dl", undefined, "metrics");
    list.id = "whatif-figures";
    figure(list, "Churn probability", pct(score.churn_probability),
      change(score.churn_probability, before.probability, pct, true));
    const lifetime = known(score.clv && score.clv.residual_value);
    const atRisk = known(score.value_at_risk);
    figure(list, "Lifetime value (discounted, to the end of the relationship)",
      lifetime === null ? "not available" : money(lifetime), change(lifetime, before.clv, money, false));
    figure(list, "Value at risk", atRisk === null ? "not available" : money(atRisk),
      change(atRisk, before.valueAtRisk, money, false));
    const revenue = known(score.expected_revenue_90d);
    if (revenue !== null) figure(list, "Expected revenue over the horizon", money(revenue));
    figure(list, "Risk tier", score.risk_tier);
    out.append(list);
    const action = el("p");
    action.append("Action: ", el("strong", score.action.label),
      " (expected net value " + money(score.action.expected_net_value) + ")");
    out.append(action, el("p", score.action.why, "why"));
    out.append(el("h3", "Reasons"));
    const reasons = el("ol", undefined, "reason-list");
    for (const r of score.reasons) {
      const item = el("li");
      const sign = r.contribution > 0 ? "+" : "−";
      item.append(el("span", r.direction, "direction " + (r.contribution > 0 ? "up" : "down")), " ",
        r.sentence + " (" + sign + Math.abs(r.contribution).toFixed(2) + " log-odds)");
      reasons.append(item);
    }
    out.append(reasons);
    if (score.missing_features && score.missing_features.length) {
      out.append(el("p", "Treated as unknown: " + score.missing_features.join(", ") + ".", "hint"));
    }
    out.hidden = false;
  }

  function fail(message) {
    out.replaceChildren(el("p", "The what-if could not be scored: " + message));
    out.classList.add("error");
    out.hidden = false;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!form.reportValidity()) return;
    const features = {};
    for (const input of form.querySelectorAll("[data-feature]")) {
      const raw = input.value.trim();
      features[input.dataset.feature] = raw === "" ? null : input.dataset.kind === "number" ? Number(raw) : raw;
    }
    button.disabled = true;
    out.setAttribute("aria-busy", "true");
    try {
      const response = await fetch("/v1/score", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-Churnguard-CSRF": meta.content },
        body: JSON.stringify({ records: [{ customer_id: form.dataset.customer, features: features }] }),
      });
      const body = await response.json().catch(() => null);
      if (response.status === 401 || response.status === 403) {
        fail("your session has ended. Reload the page to sign in again.");
      } else if (!response.ok || !body || !body.scores) {
        fail((body && body.error && body.error.message) || "the server answered " + response.status + ".");
      } else {
        show(body.scores[0]);
      }
    } catch (error) {
      fail("the server could not be reached.");
    } finally {
      button.disabled = false;
      out.removeAttribute("aria-busy");
    }
  });
})();
