/**
 * The HTTP side shared by every transport: URLs, headers, JSON requests and
 * the server's `{error: {code, message}}` bodies turned into HTTPStatusError.
 */

import { HTTPStatusError, TransportError, ProtocolError, TokenwireError, statusError } from './errors.js';

export class Http {
  /**
   * @param {object} options
   * @param {string} [options.baseUrl] '' = same origin
   * @param {typeof fetch} [options.fetch]
   * @param {Record<string,string> | (() => Record<string,string> | Promise<Record<string,string>>)} [options.headers]
   * @param {RequestCredentials} [options.credentials]
   * @param {string} [options.token] a stream's read_token or control_token
   * @param {() => string | Promise<string>} [options.refreshToken] a new token when the server says it expired
   */
  constructor({ baseUrl = '', fetch: fetchImpl, headers, credentials, token, refreshToken } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    // A detached window.fetch throws "Illegal invocation": keep the call on globalThis.
    this._fetch = fetchImpl ?? (typeof globalThis.fetch === 'function' ? (...a) => globalThis.fetch(...a) : null);
    this._headers = headers;
    this.credentials = credentials;
    this.token = token ?? null;
    this.refreshToken = refreshToken ?? null;
    this._refreshing = null;
  }

  /**
   * A new token after `rejected` expired: one refresh at a time, shared by every
   * caller that saw the same token fail. False without a refreshToken callback.
   */
  async refresh(rejected) {
    if (!this.refreshToken) return false;
    if (this.token !== rejected) return true; // someone refreshed meanwhile
    if (!this._refreshing) {
      this._refreshing = (async () => {
        try {
          const token = await this.refreshToken();
          if (typeof token !== 'string' || !token) throw new TokenwireError('refreshToken() must return a token string');
          this.token = token;
        } finally {
          this._refreshing = null;
        }
      })();
    }
    await this._refreshing;
    return true;
  }

  /** `{token}` for URLs that cannot carry headers (EventSource, WebSocket), else null. */
  tokenQuery() {
    return this.token ? { token: this.token } : null;
  }

  get canFetch() {
    return this._fetch !== null;
  }

  /** Absolute or same-origin URL for a path, with an optional query. */
  url(path, query) {
    let url = this.baseUrl + path;
    if (query) {
      const q = Object.entries(query)
        .filter(([, v]) => v !== undefined && v !== null)
        .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
        .join('&');
      if (q) url += (url.includes('?') ? '&' : '?') + q;
    }
    return url;
  }

  /** ws(s):// URL for a path, from baseUrl or, when it is empty or relative, the page's location. */
  wsUrl(path) {
    let base = this.baseUrl;
    if (!/^[a-z][a-z0-9+.-]*:/i.test(base)) {
      const loc = globalThis.location;
      if (!loc || !loc.host) throw new TokenwireError('a WebSocket needs an absolute baseUrl outside a browser page');
      base = `${loc.protocol}//${loc.host}${base}`;
    }
    const q = this.tokenQuery();
    const sep = path.includes('?') ? '&' : '?';
    return base.replace(/^http(s?):/i, 'ws$1:') + path + (q ? `${sep}token=${encodeURIComponent(q.token)}` : '');
  }

  async headers(extra) {
    const h = typeof this._headers === 'function' ? await this._headers() : this._headers;
    const auth = this.token ? { Authorization: `Bearer ${this.token}` } : {};
    return { ...auth, ...(h || {}), ...(extra || {}) };
  }

  /**
   * fetch with the client's headers; network failures become a retryable
   * TransportError. A 401 `token_expired` is refreshed through refreshToken and
   * sent once more; a second refusal is the answer.
   */
  async fetch(url, { method = 'GET', headers, body, signal } = {}) {
    if (!this.canFetch) throw new TokenwireError('no fetch() available; pass options.fetch');
    for (let attempt = 0; ; attempt++) {
      const used = this.token;
      const init = { method, headers: await this.headers(headers), signal, cache: 'no-store' };
      if (body !== undefined) init.body = body;
      if (this.credentials) init.credentials = this.credentials;
      let res;
      try {
        res = await this._fetch(url, init);
      } catch (err) {
        if (err && err.name === 'AbortError') throw err;
        throw new TransportError(`${method} ${url} failed: ${err && err.message ? err.message : err}`, { cause: err });
      }
      if (attempt > 0 || res.status !== 401 || !this.refreshToken || !(await isExpired(res))) return res;
      await this.refresh(used);
    }
  }

  /** A JSON request; a non-2xx answer throws HTTPStatusError. Returns the parsed body (null when empty). */
  async json(method, path, body, { signal } = {}) {
    const url = this.url(path);
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await this.fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    if (!res.ok) throw await errorFromResponse(res, method, url);
    const text = await res.text();
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new ProtocolError(`${method} ${url}: the answer is not JSON`, { cause: err });
    }
  }

  /**
   * POST /v1/streams. A network failure here is not retryable: the server may
   * have created the stream, and retrying would start a second generation.
   */
  async createStream(request, { signal } = {}) {
    let info;
    try {
      info = await this.json('POST', '/v1/streams', request, { signal });
    } catch (err) {
      if (err instanceof TransportError) throw new TransportError(err.message, { cause: err, retryable: false });
      throw err;
    }
    if (!info || typeof info.id !== 'string' || !info.id) throw new ProtocolError('POST /v1/streams answered without a stream id');
    return info;
  }

  /** DELETE /v1/streams/{id}: stop the stream. */
  cancelStream(id) {
    return this.json('DELETE', `/v1/streams/${encodeURIComponent(id)}`);
  }

  status(id) {
    return this.json('GET', `/v1/streams/${encodeURIComponent(id)}`);
  }
}

/** Whether a 401 says the token expired (read from a clone: the caller may still read the body). */
async function isExpired(res) {
  try {
    const body = await res.clone().json();
    return Boolean(body && body.error && body.error.code === 'token_expired');
  } catch {
    return false;
  }
}

/** Build an HTTPStatusError from a failed response, reading `{error: {code, message}}` when present. */
export async function errorFromResponse(res, method, url) {
  let code = `http_${res.status}`;
  let message = res.statusText || '';
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return statusError(res.status, code, message, { method, url });
}
