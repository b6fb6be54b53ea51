// In-memory stand-ins: a scripted transport (the test plays the server through
// each connection's sink) and a Storage.

export class FakeTransport {
  constructor() {
    this.connections = [];
    this.cancelled = [];
    this.observesHeartbeats = true;
  }

  connect(target, sink) {
    const c = { target, sink, closed: false, close: () => (c.closed = true) };
    this.connections.push(c);
    return c;
  }

  get last() {
    return this.connections[this.connections.length - 1];
  }

  cancel(id) {
    this.cancelled.push(id);
    return Promise.resolve(null);
  }

  close() {}
}

export class MemoryStorage {
  constructor() {
    this.map = new Map();
    this.writes = 0;
  }

  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }

  setItem(k, v) {
    this.writes++;
    this.map.set(k, String(v));
  }

  removeItem(k) {
    this.map.delete(k);
  }
}
