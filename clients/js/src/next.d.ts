export interface ProxyStreamOptions {
  /** The tokenwire server, e.g. http://127.0.0.1:8000 */
  baseUrl: string;
  /** The incoming request: its `?after=` / Last-Event-ID resume, and its abort signal. */
  request?: Request;
  format?: 'sse' | 'ndjson';
  after?: number | string;
  headers?: Record<string, string>;
  fetch?: typeof fetch;
}

/** A Response streaming the server's events for `streamId`, unbuffered. */
export declare function proxyStream(streamId: string, options: ProxyStreamOptions): Promise<Response>;

export interface TokenwireProxyOptions {
  baseUrl: string;
  headers?: Record<string, string>;
  fetch?: typeof fetch;
}

type RouteHandler = (request: Request) => Promise<Response>;

/** Route handlers forwarding `…/v1/…` (everything but the WebSocket) to the server. */
export declare function tokenwireProxy(options: TokenwireProxyOptions): { GET: RouteHandler; POST: RouteHandler; DELETE: RouteHandler };
