// A product backend that logs people in with qrlogin.
//
// The page (public/) embeds the qrlogin widget; when a phone confirms, the
// widget hands the page a signed JWT, which the page POSTs to /session.
// This server then
//   1. verifies the token offline against the service's JWKS (cached; an
//      unknown `kid` refetches, so a key rotation — even to another
//      algorithm — needs no restart here),
//   2. refuses a token whose `jti` it has already spent (a token is a
//      one-time login ticket, not a bearer credential to reuse),
//   3. starts its own cookie session (random id, HttpOnly, SameSite=Lax,
//      Secure over https) with a CSRF token that state-changing requests
//      (/logout) must send back in a header.
//
// Every refusal is JSON: {"error": "...", "message": "..."}.

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import express from "express";
import { createRemoteJWKSet, jwtVerify, errors } from "jose";

const env = (name, fallback) => process.env[name] || fallback;
const QRLOGIN_URL = env("QRLOGIN_URL", "http://127.0.0.1:8080").replace(/\/$/, "");
const ISSUER = env("QRLOGIN_ISSUER", QRLOGIN_URL); // the service's QRLOGIN_JWT_ISSUER
const AUDIENCE = env("QRLOGIN_AUDIENCE", "qrlogin"); // the service's QRLOGIN_JWT_AUDIENCE
const PORT = Number(env("PORT", "3000"));
const HOST = env("HOST", "127.0.0.1");
// After a JWKS fetch, how long an unknown `kid` waits before fetching again:
// a stream of forged kids must not turn into a stream of fetches.
const JWKS_COOLDOWN_MS = Number(env("JWKS_COOLDOWN_SECONDS", "5")) * 1000;
const SESSION_TTL_MS = 8 * 3600 * 1000;
const COOKIE = "session";

// --- 1. Offline verification ------------------------------------------------
// createRemoteJWKSet caches the keys and picks one by the token's `kid`; the
// JWK's own `alg` must match, so the token cannot choose how it is checked.
const jwks = createRemoteJWKSet(new URL(`${QRLOGIN_URL}/.well-known/jwks.json`), {
  cooldownDuration: JWKS_COOLDOWN_MS,
  cacheMaxAge: 300 * 1000, // the JWKS's Cache-Control: max-age
});

async function verify(token) {
  const { payload } = await jwtVerify(token, jwks, {
    issuer: ISSUER,
    audience: AUDIENCE,
    algorithms: ["RS256", "ES256", "EdDSA"], // never HS256 or "none" here
    requiredClaims: ["iat", "exp", "sub", "jti"],
    clockTolerance: 30,
  });
  return payload;
}

// --- 2. Spent jtis ------------------------------------------------------------
// Remembered until the token would have expired anyway (plus the leeway);
// in-memory here: with several instances, keep them in a shared store
// (e.g. Redis `SET jti 1 NX EXAT exp`).
const spent = new Map(); // jti -> exp (seconds)

function spend(jti, exp) {
  const now = Date.now() / 1000;
  for (const [id, until] of spent) if (until + 30 < now) spent.delete(id);
  if (spent.has(jti)) return false;
  spent.set(jti, exp);
  return true;
}

// --- 3. Sessions --------------------------------------------------------------
const sessions = new Map(); // id -> { user, csrf, expires }

const randomId = () => crypto.randomBytes(32).toString("base64url");

function sessionOf(req) {
  const id = cookies(req)[COOKIE];
  const session = id && sessions.get(id);
  if (!session) return null;
  if (session.expires < Date.now()) {
    sessions.delete(id);
    return null;
  }
  return { id, ...session };
}

function cookies(req) {
  const out = {};
  for (const part of (req.headers.cookie || "").split(";")) {
    const at = part.indexOf("=");
    if (at > 0) out[part.slice(0, at).trim()] = part.slice(at + 1).trim(); // our ids need no decoding
  }
  return out;
}

