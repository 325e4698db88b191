// The page's side: show the login widget, hand its token to our backend,
// then show who is signed in (from /me) and offer Log out.
"use strict";

var csrf = null; // the session's CSRF token, sent back on /logout
var login = null;

function $(id) { return document.getElementById(id); }

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// fetch + JSON, with one error type for every failure: a network error,
// a non-JSON answer, or the backend's {"error", "message"}.
function api(method, path, body) {
  var init = { method: method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (csrf) init.headers["X-CSRF-Token"] = csrf;
  return fetch(path, init).then(function (r) {
    return r.json().catch(function () { return {}; }).then(function (data) {
      if (!r.ok) {
        var err = new Error(data.message || "the server answered " + r.status);
        err.code = data.error;
        err.status = r.status;
        throw err;
      }
      return data;
    });
  }, function () {
    throw new Error("the server cannot be reached; check your connection");
  });
}

function signedIn(me) {
  csrf = me.csrf;
  if (login) { login.destroy(); login = null; }
  $("user").textContent = me.user.sub;
  $("signed-out").hidden = true;
  $("signed-in").hidden = false;
  document.body.dataset.state = "signed-in";
}

function signedOut() {
  csrf = null;
  $("signed-in").hidden = true;
  $("signed-out").hidden = false;
  document.body.dataset.state = "signed-out";
  if (typeof QRLogin === "undefined") {
    showError("The login service cannot be reached.");
    return;
  }
  if (login) login.destroy();
  login = QRLogin.mount($("login"), {
    baseUrl: $("login").dataset.qrloginUrl,
    showToken: false,
    onToken: function (token) {
      api("POST", "/session", { token: token }).then(function (me) {
        showError("");
        signedIn(me);
      }, function (err) {
        showError("Login refused: " + err.message);
        login.refresh(); // a new code to try again
      });
    }
  });
}

$("logout").addEventListener("click", function () {
  api("POST", "/logout").then(function () {
    showError("");
    signedOut();
  }, function (err) {
    showError("Could not log out: " + err.message);
  });
});

api("GET", "/me").then(signedIn, function (err) {
  if (err.status !== 401) showError(err.message);
  signedOut();
});
