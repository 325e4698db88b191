/* The built-in login page: mounts the client where the template asks.
 * `?transport=poll` (or `websocket`) restricts the client to one transport,
 * for trying the fallback by hand; `?wechat=top` lets WeChat's QR page
 * (`wechat-web`) take the whole page instead of coming back in its frame. */
(function () {
  "use strict";
  var root = document.getElementById("qrlogin");
  if (!root || !window.QRLogin) return;
  var params = new URLSearchParams(location.search);
  var only = params.get("transport");
  window.qrloginHandle = window.QRLogin.mount(root, {
    provider: root.getAttribute("data-provider") || undefined,
    lang: root.getAttribute("data-lang") || undefined,
    transports: only === "poll" || only === "websocket" ? [only] : undefined,
    wechatRedirect: params.get("wechat") === "top" ? "top" : undefined,
    showToken: true,
    showLink: root.hasAttribute("data-show-link"),
    onToken: function (token) { window.qrloginToken = token; }
  });
})();