function sameToken(a, b) {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

const cookieOptions = (req) => ({
  httpOnly: true,
  sameSite: "lax",
  secure: req.secure, // true behind https (set "trust proxy" behind a proxy)
  path: "/",
});

// --- The HTTP side --------------------------------------------------------------
const app = express();
app.disable("x-powered-by");

function refuse(res, status, error, message) {
  res.status(status).json({ error, message });
}

const page = fs
  .readFileSync(path.join(import.meta.dirname, "public", "index.html"), "utf8")
  .replaceAll("{{QRLOGIN_URL}}", QRLOGIN_URL.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`));

app.get("/", (req, res) => res.type("html").send(page));
app.get("/app.js", (req, res) => res.sendFile(path.join(import.meta.dirname, "public", "app.js")));

// JSON only: a cross-site form cannot send application/json without a CORS
// preflight, which this server never answers, so no other site can log a
// visitor in to an account of its choosing (login CSRF).
app.post("/session", express.json({ limit: "16kb" }), async (req, res) => {
  const token = req.body && req.body.token;
  if (!req.is("application/json") || typeof token !== "string" || !token) {
    return refuse(res, 400, "bad_request", 'POST JSON {"token": "<the JWT>"}');
  }
  let claims;
  try {
    claims = await verify(token);
  } catch (e) {
    const message =
      e instanceof errors.JWTExpired ? "the token has expired"
      : e instanceof errors.JWKSNoMatchingKey ? "the token is signed by a key the service does not publish"
      : e instanceof errors.JWTClaimValidationFailed ? `the token's ${e.claim} claim is not accepted`
      : e instanceof errors.JOSEError ? "the token is not valid"
      : "the service's keys could not be fetched";
    const status = e instanceof errors.JOSEError && !(e instanceof errors.JWKSTimeout) ? 401 : 503;
    return refuse(res, status, status === 401 ? "invalid_token" : "keys_unavailable", message);
  }
  if (!spend(claims.jti, claims.exp)) {
    return refuse(res, 401, "token_replayed", "this token has already been used to log in");
  }
  // A new id at every login: a session id planted before login is useless.
  const old = cookies(req)[COOKIE];
  if (old) sessions.delete(old);
  const id = randomId();
  const session = {
    user: { sub: claims.sub, idp: claims.idp },
    csrf: randomId(),
    expires: Date.now() + SESSION_TTL_MS,
  };
  sessions.set(id, session);
  res.cookie(COOKIE, id, { ...cookieOptions(req), maxAge: SESSION_TTL_MS });
  res.json({ user: session.user, csrf: session.csrf });
});

app.get("/me", (req, res) => {
  const session = sessionOf(req);
  if (!session) return refuse(res, 401, "not_logged_in", "no session: log in first");
  res.json({ user: session.user, csrf: session.csrf });
});

app.post("/logout", (req, res) => {
  const session = sessionOf(req);
  if (!session) return refuse(res, 401, "not_logged_in", "no session: log in first");
  if (!sameToken(req.get("x-csrf-token") || "", session.csrf)) {
    return refuse(res, 403, "csrf", "missing or wrong X-CSRF-Token header");
  }
  sessions.delete(session.id);
  res.clearCookie(COOKIE, cookieOptions(req));
  res.json({ logged_out: true });
});

app.use((req, res) => refuse(res, 404, "not_found", "no such page"));
// Malformed JSON and anything unexpected: a JSON error, never a stack trace.
app.use((err, req, res, next) => {
  if (res.headersSent) return next(err);
  if (err.type === "entity.parse.failed" || err.type === "entity.too.large") {
    return refuse(res, err.status || 400, "bad_request", 'POST JSON {"token": "<the JWT>"}');
  }
  console.error(err);
  refuse(res, 500, "internal", "something went wrong");
});

app.listen(PORT, HOST, () => {
  console.log(`product backend on http://${HOST}:${PORT} (qrlogin at ${QRLOGIN_URL})`);
});
