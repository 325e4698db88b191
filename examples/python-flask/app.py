"""A product backend that logs people in with qrlogin.

The page (templates/index.html, static/app.js) embeds the qrlogin widget;
when a phone confirms, the widget hands the page a signed JWT, which the page
POSTs to /session. This server then

1. verifies the token offline against the service's JWKS (cached; an unknown
   ``kid`` refetches, so a key rotation, even to another algorithm, needs no
   restart here),
2. refuses a token whose ``jti`` it has already spent (a token is a one-time
   login ticket, not a bearer credential to reuse),
3. starts its own cookie session (random id, HttpOnly, SameSite=Lax, Secure
   over https) with a CSRF token that state-changing requests (/logout) must
   send back in a header.

Every refusal is JSON: {"error": "...", "message": "..."}.
"""

import hmac
import os
import secrets
import threading
import time

import jwt
from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

QRLOGIN_URL = os.environ.get("QRLOGIN_URL", "http://127.0.0.1:8080").rstrip("/")
ISSUER = os.environ.get("QRLOGIN_ISSUER", QRLOGIN_URL)  # the service's QRLOGIN_JWT_ISSUER
AUDIENCE = os.environ.get("QRLOGIN_AUDIENCE", "qrlogin")  # the service's QRLOGIN_JWT_AUDIENCE
PORT = int(os.environ.get("PORT", "5000"))
HOST = os.environ.get("HOST", "127.0.0.1")
# After a JWKS fetch, how long an unknown `kid` waits before fetching again:
# a stream of forged kids must not turn into a stream of fetches.
JWKS_COOLDOWN = float(os.environ.get("JWKS_COOLDOWN_SECONDS", "5"))
ALGORITHMS = {"RS256", "ES256", "EdDSA"}  # never HS256 or "none" here
SESSION_TTL = 8 * 3600
COOKIE = "session"

# --- 1. Offline verification --------------------------------------------------
# PyJWKClient caches the key set (300 s, the JWKS's max-age) and refetches on
# an unknown kid. The algorithm comes from the JWK, never from the token.
jwks = jwt.PyJWKClient(
    f"{QRLOGIN_URL}/.well-known/jwks.json",
    lifespan=300,
    timeout=5,
    cooldown_duration=JWKS_COOLDOWN,
)


def verify(token: str) -> dict:
    key = jwks.get_signing_key_from_jwt(token)
    if key.algorithm_name not in ALGORITHMS:
        raise jwt.InvalidAlgorithmError(f"{key.algorithm_name} is not accepted")
    return jwt.decode(
        token,
        key.key,
        algorithms=[key.algorithm_name],
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway=30,
        options={"require": ["iss", "aud", "exp", "iat", "sub", "jti"]},
    )


# --- 2. Spent jtis --------------------------------------------------------------
# Remembered until the token would have expired anyway (plus the leeway);
# in memory here: with several instances, keep them in a shared store (e.g.
# Redis `SET jti 1 NX EXAT exp`).
spent: dict[str, float] = {}  # jti -> exp
sessions: dict[str, dict] = {}  # id -> {"user", "csrf", "expires"}
lock = threading.Lock()  # Flask serves requests on several threads


def spend(jti: str, exp: float) -> bool:
    now = time.time()
    with lock:
        for old in [j for j, until in spent.items() if until + 30 < now]:
            del spent[old]
        if jti in spent:
            return False
        spent[jti] = exp
        return True


# --- 3. Sessions ------------------------------------------------------------------
def session_of():
    sid = request.cookies.get(COOKIE)
    with lock:
        session = sessions.get(sid) if sid else None
        if session and session["expires"] < time.time():
            del sessions[sid]
            session = None
    return sid, session


app = Flask(__name__, static_folder="static", static_url_path="")


def refuse(status: int, error: str, message: str):
    return jsonify(error=error, message=message), status


@app.get("/")
def index():
    return render_template("index.html", QRLOGIN_URL=QRLOGIN_URL)


# JSON only: a cross-site form cannot send application/json without a CORS
# preflight, which this server never answers, so no other site can log a
# visitor in to an account of its choosing (login CSRF).
@app.post("/session")
def start_session():
    body = request.get_json(silent=True) if request.is_json else None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        return refuse(400, "bad_request", 'POST JSON {"token": "<the JWT>"}')
    try:
        claims = verify(token)
    except jwt.PyJWKClientConnectionError:
        return refuse(503, "keys_unavailable", "the service's keys could not be fetched")
    except jwt.PyJWKClientError:
        return refuse(401, "invalid_token", "the token is signed by a key the service does not publish")
    except jwt.ExpiredSignatureError:
        return refuse(401, "invalid_token", "the token has expired")
    except jwt.InvalidAudienceError:
        return refuse(401, "invalid_token", "the token's aud claim is not accepted")
    except jwt.InvalidIssuerError:
        return refuse(401, "invalid_token", "the token's iss claim is not accepted")
    except (jwt.InvalidTokenError, ValueError):
        return refuse(401, "invalid_token", "the token is not valid")
    if not spend(claims["jti"], claims["exp"]):
        return refuse(401, "token_replayed", "this token has already been used to log in")
    # A new id at every login: a session id planted before login is useless.
    sid = secrets.token_urlsafe(32)
    session = {
        "user": {"sub": claims["sub"], "idp": claims.get("idp")},
        "csrf": secrets.token_urlsafe(32),
        "expires": time.time() + SESSION_TTL,
    }
    with lock:
        sessions.pop(request.cookies.get(COOKIE, ""), None)
        sessions[sid] = session
    response = jsonify(user=session["user"], csrf=session["csrf"])
    response.set_cookie(
        COOKIE, sid, max_age=SESSION_TTL, path="/",
        httponly=True, samesite="Lax", secure=request.is_secure,
    )
    return response


@app.get("/me")
def me():
    _, session = session_of()
    if not session:
        return refuse(401, "not_logged_in", "no session: log in first")
    return jsonify(user=session["user"], csrf=session["csrf"])


@app.post("/logout")
def logout():
    sid, session = session_of()
    if not session:
        return refuse(401, "not_logged_in", "no session: log in first")
    sent = request.headers.get("X-CSRF-Token", "")
    if not hmac.compare_digest(sent.encode(), session["csrf"].encode()):
        return refuse(403, "csrf", "missing or wrong X-CSRF-Token header")
    with lock:
        sessions.pop(sid, None)
    response = jsonify(logged_out=True)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Lax", secure=request.is_secure)
    return response


@app.errorhandler(HTTPException)
def http_error(e: HTTPException):
    return refuse(e.code or 500, e.name.lower().replace(" ", "_"), e.description or e.name)


@app.errorhandler(Exception)
def unexpected(e: Exception):
    app.logger.exception("unexpected error")
    return refuse(500, "internal", "something went wrong")


if __name__ == "__main__":
    print(f"product backend on http://{HOST}:{PORT} (qrlogin at {QRLOGIN_URL})", flush=True)
    app.run(host=HOST, port=PORT)
