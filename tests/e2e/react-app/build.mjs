// Bundle src/main.jsx (React 19 + tokenwire/react) into OUTDIR/app.js and copy
// index.html beside it:  node build.mjs OUTDIR
//
// `tokenwire` is a file: dependency, i.e. a symlink to clients/js, whose own
// node_modules (its dev dependencies) holds another React. Two Reacts in one
// bundle break hooks, so every `react` / `react-dom` import resolves from this
// app, as it would for an app that installed the package from the registry.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = path.resolve(process.argv[2] ?? path.join(here, 'dist'));
mkdirSync(outdir, { recursive: true });

const oneReact = {
  name: 'one-react',
  setup(b) {
    b.onResolve({ filter: /^react(-dom)?(\/.*)?$/ }, (args) =>
      args.resolveDir === here ? undefined : b.resolve(args.path, { kind: args.kind, resolveDir: here }),
    );
  },
};

await build({
  absWorkingDir: here,
  entryPoints: ['src/main.jsx'],
  outfile: path.join(outdir, 'app.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  jsx: 'automatic',
  plugins: [oneReact],
  define: { 'process.env.NODE_ENV': '"development"' },
  logLevel: 'warning',
});
copyFileSync(path.join(here, 'index.html'), path.join(outdir, 'index.html'));
console.log(`built ${path.relative(process.cwd(), outdir) || '.'}/app.js`);
