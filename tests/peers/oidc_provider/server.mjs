// A real OAuth 2.0 / OpenID Connect server (panva/oidc-provider) for Valetkey's tests.
//
// Usage: node server.mjs [PORT]   (PORT from argv, else $PORT, else 0 = ephemeral)
// Configuration: JSON in $VALETKEY_OIDC_PEER_CONFIG (see tests/peers/oidc.py for the fields).
//
// Prints one line `VALETKEY_PEER_READY {"url": ..., "port": ...}` on stdout once it listens.
// Test-only endpoints (not part of any standard):
//   GET  /__stats        counts of token-endpoint calls by grant type, and of other endpoints
//   POST /__stats/reset  zero the counts
// Listens on 127.0.0.1 only. Never use this configuration outside tests.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import * as http from 'node:http';
import process from 'node:process';

import Provider, { errors } from 'oidc-provider';

const READY = 'VALETKEY_PEER_READY';

function readConfig() {
  const raw = process.env.VALETKEY_OIDC_PEER_CONFIG || '{}';
  const config = JSON.parse(raw);
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new TypeError('VALETKEY_OIDC_PEER_CONFIG must be a JSON object');
  }
  return config;
}

function signingKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, kid: `rsa-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' },
    { ...ec, kid: `ec-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'ES256' },
  ];
}

function ttlFunction(seconds, fallback) {
  const value = seconds ?? fallback;
  return (_ctx, token) => token?.resourceServer?.accessTokenTTL || value;
}

function buildConfiguration(config) {
  const ttl = config.ttl || {};
  const resourceServers = config.resourceServers || {};
  const refresh = config.refreshTokens || {};
  const features = config.features || {};
  const enabled = (name, dflt = true) => ({ enabled: features[name] ?? dflt });

  return {
    clients: config.clients || [],
    jwks: { keys: signingKeys() },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    scopes: ['openid', 'offline_access', ...(config.scopes || [])],
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    pkce: { required: () => config.pkceRequired ?? true },
    clientBasedCORS: () => false,
    async findAccount(_ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return { sub, email: `${sub}@example.test`, email_verified: true };
        },
      };
    },
    async issueRefreshToken(_ctx, client, source) {
      if (!client.grantTypeAllowed('refresh_token')) return false;
      return refresh.issue === 'offline_access' ? source.scopes.has('offline_access') : true;
    },
    rotateRefreshToken: () => refresh.rotate ?? true,
    ttl: {
      AccessToken: ttlFunction(ttl.AccessToken, 300),
      AuthorizationCode: () => ttl.AuthorizationCode ?? 60,
      ClientCredentials: ttlFunction(ttl.ClientCredentials, 300),
      DeviceCode: () => ttl.DeviceCode ?? 300,
      Grant: () => ttl.Grant ?? 3600,
      IdToken: () => ttl.IdToken ?? 300,
      Interaction: () => ttl.Interaction ?? 600,
      RefreshToken: () => ttl.RefreshToken ?? 3600,
      Session: () => ttl.Session ?? 3600,
    },
    features: {
      devInteractions: enabled('devInteractions'),
      clientCredentials: enabled('clientCredentials'),
      introspection: {
        ...enabled('introspection'),
        // Any authenticated confidential client may introspect (test peer policy).
        allowedPolicy: async (_ctx, client) => client.clientAuthMethod !== 'none',
      },
      revocation: {
        ...enabled('revocation'),
        // RFC 7009 §2.1: a client may revoke only the tokens issued to it.
        async allowedPolicy(_ctx, client, token) {
          if (token.clientId !== client.clientId) {
            if (client.clientAuthMethod === 'none') return false;
            throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
          }
          return true;
        },
      },
      deviceFlow: enabled('deviceFlow'),
      resourceIndicators: {
        ...enabled('resourceIndicators'),
        async defaultResource(_ctx, _client, oneOf) {
          if (oneOf) return oneOf;
          return config.defaultResource || undefined;
        },
        useGrantedResource: async () => true,
        async getResourceServerInfo(_ctx, indicator) {
          const server = resourceServers[indicator];
          if (!server) throw new errors.InvalidTarget();
          return {
            scope: server.scope || '',
            audience: server.audience || indicator,
            accessTokenTTL: server.accessTokenTTL,
            accessTokenFormat: server.accessTokenFormat || 'opaque',
            ...(server.accessTokenFormat === 'jwt' ? { jwt: { sign: { alg: 'RS256' } } } : {}),
          };
        },
      },
    },
  };
}

function newStats() {
  return { token: {}, tokenErrors: {}, revocation: 0, introspection: 0, deviceAuthorization: 0 };
}

async function main() {
  const config = readConfig();
  const port = Number(process.argv[2] ?? process.env.PORT ?? 0);
  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const actualPort = server.address().port;
  const issuer = `http://127.0.0.1:${actualPort}`;

  const provider = new Provider(issuer, buildConfiguration(config));
  let stats = newStats();

  provider.use(async (ctx, next) => {
    if (ctx.path === '/__stats' && ctx.method === 'GET') {
      ctx.body = stats;
      return;
    }
    if (ctx.path === '/__stats/reset' && ctx.method === 'POST') {
      stats = newStats();
      ctx.status = 204;
      return;
    }
    await next();
    if (ctx.method !== 'POST') return;
    if (ctx.path === '/token') {
      const grantType = ctx.oidc?.params?.grant_type || 'unknown';
      stats.token[grantType] = (stats.token[grantType] || 0) + 1;
      if (ctx.status >= 400) {
        stats.tokenErrors[grantType] = (stats.tokenErrors[grantType] || 0) + 1;
      }
    } else if (ctx.path === '/token/revocation') {
      stats.revocation += 1;
    } else if (ctx.path === '/token/introspection') {
      stats.introspection += 1;
    } else if (ctx.path === '/device/auth') {
      stats.deviceAuthorization += 1;
    }
  });

  server.on('request', provider.callback());
  process.stdout.write(`${READY} ${JSON.stringify({ url: issuer, port: actualPort })}\n`);

  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  process.stderr.write(`valetkey oidc peer failed to start: ${err?.stack || err}\n`);
  process.exit(1);
});
