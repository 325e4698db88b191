/* The built-in login page: mounts the client where the template asks.
 * `?transport=poll` (or `websocket`) restricts the client to one transport,
 * for trying the fallback by hand. */
(function () {
  "use strict";
  var root = document.getElementById("qrlogin");
  if (!root || !window.QRLogin) return;
  var only = new URLSearchParams(location.search).get("transport");
  window.qrloginHandle = window.QRLogin.mount(root, {
    provider: root.getAttribute("data-provider") || undefined,
    lang: root.getAttribute("data-lang") || undefined,
    transports: only === "poll" || only === "websocket" ? [only] : undefined,
    onToken: function (token) { window.qrloginToken = token; }
  });
})();
