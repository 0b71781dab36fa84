// A CI platform's token issuer for the bot join tests (issue 18): npm's oidc-provider serving
// the client credentials grant over HTTPS (node's https server, a test certificate), with
// access tokens as JWTs (RFC 9068) for one resource whose audience is the Bastion cluster.
// Each client gets its own extra claims (like GitHub's repository/ref claims).
//
// Usage: node cc_provider.mjs CONFIG.json   (prints "READY <issuer>" once listening)
// CONFIG: {"port": N, "cert": "PEM file", "key": "PEM file", "audience": "...",
//          "clients": [{"client_id": "...", "client_secret": "...", "claims": {...}}]}
import { readFileSync } from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `https://127.0.0.1:${config.port}`;
const RESOURCE = 'urn:bastion:cluster';
const claimsOf = Object.fromEntries(config.clients.map((c) => [c.client_id, c.claims || {}]));

const provider = new Provider(issuer, {
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'bot',
        audience: config.audience,
        accessTokenTTL: 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  extraTokenClaims: async (ctx, token) => claimsOf[token.clientId] || {},
});

provider.on('server_error', (ctx, err) => console.error('server_error', err));
const server = https.createServer(
  { cert: readFileSync(config.cert), key: readFileSync(config.key) },
  provider.callback(),
);
server.listen(config.port, '127.0.0.1', () => console.log(`READY ${issuer}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
