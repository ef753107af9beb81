// Sign-in page: sends the key once; the server answers with an HttpOnly session cookie.
'use strict';

document.addEventListener('DOMContentLoaded', () => {
  const form = document.querySelector('#login');
  const error = document.querySelector('#login-error');
  document.querySelector('#key').focus();
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    const key = document.querySelector('#key').value.trim();
    try {
      const res = await fetch('/dashboard/session', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key }) });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(body.error ? body.error.message : `HTTP ${res.status}`);
      const next = new URLSearchParams(location.search).get('next');
      // Only paths of this dashboard: a crafted link must not send a person elsewhere.
      const here = location.pathname.startsWith('/dashboard') && location.pathname !== '/dashboard/login';
      const target = new URL(next && /^\/dashboard(\/|$|\?|#)/.test(next) ? next : here ? location.pathname + location.search + location.hash : '/dashboard', location.href);
      // The sign-in page may have been served in place of the page asked for: then load that page again.
      if (target.pathname === location.pathname && target.search === location.search) location.reload();
      else location.assign(target.href);
    } catch (err) {
      error.textContent = `Could not sign in: ${err.message}`;
    }
  });
});
