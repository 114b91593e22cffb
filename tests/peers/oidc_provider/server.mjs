// A real OAuth 2.0 / OpenID Connect server (panva/oidc-provider) for Valetkey's tests.
//
// Usage: node server.mjs [PORT]   (PORT from argv, else $PORT, else 0 = ephemeral)
// Configuration: JSON in $VALETKEY_OIDC_PEER_CONFIG (see tests/peers/oidc.py for the fields).
//
// Prints one line `VALETKEY_PEER_READY {"url": ..., "port": ...}` on stdout once it listens.
// Extension grants, registered only when configured (oidc-provider has neither built in):
//   urn:ietf:params:oauth:grant-type:jwt-bearer      RFC 7523 §2.1/§3, see jwtBearerGrant()
//   urn:ietf:params:oauth:grant-type:token-exchange  RFC 8693 §2, see tokenExchangeGrant()
// Test-only endpoints (not part of any standard):
//   GET  /__stats        counts of token-endpoint calls by grant type, and of other endpoints
//   POST /__stats/reset  zero the counts
// Listens on 127.0.0.1 only. Never use this configuration outside tests.

import { createPublicKey, generateKeyPairSync, randomBytes, verify as verifySignature } from 'node:crypto';
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

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const CLOCK_TOLERANCE = 30;

function grantError(description) {
  return new errors.CustomOIDCProviderError('invalid_grant', description);
}

function b64json(segment, what) {
  try {
    const value = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error();
    return value;
  } catch {
    throw grantError(`the assertion ${what} is not a JSON object`);
  }
}

// Verify a compact JWS with a public JWK; only RS256 and ES256, and only the key's own alg.
function verifyJws(assertion, jwk) {
  const parts = assertion.split('.');
  if (parts.length !== 3) throw grantError('the assertion is not a compact JWS');
  const header = b64json(parts[0], 'header');
  const payload = b64json(parts[1], 'payload');
  const expected = jwk.kty === 'RSA' ? 'RS256' : jwk.kty === 'EC' ? 'ES256' : undefined;
  if (!expected || header.alg !== expected || (jwk.alg && jwk.alg !== header.alg)) {
    throw grantError('the assertion alg does not match the trusted key');
  }
  const key = createPublicKey({ key: jwk, format: 'jwk' });
  const ok = verifySignature(
    'sha256',
    Buffer.from(`${parts[0]}.${parts[1]}`),
    expected === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key,
    Buffer.from(parts[2], 'base64url'),
  );
  if (!ok) throw grantError('the assertion signature is invalid');
  return { header, payload };
}

function requestedScopes(ctx, ceiling) {
  const asked = ctx.oidc.params.scope ? ctx.oidc.params.scope.split(' ').filter(Boolean) : [...ceiling];
  const refused = asked.filter((scope) => !ceiling.has(scope));
  if (refused.length) {
    throw new errors.InvalidScope('requested scope is not allowed', refused.join(' '));
  }
  return asked;
}

// RFC 7523 §2.1 and §3: the assertion's iss must be a trusted issuer whose key verifies it;
// sub names the principal; aud must identify this server (issuer or token endpoint URL);
// exp is required and in the future; nbf/iat, when present, not in the future; a jti is
// accepted once. Scopes: the client's registered ceiling, narrowed by the request.
function jwtBearerGrant(settings, usedJtis) {
  const trusted = settings.issuers || {};
  return async function jwtBearerHandler(ctx) {
    const { params, client, provider } = ctx.oidc;
    if (!params.assertion) throw new errors.InvalidRequest('missing required parameter (assertion)');
    const { payload } = (() => {
      const unverified = b64json(params.assertion.split('.')[1] || '', 'payload');
      const jwk = typeof unverified.iss === 'string' ? trusted[unverified.iss] : undefined;
      if (!jwk) throw grantError('the assertion issuer is not trusted');
      return verifyJws(params.assertion, jwk);
    })();
    const now = Math.floor(Date.now() / 1000);
    if (typeof payload.sub !== 'string' || !payload.sub) throw grantError('the assertion has no sub');
    const audiences = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
    const accepted = new Set([provider.issuer, `${provider.issuer}/token`]);
    if (!audiences.some((aud) => accepted.has(aud))) {
      throw grantError('the assertion audience does not identify this server');
    }
    if (typeof payload.exp !== 'number') throw grantError('the assertion has no exp');
    if (payload.exp <= now - CLOCK_TOLERANCE) throw grantError('the assertion has expired');
    if (typeof payload.nbf === 'number' && payload.nbf > now + CLOCK_TOLERANCE) {
      throw grantError('the assertion is not valid yet');
    }
    if (typeof payload.iat === 'number' && payload.iat > now + CLOCK_TOLERANCE) {
      throw grantError('the assertion was issued in the future');
    }
    if (typeof payload.jti === 'string') {
      const key = `${payload.iss} ${payload.jti}`;
      if (usedJtis.has(key)) throw grantError('the assertion was already used');
      usedJtis.add(key);
    }
    const scopes = requestedScopes(ctx, new Set((client.scope || '').split(' ').filter(Boolean)));
    const token = new provider.AccessToken({
      accountId: payload.sub,
      client,
      scope: scopes.join(' ') || undefined,
      gty: 'jwt_bearer',
    });
    ctx.oidc.entity('AccessToken', token);
    const value = await token.save();
    ctx.body = {
      access_token: value,
      token_type: token.tokenType,
      expires_in: token.expiration,
      scope: token.scope || undefined,
    };
  };
}

