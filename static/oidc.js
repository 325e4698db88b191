/* The OpenID Connect login page: the usual client, whose tickets belong to
 * one authorization request. Once the phone has answered, this page — the
 * only holder of the ticket's secret — asks the service where to go (the
 * relying party's redirect URI with a code, or with access_denied) and goes
 * there. An expired code is replaced by the client as on any login page. */
(function () {
  "use strict";
  var root = document.getElementById("qrlogin");
  if (!root || !window.QRLogin) return;
  var request = root.getAttribute("data-oidc-request");
  if (!request) return;
  var base = "/oauth2/authorize/" + encodeURIComponent(request);
  var busy = false;
  var tries = 0;

  function finish(ticket) {
    if (busy) return;
    busy = true;
    fetch(base + "/complete", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + ticket.secret },
      body: JSON.stringify({ ticket: ticket.ticket }),
      credentials: "same-origin"
    }).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body }; });
    }).then(function (res) {
      if (res.ok && res.body.redirect_to) {
        root.setAttribute("data-oidc", "redirecting");
        location.replace(res.body.redirect_to);
        return;
      }
      busy = false;
      root.setAttribute("data-oidc", "error:" + (res.body.error || "unknown"));
    }).catch(function () {
      // The network dropped: the answer is still waiting on the service.
      busy = false;
      if (++tries < 5) setTimeout(function () { finish(ticket); }, 500 * tries);
    });
  }

  window.qrloginHandle = window.QRLogin.mount(root, {
    provider: root.getAttribute("data-provider") || undefined,
    lang: root.getAttribute("data-lang") || undefined,
    ticketPath: base + "/tickets",
    // The token never comes to this page's script: it is sent on with a
    // code, and the relying party gets its tokens from the token endpoint.
    seal: false,
    onState: function (status, state, ticket) {
      if ((status === "confirmed" || status === "denied") && ticket) finish(ticket);
    }
  });
})();
