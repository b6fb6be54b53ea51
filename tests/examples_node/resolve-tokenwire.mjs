// `node --import ./resolve-tokenwire.mjs …`: the `tokenwire/*` specifiers resolve to
// the browser package in clients/js/src, as `npm install tokenwire` would make them,
// so examples/nextjs's route runs under plain node without installing Next.js.
import { register } from 'node:module';

register(
  'data:text/javascript,' +
    encodeURIComponent(`
      const src = ${JSON.stringify(new URL('../../clients/js/src/', import.meta.url).href)};
      const entries = { tokenwire: 'tokenwire.js', 'tokenwire/next': 'next.js', 'tokenwire/react': 'react.js' };
      export async function resolve(specifier, context, next) {
        if (specifier in entries) return { url: src + entries[specifier], shortCircuit: true };
        return next(specifier, context);
      }
    `),
);
