/* The built-in login page: mounts the client where the template asks. */
(function () {
  "use strict";
  var root = document.getElementById("qrlogin");
  if (!root || !window.QRLogin) return;
  var params = new URLSearchParams(location.search);
  var transports = params.get("transport") === "poll" ? ["poll"] : undefined;
  window.qrloginHandle = window.QRLogin.mount(root, {
    provider: root.getAttribute("data-provider") || undefined,
    lang: root.getAttribute("data-lang") || undefined,
    transports: transports,
    onToken: function (token) { window.qrloginToken = token; }
  });
})();
