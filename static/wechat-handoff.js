/* The `wechat-web` callback page: WeChat sent this browser back with
 * `code` and `state`. Nothing was done with them on the server; this
 * script hands them to the login page that holds the ticket's secret,
 * which redeems the code.
 *
 * - Inside WeChat's iframe (wxLogin.js's `self_redirect: true`): a
 *   message to the parent, addressed to each origin the service allows.
 *   Never "*": the browser delivers only to a parent whose origin is
 *   listed, so a page framing this one elsewhere receives nothing.
 * - At top level: back to the login page with them in the fragment, which
 *   no server, log or Referer ever sees. If this browser did not start the
 *   login (a forwarded link), the login page finds no ticket for `state`
 *   and says so.
 */
(function () {
  "use strict";
  var box = document.getElementById("handoff");
  if (!box) return;
  var q = new URLSearchParams(location.search);
  var state = q.get("state") || "";
  var code = q.get("code") || "";
  // Out of this page's URL and history before anything else.
  try { history.replaceState(null, "", location.pathname); } catch (e) {}
  var framed;
  try { framed = window.parent !== window; } catch (e) { framed = true; }
  if (framed) {
    var message = { type: "qrlogin:wechat-web", state: state, code: code };
    (box.getAttribute("data-origins") || "").split(" ").forEach(function (origin) {
      if (!origin || origin === "*") return;
      try { window.parent.postMessage(message, origin); } catch (e) {}
    });
    return;
  }
  var fragment = "qrlogin_state=" + encodeURIComponent(state) +
    (code ? "&qrlogin_code=" + encodeURIComponent(code) : "&qrlogin_refused=1");
  location.replace((box.getAttribute("data-login") || "/") + "#" + fragment);
})();
