// mailgateway web inbox: keyboard shortcuts, live refresh, presence and small conveniences.
// Every page works without this file; it only makes the work quicker. No inline scripts:
// the Content-Security-Policy allows script from this origin only.
"use strict";

(function () {
  const POLL_MS = 15000;
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const typing = (el) => el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));

  // ---- keyboard -------------------------------------------------------------------------
  function rows() { return Array.from(document.querySelectorAll("tr[data-href]")); }
  function messages() { return Array.from(document.querySelectorAll("[data-message]")); }

  function moveInbox(step) {
    const all = rows();
    if (!all.length) return;
    const at = all.findIndex((r) => r.classList.contains("current"));
    const next = all[Math.min(all.length - 1, Math.max(0, at < 0 ? 0 : at + step))];
    all.forEach((r) => { r.classList.remove("current"); r.removeAttribute("aria-current"); });
    next.classList.add("current");
    next.setAttribute("aria-current", "true");
    next.scrollIntoView({ block: "nearest" });
    const link = next.querySelector(".subject a");
    if (link) link.focus({ preventScroll: true });
  }

  function moveMessage(step) {
    const all = messages();
    if (!all.length) return;
    const at = all.indexOf(document.activeElement);
    const next = all[Math.min(all.length - 1, Math.max(0, at < 0 ? (step > 0 ? 0 : all.length - 1) : at + step))];
    next.focus();
  }

  function useShortcut(key) {
    const target = document.querySelector('[data-shortcut="' + key + '"]');
    if (!target || target.disabled) return false;
    if (typing(target)) {
      target.focus();
      if (target.scrollIntoView) target.scrollIntoView({ block: "center" });
    } else {
      target.click();
    }
    return true;
  }

  function openCurrent() {
    const row = document.querySelector("tr.current[data-href]");
    if (row) window.location.href = row.dataset.href;
    return Boolean(row);
  }

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && typing(event.target)) { event.target.blur(); return; }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const dialog = document.getElementById("shortcuts");
    if (dialog && dialog.open) return;
    const inbox = rows().length > 0;
    let done = true;
    switch (event.key) {
      case "j": inbox ? moveInbox(1) : moveMessage(1); break;
      case "k": inbox ? moveInbox(-1) : moveMessage(-1); break;
      case "o": done = openCurrent(); break;
      case "Enter": done = inbox && !event.target.closest("a, button") && openCurrent(); break;
      case "?": if (dialog) dialog.showModal(); break;
      case "/": case "r": case "n": case "a": case "s": done = useShortcut(event.key); break;
      default: done = false;
    }
    if (done) event.preventDefault();
  });

  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-show-shortcuts]")) {
      document.getElementById("shortcuts").showModal();
      return;
    }
    const row = event.target.closest("tr[data-href]");
    if (row && !event.target.closest("a, input, label, button")) window.location.href = row.dataset.href;
  });

  // ---- forms: confirm, submit once, select all ------------------------------------------
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) { event.preventDefault(); return; }
    if (form.hasAttribute("data-once")) {
      // after the browser has read the pressed button's name into the form data
      setTimeout(() => form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = true; }), 0);
    }
  });

  document.addEventListener("change", (event) => {
    if (!event.target.matches("[data-select-all]")) return;
    document.querySelectorAll('input[name="ids"][form="bulk"]').forEach((box) => { box.checked = event.target.checked; });
  });

  // ---- the inbox refreshes itself --------------------------------------------------------
  function watchInbox(holder) {
    const note = document.querySelector("[data-live-note]");
    async function poll() {
      if (document.hidden) return;
      const answer = await fetch(holder.dataset.updates, { headers: { Accept: "application/json" } });
      if (!answer.ok) return;
      const news = await answer.json();
      Object.entries(news.counts).forEach(([key, count]) => {
        const cell = document.querySelector('[data-count="' + key + '"]');
        if (cell) cell.textContent = count;
      });
      if (news.version === holder.dataset.version) return;
      holder.dataset.version = news.version;
      const list = await fetch(holder.dataset.rows);
      if (!list.ok) return;
      const picked = new Set(Array.from(holder.querySelectorAll('input[name="ids"]:checked')).map((b) => b.value));
      const current = (holder.querySelector("tr.current") || {}).dataset;
      holder.innerHTML = await list.text();
      holder.querySelectorAll('input[name="ids"]').forEach((box) => { box.checked = picked.has(box.value); });
      if (current) {
        const again = holder.querySelector('tr[data-id="' + current.id + '"]');
        if (again) again.classList.add("current");
      }
      if (note) note.textContent = "The list was updated with new activity.";
    }
    setInterval(() => { poll().catch(() => {}); }, POLL_MS);
  }

  // ---- who else is on this ticket --------------------------------------------------------
  function watchTicket(ticket) {
    const url = ticket.dataset.presence;
    const note = document.querySelector("[data-presence-note]");
    const arrived = document.querySelector("[data-arrived]");
    const reply = document.getElementById("reply-text");
    function form(extra) {
      const data = new FormData();
      data.append("csrf_token", csrf());
      data.append("composing", reply && reply.value.trim() ? "1" : "0");
      Object.entries(extra || {}).forEach(([k, v]) => data.append(k, v));
      return data;
    }
    async function beat() {
      const answer = await fetch(url, { method: "POST", body: form(), headers: { "X-CSRFToken": csrf() } });
      if (!answer.ok) return;
      const state = await answer.json();
      const text = state.viewers.map((v) => v.name + " is also " + (v.composing ? "replying to" : "viewing") + " this ticket.").join(" ");
      if (note) {
        note.textContent = text;
        note.classList.toggle("shown", Boolean(text));
      }
      if (arrived && state.newest > Number(ticket.dataset.newest)) arrived.hidden = false;
    }
    setInterval(() => { if (!document.hidden) beat().catch(() => {}); }, POLL_MS);
    window.addEventListener("pagehide", () => navigator.sendBeacon(url, form({ leave: "1" })));
  }

  // ---- canned responses go in at the cursor, without losing what is typed -----------------
  document.addEventListener("submit", async (event) => {
    const picker = event.target.closest("form[data-canned]");
    const reply = document.getElementById("reply-text");
    if (!picker || !reply || event.defaultPrevented) return;
    event.preventDefault();
    const name = picker.querySelector("select").value;
    const answer = await fetch(picker.dataset.canned + encodeURIComponent(name));
    if (!answer.ok) return;
    const text = (await answer.json()).text;
    const at = reply.selectionStart || reply.value.length;
    reply.value = reply.value.slice(0, at) + text + reply.value.slice(reply.selectionEnd || at);
    reply.focus();
    reply.selectionStart = reply.selectionEnd = at + text.length;
  });

  // ---- mail frames take the height of their content ---------------------------------------
  function fit(frame) {
    try {
      const doc = frame.contentDocument;
      if (doc && doc.documentElement) frame.style.height = (doc.documentElement.scrollHeight + 16) + "px";
    } catch (error) { /* not same-origin: keep the default height */ }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const holder = document.getElementById("rows");
    if (holder && holder.dataset.updates) watchInbox(holder);
    const ticket = document.querySelector("[data-presence]");
    if (ticket) watchTicket(ticket);
    document.querySelectorAll("iframe[data-autoheight]").forEach((frame) => {
      frame.addEventListener("load", () => fit(frame));
      const details = frame.closest("details");
      if (details) details.addEventListener("toggle", () => fit(frame));
    });
  });
})();
