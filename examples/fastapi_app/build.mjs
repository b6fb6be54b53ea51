// Build the two pages into OUTDIR (default dist/), which app.py serves at /:
//   node build.mjs [OUTDIR]
// - index.html + chat.js: web/chat.jsx (React 19, useChat from @ai-sdk/react) bundled;
// - socketio.html + socket.io.min.js: the plain Socket.IO page and the client's own build.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = path.resolve(process.argv[2] ?? path.join(here, 'dist'));
mkdirSync(outdir, { recursive: true });

await build({
  absWorkingDir: here,
  entryPoints: ['web/chat.jsx'],
  outfile: path.join(outdir, 'chat.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  jsx: 'automatic',
  define: { 'process.env.NODE_ENV': '"production"' },
  minify: true,
  logLevel: 'warning',
});
copyFileSync(path.join(here, 'web', 'index.html'), path.join(outdir, 'index.html'));
copyFileSync(path.join(here, 'web', 'socketio.html'), path.join(outdir, 'socketio.html'));
copyFileSync(
  path.join(here, 'node_modules', 'socket.io-client', 'dist', 'socket.io.min.js'),
  path.join(outdir, 'socket.io.min.js'),
);
console.log(`built ${path.relative(process.cwd(), outdir) || '.'}`);
