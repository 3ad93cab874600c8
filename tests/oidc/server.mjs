// A real OpenID Connect provider (panva/oidc-provider) on loopback, for chatauth's
// OAuth tests.  Started by tests/oidc/fixture.py; prints one line
// `READY {"issuer": ...}` on stdout once it listens.
//
// Configuration (environment):
//   OIDC_PORT     port to listen on (127.0.0.1 only)
//   OIDC_CLIENTS  JSON list of {client_id, client_secret, redirect_uris}
//
// Accounts: any login name signs in (devInteractions' form, any password).  The
// account `<name>` has email `<name>@example.test`, verified unless the name
// starts with "unverified".
//
// Test controls (loopback only, used by the tests to make the provider misbehave
// the way a broken or malicious provider would):
//   POST /__test/next-id-token  {"mode": "expired" | "wrong_nonce" | "tampered" |
//                                "alg_none" | "wrong_audience" | "wrong_issuer"}
//     changes the ID token of the next token response only.  Every mode except
//     "tampered" and "alg_none" re-signs with the provider's own key, so the
//     signature is valid and only the changed claim can make a client refuse it.
//   GET /gh/user, /gh/user/emails   GitHub's REST shapes, for the access token's account.
//   POST /__test/logout-token  {"claims": {...}, "header": {...}, "key": "provider" | "foreign"}
//     a JWT of exactly these claims, signed with the provider's own key (its kid,
//     typ logout+jwt; a header member given as null is left out) or, "foreign",
//     with another key under the same kid (a forgery).
//   GET /__test/backchannel-log
//     every back-channel logout this provider delivered: {client_id, sid, sub, ok,
//     at} with `at` the epoch time (ms, sub-millisecond) its answer arrived.
//
// Logout: RP-initiated logout (/session/end) and back-channel logout are on; a
// client registered with backchannel_logout_uri (and _session_required) gets
// the `sid` in its ID tokens and a logout token POSTed when the session ends.
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';

import { SignJWT, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, importJWK } from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const clients = JSON.parse(process.env.OIDC_CLIENTS || '[]').map((c) => ({
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_post',
  ...c,
}));

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: 'RS256', use: 'sig' };
const signingKey = await importJWK(signingJwk, 'RS256');
const { privateKey: foreignKey } = await generateKeyPair('RS256');

function account(id) {
  const verified = !id.startsWith('unverified');
  return {
    sub: id,
    email: `${id}@example.test`,
    email_verified: verified,
    name: `${id[0].toUpperCase()}${id.slice(1)} Example`,
    preferred_username: id,
    picture: `https://images.example.test/${encodeURIComponent(id)}.png`,
  };
}

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingJwk] },
  cookies: { keys: [randomUUID()] },
  findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => account(id) }),
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'picture'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'read:user', 'user:email'],
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  // Outgoing requests (back-channel logout tokens) go to chatauth on loopback:
  // without the SSRF guard that refuses special-use addresses (a real provider
  // keeps it, and reaches its clients at public addresses).
  fetch: (url, { dispatcher: _guard, ...options }) => globalThis.fetch(url, options),
  // PKCE on every request, not only for public clients: chatauth always sends it.
  pkce: { required: () => true },
  ttl: { IdToken: 3600, AccessToken: 3600, AuthorizationCode: 60, Interaction: 600, Session: 3600, Grant: 3600 },
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

const backchannelLog = [];
const epochMs = () => performance.timeOrigin + performance.now();
provider.on('backchannel.success', (_ctx, client, sub, sid) => {
  backchannelLog.push({ client_id: client.clientId, sub, sid, ok: true, at: epochMs() });
});
provider.on('backchannel.error', (_ctx, err, client, sub, sid) => {
  console.error('backchannel.error', err.message, err.cause);
  backchannelLog.push({
    client_id: client.clientId, sub, sid, ok: false, at: epochMs(), error: err.message,
  });
});

// --- test controls ------------------------------------------------------------
let nextIdToken = null;

async function resign(idToken, change) {
  const header = decodeProtectedHeader(idToken);
  const claims = { ...decodeJwt(idToken), ...change };
  return new SignJWT(claims).setProtectedHeader(header).sign(signingKey);
}

const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

async function misbehave(mode, idToken) {
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case 'expired':
      // A minute ago: past a small clock-skew leeway, within authlib's default 120 s.
      return resign(idToken, { iat: now - 120, exp: now - 60 });
    case 'wrong_nonce':
      return resign(idToken, { nonce: 'not-the-nonce-the-client-sent' });
    case 'wrong_audience': {
      // Issued to another client, naming this one as authorized party.
      const { aud } = decodeJwt(idToken);
      return resign(idToken, { aud: 'some-other-client', azp: aud });
    }
    case 'wrong_issuer':
      return resign(idToken, { iss: 'http://127.0.0.1:1/evil' });
    case 'tampered': {
      // Same signature, changed payload: the classic forgery.
      const [header, , signature] = idToken.split('.');
      const claims = { ...decodeJwt(idToken), sub: 'someone-else', email: 'admin@example.test' };
      return `${header}.${b64(claims)}.${signature}`;
    }
    case 'alg_none': {
      const claims = { ...decodeJwt(idToken), sub: 'someone-else' };
      return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
    }
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

function bearerAccount(ctx) {
  const match = /^Bearer (.+)$/.exec(ctx.get('authorization'));
  return match ? provider.AccessToken.find(match[1]) : undefined;
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/__test/next-id-token' && ctx.method === 'POST') {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    nextIdToken = JSON.parse(Buffer.concat(chunks).toString()).mode;
    ctx.body = { ok: true };
    return;
  }
  if (ctx.path === '/__test/logout-token' && ctx.method === 'POST') {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const { claims, header = {}, key = 'provider' } = JSON.parse(Buffer.concat(chunks).toString());
    const protectedHeader = { alg: 'RS256', kid: signingJwk.kid, typ: 'logout+jwt', ...header };
    // A null removes a member (a token without typ, as older providers send).
    for (const [name, value] of Object.entries(protectedHeader)) {
      if (value === null) delete protectedHeader[name];
    }
    ctx.body = {
      token: await new SignJWT(claims)
        .setProtectedHeader(protectedHeader)
        .sign(key === 'foreign' ? foreignKey : signingKey),
    };
    return;
  }
  if (ctx.path === '/__test/backchannel-log') {
    ctx.body = backchannelLog;
    return;
  }
  if (ctx.path === '/gh/user' || ctx.path === '/gh/user/emails') {
    const token = await bearerAccount(ctx);
    if (!token) {
      ctx.status = 401;
      ctx.body = { message: 'Bad credentials' };
      return;
    }
    const data = account(token.accountId);
    ctx.body = ctx.path === '/gh/user'
      ? {
          id: 1000 + token.accountId.length, login: token.accountId, name: data.name,
          avatar_url: data.picture, email: null,
        }
      : [
          { email: `${token.accountId}@users.noreply.example.test`, primary: false, verified: true },
          { email: `secondary-${data.email}`, primary: false, verified: true },
          { email: data.email, primary: true, verified: data.email_verified },
        ];
    return;
  }
  await next();
  if (ctx.path === '/token' && nextIdToken && ctx.body?.id_token) {
    const mode = nextIdToken;
    nextIdToken = null;
    ctx.body = { ...ctx.body, id_token: await misbehave(mode, ctx.body.id_token) };
  }
});

const server = createServer(provider.callback());
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${JSON.stringify({ issuer })}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
