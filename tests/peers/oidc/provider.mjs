// The OpenID provider of the SSO integration tests: npm's oidc-provider with one static client,
// test accounts from a JSON file, and the package's own login/consent pages ("dev interactions"),
// which the tests submit with plain HTTP requests.
//
// Usage: node provider.mjs CONFIG.json   (prints "READY <issuer>" once listening)
// CONFIG: {"port": 0-65535, "clients": [...oidc-provider client metadata...],
//          "accounts": {"alice": {"email": "...", "groups": ["..."]}, ...}}
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;

const provider = new Provider(issuer, {
  clients: config.clients,
  findAccount: async (ctx, id) => {
    // Re-read on every lookup: a test removes an account to see re-validation cut it off.
    const account = JSON.parse(readFileSync(process.argv[2], 'utf8')).accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...account };
      },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // Claims go into the ID token itself (the connector reads them from there).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['bastion-test-cookie-key'] },
});

// Any login/password pair is accepted by dev interactions; unknown accounts then fail in
// findAccount, which is what the tests want.
provider.on('server_error', (ctx, err) => console.error('server_error', err));
const server = provider.listen(config.port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