// RFC 8693 §2.1-2.2: subject_token must be an access token this server issued and still
// valid (subject_token_type access_token); the new token acts for the same account, with
// the requested scopes narrowed within the subject token's; audience or resource, one at
// most, becomes its aud. actor tokens are not supported; requested_token_type, if given,
// must be access_token.
function tokenExchangeGrant() {
  return async function tokenExchangeHandler(ctx) {
    const { params, client, provider } = ctx.oidc;
    if (!params.subject_token || !params.subject_token_type) {
      throw new errors.InvalidRequest('missing required parameter (subject_token, subject_token_type)');
    }
    if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest('unsupported subject_token_type');
    }
    if (params.actor_token || params.actor_token_type) {
      throw new errors.InvalidRequest('actor tokens are not supported');
    }
    if (params.requested_token_type && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest('unsupported requested_token_type');
    }
    const subject = await provider.AccessToken.find(params.subject_token);
    if (!subject || !subject.isValid || !subject.accountId) {
      throw grantError('subject_token is invalid, expired, or not a user access token');
    }
    const scopes = requestedScopes(ctx, new Set((subject.scope || '').split(' ').filter(Boolean)));
    const toList = (value) => (value === undefined ? [] : Array.isArray(value) ? value : [value]);
    const targets = [...toList(params.audience), ...toList(params.resource)];
    if (targets.length > 1) throw new errors.InvalidTarget('at most one audience or resource');
    const token = new provider.AccessToken({
      accountId: subject.accountId,
      client,
      scope: scopes.join(' ') || undefined,
      gty: 'token_exchange',
      extra: { exchanged_from: subject.clientId },
    });
    if (targets.length) token.setAudience(targets[0]);
    ctx.oidc.entity('AccessToken', token);
    const value = await token.save();
    ctx.body = {
      access_token: value,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: token.tokenType,
      expires_in: token.expiration,
      scope: token.scope || undefined,
    };
  };
}

function registerExtensionGrants(provider, config) {
  if (config.jwtBearer) {
    provider.registerGrantType(JWT_BEARER, jwtBearerGrant(config.jwtBearer, new Set()), [
      'assertion',
      'scope',
    ]);
  }
  if (config.tokenExchange) {
    provider.registerGrantType(
      TOKEN_EXCHANGE,
      tokenExchangeGrant(),
      [
        'subject_token',
        'subject_token_type',
        'actor_token',
        'actor_token_type',
        'requested_token_type',
        'scope',
        'audience',
        'resource',
      ],
      ['audience', 'resource'],
    );
  }
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
  const origin = `http://127.0.0.1:${actualPort}`;
  // A path-suffixed issuer (e.g. "/tenant"): the provider is mounted under it.
  const mountPath = (config.mountPath || '').replace(/\/$/, '');
  if (mountPath && !/^\/[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*$/.test(mountPath)) {
    throw new TypeError('mountPath must look like /segment[/segment...]');
  }
  const issuer = `${origin}${mountPath}`;

  const provider = new Provider(issuer, buildConfiguration(config));
  registerExtensionGrants(provider, config);
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

  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (!mountPath) return callback(req, res);
    const path = req.url.split('?')[0];
    if (path !== mountPath && !path.startsWith(`${mountPath}/`)) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'not_found' }));
      return undefined;
    }
    // As a router mounting the provider would: strip the prefix, keep the original URL.
    req.originalUrl = req.url;
    req.url = req.url.slice(mountPath.length) || '/';
    return callback(req, res);
  });
  process.stdout.write(
    `${READY} ${JSON.stringify({ url: origin, issuer, port: actualPort })}\n`,
  );

  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  process.stderr.write(`valetkey oidc peer failed to start: ${err?.stack || err}\n`);
  process.exit(1);
});
