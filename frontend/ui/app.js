// Skycut's web page: live job rows from the phase events, job buttons sent without leaving the
// page, and the preview's pixel size. The page works without this script; it only saves reloads.
'use strict';

(function () {
  const base = document.body.dataset.base;
  const rows = document.getElementById('job-rows');
  const live = document.getElementById('live');

  function say(text) {
    if (live) live.textContent = text;
  }

  // The latest read of each job's row: an older read answered later must not undo a newer one.
  const reads = {};

  // Replaces a job's row with the server's rendering of it (or removes it once the job is gone).
  async function refreshRow(id) {
    const read = (reads[id] || 0) + 1;
    reads[id] = read;
    const response = await fetch(base + '/ui/jobs/' + encodeURIComponent(id), {
      credentials: 'same-origin',
    });
    if (reads[id] !== read) return;
    const old = document.getElementById('job-' + id);
    if (response.status === 404) {
      if (old) old.remove();
      return;
    }
    if (!response.ok) {
      say(await response.text());
      return;
    }
    const html = await response.text();
    if (reads[id] !== read) return;
    const template = document.createElement('template');
    template.innerHTML = html.trim();
    const row = template.content.querySelector('tr');
    if (!row) return;
    enhance(row);
    if (old) {
      old.replaceWith(row);
    } else {
      rows.prepend(row);
      const none = document.getElementById('no-jobs');
      if (none) none.remove();
    }
  }

  async function onAction(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const response = await fetch(form.action, {
      method: 'POST',
      body: new URLSearchParams(new FormData(form)),
      credentials: 'same-origin',
      redirect: 'manual',
    });
    if (response.type === 'opaqueredirect' || response.ok) {
      await refreshRow(form.dataset.job);
    } else {
      say(await response.text());
    }
  }

  function enhance(scope) {
    scope.querySelectorAll('form.action').forEach(function (form) {
      form.addEventListener('submit', onAction);
    });
  }

  function follow() {
    if (!rows || !window.EventSource) return;
    const events = new EventSource(base + '/jobs/events');
    // Each event's phase is shown at once, in the order the events come, then the whole row
    // (results, buttons) is read again.
    events.addEventListener('phase', function (event) {
      const change = JSON.parse(event.data);
      const row = document.getElementById('job-' + change.jobId);
      const phase = row && row.querySelector('span.phase');
      if (phase) {
        row.dataset.phase = change.phase;
        phase.dataset.phase = change.phase;
        phase.textContent = change.phase;
      }
      refreshRow(change.jobId);
    });
    // A bulk job's stamps done fill its bar as they are reported.
    events.addEventListener('progress', function (event) {
      const change = JSON.parse(event.data);
      const row = document.getElementById('job-' + change.jobId);
      const bar = row && row.querySelector('progress');
      const stamps = change.progress.find(function (count) { return count.name === 'stamps'; });
      if (bar && stamps) {
        bar.max = Math.max(stamps.total, 1);
        bar.value = stamps.done;
        bar.setAttribute('aria-label', 'Job ' + change.jobId.slice(0, 8) + ': ' + stamps.done +
          ' of ' + stamps.total + ' stamps');
      }
    });
    // Events were missed: every listed row is read again.
    events.addEventListener('resync', function () {
      rows.querySelectorAll('tr[id^="job-"]').forEach(function (row) {
        refreshRow(row.id.slice(4));
      });
    });
    events.addEventListener('open', function () {
      say('Following job phases live.');
    });
    events.addEventListener('error', function () {
      say('Live updates interrupted; reconnecting.');
    });
  }

  function describePreview() {
    const img = document.getElementById('preview');
    const size = document.getElementById('preview-size');
    if (!img || !size) return;
    const show = function () {
      size.textContent = img.naturalWidth + ' × ' + img.naturalHeight + ' pixels.';
    };
    if (img.complete && img.naturalWidth) show();
    img.addEventListener('load', show);
    img.addEventListener('error', function () {
      size.textContent = 'The preview could not be loaded.';
    });
  }

  if (rows) enhance(rows);
  describePreview();
  const heading = document.getElementById('result-heading');
  if (heading) heading.focus();
  follow();
})();
