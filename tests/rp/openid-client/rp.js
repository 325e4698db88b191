// A relying party built on openid-client (npm), the way an application
// would use it: discovery, the code flow with PKCE (S256), state and nonce,
// ID token validation (signature from the JWKS, iss, aud, nonce, RFC 9207
// iss on the response) and a userinfo call.
//
//   ISSUER=… CLIENT_ID=… [CLIENT_SECRET=…] PORT=… node rp.js
//
// GET /login starts a login; GET /callback finishes it and shows who logged
// in (#sub, #name) or what failed (#error). Prints "listening" when ready.
"use strict";
const http = require("http");
const { Issuer, generators } = require("openid-client");

const { ISSUER, CLIENT_ID, CLIENT_SECRET, PORT } = process.env;
const redirectUri = `http://127.0.0.1:${PORT}/callback`;
const pending = new Map(); // state -> { verifier, nonce }

function esc(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}

async function main() {
  const issuer = await Issuer.discover(ISSUER);
  const client = new issuer.Client({
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    redirect_uris: [redirectUri],
    response_types: ["code"],
    token_endpoint_auth_method: CLIENT_SECRET ? "client_secret_basic" : "none",
    id_token_signed_response_alg: issuer.id_token_signing_alg_values_supported[0],
  });
  http
    .createServer(async (req, res) => {
      const url = new URL(req.url, redirectUri);
      try {
        if (url.pathname === "/login") {
          const verifier = generators.codeVerifier();
          const state = generators.state();
          const nonce = generators.nonce();
          pending.set(state, { verifier, nonce });
          res.writeHead(302, {
            Location: client.authorizationUrl({
              scope: "openid profile",
              code_challenge: generators.codeChallenge(verifier),
              code_challenge_method: "S256",
              state,
              nonce,
            }),
          });
          return res.end();
        }
        if (url.pathname === "/callback") {
          const params = client.callbackParams(req);
          const checks = pending.get(params.state) || {};
          pending.delete(params.state);
          const tokens = await client.callback(redirectUri, params, {
            code_verifier: checks.verifier,
            nonce: checks.nonce,
            state: params.state,
          });
          const claims = tokens.claims();
          const info = await client.userinfo(tokens.access_token);
          if (info.sub !== claims.sub) throw new Error("userinfo names another subject");
          res.writeHead(200, { "Content-Type": "text/html" });
          return res.end(
            `<!doctype html><h1 id="content">Logged in</h1>` +
              `<p>sub=<span id="sub">${esc(claims.sub)}</span> name=<span id="name">${esc(info.name || "")}</span>` +
              ` aud=<span id="aud">${esc(claims.aud)}</span> nonce-checked=<span id="nonce">${claims.nonce === checks.nonce}</span></p>`
          );
        }
        res.writeHead(404);
        res.end();
      } catch (e) {
        res.writeHead(400, { "Content-Type": "text/html" });
        res.end(`<!doctype html><h1 id="error">${esc(e.error || e.name)}</h1><p>${esc(e.message)}</p>`);
      }
    })
    .listen(Number(PORT), "127.0.0.1", () => console.log("listening"));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
