/*! qrlogin.js — the dependency-free browser client of qrlogin.
 *
 *   var login = QRLogin.mount(element, {
 *     baseUrl: "https://login.example.com", // where qrlogin runs (default: this page's origin)
 *     provider: "dev",                      // one of the enabled providers (default: the service's)
 *     lang: "en",                           // "en" or "zh-CN" (default: the page's lang, then the browser's)
 *     onState: function (status, state) {}, // pending, scanned, confirmed, denied, expired
 *     onToken: function (token, state) {}, // the signed JWT, once confirmed
 *     wechatRedirect: "iframe",             // `wechat-web`: WeChat comes back inside its frame
 *                                           // ("iframe", default) or takes the whole page ("top")
 *     seal: true,                           // false: the plain flow even where WebCrypto exists
 *     showToken: false,                     // true: show the JWT under the code (the built-in page)
 *     showLink: false                       // true: the phone link as text (dev codes only)
 *     // onToken may return a promise (e.g. the product's backend taking the
 *     // token): "Logged in" only once it resolves; a rejection shows its
 *     // message and a button for a new code.
 *     // onState's third argument is the ticket ({ticket, secret, …});
 *     // ticketPath: where tickets are created (default /api/v1/tickets)
 *   });
 *   login.destroy();                        // stops every timer, socket and request
 *
 * It creates a ticket, shows its QR (or WeChat's own QR for `wechat-web`) and
 * follows it: WebSocket first; when a socket cannot open, one quick
 * long-poll tells why — the ticket is gone (a new code), the server is
 * unreachable (retry later) or WebSockets are blocked on this network (stay
 * on long-poll). Dropped connections reconnect with exponential backoff and
 * jitter; the first answer after a reconnect is the current state, so
 * nothing is missed. An expired code is replaced once automatically; after
 * that a Refresh button waits for the person, so an unattended page does not
 * keep making codes.
 *
 * `wechat-web`: WeChat's own QR page is embedded; once the person approves,
 * WeChat sends the browser to the service's callback, which changes nothing
 * and hands the code back to this page (a message from the frame, checked
 * for its origin, source and the ticket's `state`; or, in "top" mode, the
 * login page's fragment). Only this page holds the ticket's secret, so only
 * it can redeem the code. A browser that gets a code for a login it did not
 * start (a forwarded WeChat page) is told so, and nothing is done.
 *
 * Where WebCrypto exists the token is sealed: each ticket gets a new
 * non-extractable P-256 key, only its public half is sent (`seal`), and the
 * service answers a JWE (ECDH-ES, A256GCM) that this page opens before
 * `onToken`; so nothing recording the socket or the secret gets the token.
 * The key is kept in IndexedDB for the ticket's life, for a page that WeChat
 * reloads. Without WebCrypto: the plain flow.
 *
 * No stylesheet is needed: the widget adds its own rules, every one scoped
 * under `.qrlogin`, as a constructable stylesheet (which a host page's CSP
 * `style-src` does not block), so it looks right anywhere and restyles
 * nothing outside its element. `styles: false` leaves the styling to the
 * page.
 */
(function (global) {
  "use strict";

  var TEXT = {
    "en": {
      pending: "Scan the code with your phone",
      pendingHint: "Open your phone's camera or scanner and point it at the code.",
      pendingWechat: "Scan the code with WeChat",
      pendingWechatHint: "In WeChat, tap + then Scan, and point it at the code.",
      scanned: "Scanned — confirm on your phone",
      scannedHint: "Check the details on your phone, then tap Confirm.",
      confirmed: "Logged in",
      confirmedHint: "You are logged in.",
      denied: "Cancelled on the phone",
      deniedHint: "Nobody was logged in. You can try again.",
      expired: "The code expired",
      expiredHint: "Get a new code to log in.",
      renewing: "The code expired — here is a new one",
      lost: "The code is no longer valid — getting a new one…",
      retry: "Try again",
      refresh: "Refresh",
      expiresIn: "Expires in {s} s",
      confirmWithin: "Confirm within {s} s",
      connecting: "Getting a code…",
      offline: "Connection lost — reconnecting…",
      error: "Could not get a code — retrying…",
      token: "Token received by this page",
      wechat: "Scan with WeChat",
      qrAlt: "QR code to scan with your phone",
      timeLeft: "Time left",
      elsewhere: "This login was started on another device",
      elsewhereHint: "Nothing was done here, and nobody was logged in. To log in on this computer, get a new code.",
      newCode: "Get a code",
      wechatRefused: "Cancelled in WeChat",
      wechatRefusedHint: "Nobody was logged in. You can try again.",
      wechatFailed: "WeChat did not accept the login",
      wechatFailedHint: "Nobody was logged in. Get a new code and scan it again.",
      checking: "Logging in…",
      rejected: "The login was not accepted",
      originRefused: "This page's origin is not allowed by the login service",
      originRefusedHint: "Ask its operator to add {origin} to QRLOGIN_ALLOWED_ORIGINS.",
      phoneLink: "Or open this link on the phone:"
    },
    "zh-CN": {
      pending: "请使用手机扫描二维码",
      pendingHint: "打开手机相机或扫一扫，对准二维码。",
      pendingWechat: "请使用微信扫描二维码",
      pendingWechatHint: "打开微信，点击右上角 + 中的“扫一扫”，对准二维码。",
      scanned: "已扫描 — 请在手机上确认",
      scannedHint: "请在手机上核对信息，然后点击确认。",
      confirmed: "已登录",
      confirmedHint: "你已成功登录。",
      denied: "已在手机上取消",
      deniedHint: "没有任何人登录。你可以重试。",
      expired: "二维码已过期",
      expiredHint: "请获取新的二维码后登录。",
      renewing: "二维码已过期 — 已为你换一个新的",
      lost: "二维码已失效 — 正在获取新的二维码…",
      retry: "重试",
      refresh: "刷新",
      expiresIn: "{s} 秒后过期",
      confirmWithin: "请在 {s} 秒内确认",
      connecting: "正在获取二维码…",
      offline: "连接中断 — 正在重新连接…",
      error: "无法获取二维码 — 正在重试…",
      token: "本页面已收到令牌",
      wechat: "使用微信扫码",
      qrAlt: "用手机扫描的二维码",
      timeLeft: "剩余时间",
      elsewhere: "此登录是在另一台设备上发起的",
      elsewhereHint: "此处未进行任何操作，也没有任何人登录。如需在这台电脑上登录，请获取新的二维码。",
      newCode: "获取二维码",
      wechatRefused: "已在微信中取消",
      wechatRefusedHint: "没有任何人登录。你可以重试。",
      wechatFailed: "微信未接受此次登录",
      wechatFailedHint: "没有任何人登录。请获取新的二维码后重新扫描。",
      checking: "正在登录…",
      rejected: "登录未被接受",
      originRefused: "登录服务不允许此页面的来源",
      originRefusedHint: "请联系其运维人员将 {origin} 加入 QRLOGIN_ALLOWED_ORIGINS。",
      phoneLink: "或在手机上打开此链接："
    }
  };

  var AUTO_RENEWALS = 1;   // expiries with no scan replaced without asking
  var LOST_RENEWALS = 3;   // codes lost by the server (restart) replaced in a row
  var MAX_BACKOFF = 10000; // ms
  var FINAL = { confirmed: 1, denied: 1, expired: 1 };
  var SVG = "http://www.w3.org/2000/svg";
  // 24x24 outline icons (paths drawn for this client).
  var ICONS = {
    scanned: "M7 2h10a2 2 0 0 1 2 2v16a2 2 0 0 1-2 2H7a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2zm0 2v16h10V4zm2.2 8.3 1.8 1.8 3.8-3.8 1.1 1.1-4.9 4.9-2.9-2.9z",
    confirmed: "M12 2a10 10 0 1 1 0 20 10 10 0 0 1 0-20zm0 2a8 8 0 1 0 0 16 8 8 0 0 0 0-16zm4.3 4.3 1.4 1.4-7.2 7.2-4.2-4.2 1.4-1.4 2.8 2.8z",
    denied: "M12 2a10 10 0 1 1 0 20 10 10 0 0 1 0-20zm0 2a8 8 0 1 0 0 16 8 8 0 0 0 0-16zm3.5 3.1 1.4 1.4-3.5 3.5 3.5 3.5-1.4 1.4-3.5-3.5-3.5 3.5-1.4-1.4 3.5-3.5-3.5-3.5 1.4-1.4 3.5 3.5z",
    expired: "M12 2a10 10 0 1 1 0 20 10 10 0 0 1 0-20zm0 2a8 8 0 1 0 0 16 8 8 0 0 0 0-16zm1 3v4.6l3.4 2-1 1.7-4.4-2.6V7z"
  };


  // The widget's own look, every rule under `.qrlogin` (nothing global).
  // Colours meet WCAG AA contrast on their backgrounds.
  var STYLE = [
    ".qrlogin{--qrl-fg:#1b1f24;--qrl-muted:#4a5360;--qrl-line:#d5dbe1;--qrl-accent:#0b6e4f;--qrl-accent-dark:#08553d;--qrl-danger:#a4262c;--qrl-soft:#f6f8fa;",
    "display:flex;flex-direction:column;align-items:center;gap:.75rem;outline:none;text-align:center;color:var(--qrl-fg);",
    "font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",\"PingFang SC\",\"Hiragino Sans GB\",\"Microsoft YaHei\",\"Noto Sans CJK SC\",sans-serif}",
    ".qrlogin,.qrlogin *{box-sizing:border-box}",
    ".qrlogin [hidden]{display:none!important}",
    ".qrlogin .qrlogin-stage{position:relative;width:236px;height:236px;border:1px solid var(--qrl-line);border-radius:12px;padding:7px;background:#fff}",
    ".qrlogin .qrlogin-stage-wechat{width:302px;height:402px;padding:0;border:0}",
    ".qrlogin .qrlogin-qr{display:block;width:220px;height:220px;max-width:none;margin:0;image-rendering:pixelated}",
    ".qrlogin .qrlogin-wechat{display:block;width:300px;height:400px;border:0}",
    ".qrlogin .qrlogin-overlay{position:absolute;inset:0;border-radius:12px;background:rgba(255,255,255,.93);display:flex;flex-direction:column;align-items:center;justify-content:center;gap:.75rem}",
    ".qrlogin .qrlogin-icon{display:block;width:64px;height:64px;fill:currentColor}",
    ".qrlogin .qrlogin-icon-scanned,.qrlogin .qrlogin-icon-confirmed{color:var(--qrl-accent)}",
    ".qrlogin .qrlogin-icon-denied{color:var(--qrl-danger)}",
    ".qrlogin .qrlogin-icon-expired{color:var(--qrl-muted)}",
    ".qrlogin .qrlogin-live{min-height:4.5rem}",
    ".qrlogin .qrlogin-status{font-size:1.15rem;font-weight:650;margin:0 0 .25rem}",
    ".qrlogin[data-status=confirmed] .qrlogin-status{color:var(--qrl-accent-dark)}",
    ".qrlogin[data-status=denied] .qrlogin-status,.qrlogin[data-status=rejected] .qrlogin-status,.qrlogin[data-status=origin] .qrlogin-status{color:var(--qrl-danger)}",
    ".qrlogin .qrlogin-hint{color:var(--qrl-muted);font-size:.95rem;margin:0}",
    ".qrlogin .qrlogin-hint:empty{display:none}",
    ".qrlogin .qrlogin-user{display:flex;align-items:center;justify-content:center;gap:.6rem;margin:.5rem 0;font-weight:600}",
    ".qrlogin .qrlogin-avatar{width:40px;height:40px;border-radius:50%;object-fit:cover;flex:none}",
    ".qrlogin .qrlogin-initial{display:inline-flex;align-items:center;justify-content:center;background:var(--qrl-accent);color:#fff;font-weight:700}",
    ".qrlogin .qrlogin-countdown{display:flex;flex-direction:column;align-items:center;gap:.3rem;width:220px;color:var(--qrl-muted);font-size:.9rem;font-variant-numeric:tabular-nums}",
    ".qrlogin .qrlogin-bar{width:100%;height:6px;border-radius:3px;background:#e3e7eb;overflow:hidden}",
    ".qrlogin .qrlogin-bar-fill{display:block;height:100%;background:var(--qrl-accent);transform-origin:left center;transition:transform 1s linear}",
    ".qrlogin .qrlogin-countdown-low{color:var(--qrl-danger)}",
    ".qrlogin .qrlogin-countdown-low .qrlogin-bar-fill{background:var(--qrl-danger)}",
    ".qrlogin .qrlogin-token,.qrlogin .qrlogin-link{width:100%;max-height:9rem;overflow:auto;margin:0;white-space:pre-wrap;word-break:break-all;text-align:left;font:.75rem/1.4 ui-monospace,\"SFMono-Regular\",Menlo,Consolas,monospace;background:var(--qrl-soft);border:1px solid var(--qrl-line);padding:.6rem .75rem;border-radius:8px}",
    ".qrlogin .qrlogin-link a{color:var(--qrl-accent-dark)}",
    ".qrlogin .qrlogin-button{font:inherit;font-weight:650;border:0;border-radius:12px;min-height:48px;min-width:8rem;width:auto;padding:.7rem 1.4rem;margin:0;cursor:pointer;background:var(--qrl-accent);color:#fff}",
    ".qrlogin .qrlogin-button:hover{background:var(--qrl-accent-dark)}",
    ".qrlogin .qrlogin-button:focus-visible{outline:3px solid #1f5fd1;outline-offset:2px}",
    "@media (prefers-reduced-motion:reduce){.qrlogin .qrlogin-bar-fill{transition:none}}"
  ].join("\n");
  var styled = false;

  /** The rules above, once per document: adopted where the browser can
   *  (no `style-src` needed), else a <style> element. */
  function addStyles() {
    if (styled) return;
    styled = true;
    try {
      if (global.CSSStyleSheet && "adoptedStyleSheets" in document) {
        var sheet = new CSSStyleSheet();
        sheet.replaceSync(STYLE);
        document.adoptedStyleSheets = document.adoptedStyleSheets.concat([sheet]);
        return;
      }
    } catch (e) {}
    var tag = document.createElement("style");
    tag.textContent = STYLE;
    (document.head || document.documentElement).appendChild(tag);
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function icon(name) {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("class", "qrlogin-icon qrlogin-icon-" + name);
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var p = document.createElementNS(SVG, "path");
    p.setAttribute("d", ICONS[name]);
    p.setAttribute("fill-rule", "evenodd");
    svg.appendChild(p);
    return svg;
  }

  // --- sealed tokens (RFC 7516 compact JWE, ECDH-ES + A256GCM) -----------
  var subtle = global.crypto && global.crypto.subtle;
  var CURVE = { name: "ECDH", namedCurve: "P-256" };

  function canSeal() { return !!(subtle && global.TextEncoder && global.TextDecoder && global.atob); }

  function fromB64u(text) {
    var b = String(text).replace(/-/g, "+").replace(/_/g, "/");
    while (b.length % 4) b += "=";
    var bin = atob(b), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  /** A fresh key pair whose private half never leaves WebCrypto. */
  function makeSealKey() {
    return subtle.generateKey(CURVE, false, ["deriveBits"]).then(function (pair) {
      return subtle.exportKey("jwk", pair.publicKey).then(function (jwk) {
        return { privateKey: pair.privateKey, jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } };
      });
    });
  }

  /** The JWT inside `jwe`, opened with `privateKey` (RFC 7518 §4.6 Concat KDF). */
  function openSealed(privateKey, jwe) {
    var p = String(jwe).split(".");
    if (p.length !== 5 || p[1] !== "") return Promise.reject(new Error("not an ECDH-ES JWE"));
    var header = JSON.parse(new TextDecoder().decode(fromB64u(p[0])));
    if (header.alg !== "ECDH-ES" || header.enc !== "A256GCM" || !header.epk) {
      return Promise.reject(new Error("unexpected JWE algorithms"));
    }
    var epk = { kty: "EC", crv: "P-256", x: header.epk.x, y: header.epk.y };
    return subtle.importKey("jwk", epk, CURVE, false, []).then(function (peer) {
      return subtle.deriveBits({ name: "ECDH", public: peer }, privateKey, 256);
    }).then(function (z) {
      var enc = new TextEncoder().encode(header.enc);
      var info = new Uint8Array(4 + 32 + 4 + enc.length + 12);
      var view = new DataView(info.buffer);
      view.setUint32(0, 1);
      info.set(new Uint8Array(z), 4);
      view.setUint32(36, enc.length);
      info.set(enc, 40);
      view.setUint32(40 + enc.length + 8, 256); // empty apu and apv, then keydatalen
      return subtle.digest("SHA-256", info);
    }).then(function (cek) {
      return subtle.importKey("raw", cek, { name: "AES-GCM" }, false, ["decrypt"]);
    }).then(function (cek) {
      var body = fromB64u(p[3]), tag = fromB64u(p[4]);
      var data = new Uint8Array(body.length + tag.length);
      data.set(body); data.set(tag, body.length);
      var aad = new TextEncoder().encode(p[0]);
      return subtle.decrypt({ name: "AES-GCM", iv: fromB64u(p[2]), additionalData: aad, tagLength: 128 }, cek, data);
    }).then(function (plain) { return new TextDecoder().decode(plain); });
  }

  /** IndexedDB keeps a ticket's CryptoKey (still non-extractable) across a reload. */
  function sealKeys(op, id, key) {
    return new Promise(function (resolve) {
      var db;
      try { db = global.indexedDB.open("qrlogin-seal", 1); } catch (e) { resolve(null); return; }
      db.onupgradeneeded = function () { db.result.createObjectStore("keys"); };
      db.onerror = function () { resolve(null); };
      db.onsuccess = function () {
        try {
          var tx = db.result.transaction("keys", op === "get" ? "readonly" : "readwrite");
          var keys = tx.objectStore("keys");
          var rq = op === "put" ? keys.put(key, id) : op === "get" ? keys.get(id) : keys["delete"](id);
          rq.onsuccess = function () { resolve(op === "get" ? rq.result || null : null); };
          rq.onerror = function () { resolve(null); };
          tx.oncomplete = function () { db.result.close(); };
        } catch (e) { resolve(null); }
      };
    });
  }

  function pickLang(wanted) {
    var tag = String(wanted || document.documentElement.lang || navigator.language || "en");
    if (TEXT[tag]) return tag;
    return tag.toLowerCase().indexOf("zh") === 0 ? "zh-CN" : "en";
  }

  function mount(root, options) {
    options = options || {};
    var base = (options.baseUrl || "").replace(/\/$/, "");
    var lang = pickLang(options.lang);
    var t = TEXT[lang];
    var transports = options.transports || ["websocket", "poll"];
    var canPoll = transports.indexOf("poll") >= 0;
    var ticketPath = options.ticketPath || "/api/v1/tickets";
    var storageKey = "qrlogin.ticket." + (options.provider || "default") +
      (options.ticketPath ? "." + options.ticketPath : "");
    var topRedirect = options.wechatRedirect === "top";
    // Where the service (and so its `wechat-web` callback) lives.
    var serviceOrigin = new URL(base || location.origin, location.href).origin;
    var handoff = takeHandoff();
    var s = {
      destroyed: false, ticket: null, status: null, skew: 0, total: 0,
      ws: null, requests: [], timers: [], tick: null,
      attempt: 0, renewals: 0, lost: 0,
      keys: {}, unsealing: null, // a sealed ticket's private key, and the ticket being opened
      wsBlocked: transports.indexOf("websocket") < 0 || typeof WebSocket === "undefined"
    };

    // --- the view -------------------------------------------------------
    if (options.styles !== false) addStyles();
    root.classList.add("qrlogin");
    root.setAttribute("lang", lang);
    root.innerHTML = "";
    var stage = el("div", "qrlogin-stage");
    var img = el("img", "qrlogin-qr");
    img.alt = t.qrAlt;
    img.width = 220; img.height = 220;
    var frame = el("div", "qrlogin-frame");
    var overlay = el("div", "qrlogin-overlay");
    overlay.hidden = true;
    var button = el("button", "qrlogin-button", t.refresh);
    button.type = "button";
    button.hidden = true;
    var badge = el("span", "qrlogin-badge");
    overlay.appendChild(badge); overlay.appendChild(button);
    stage.appendChild(img); stage.appendChild(frame); stage.appendChild(overlay);
    var live = el("div", "qrlogin-live");
    live.setAttribute("role", "status");
    live.setAttribute("aria-live", "polite");
    live.setAttribute("aria-atomic", "true");
    var status = el("p", "qrlogin-status", t.connecting);
    var who = el("p", "qrlogin-user");
    who.hidden = true;
    var hint = el("p", "qrlogin-hint");
    live.appendChild(status); live.appendChild(who); live.appendChild(hint);
    var countdown = el("div", "qrlogin-countdown");
    countdown.hidden = true;
    var bar = el("div", "qrlogin-bar");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-label", t.timeLeft);
    bar.setAttribute("aria-valuemin", "0");
    var fill = el("span", "qrlogin-bar-fill");
    bar.appendChild(fill);
    var remaining = el("span", "qrlogin-remaining");
    countdown.appendChild(bar); countdown.appendChild(remaining);
    var tokenBox = el("pre", "qrlogin-token");
    tokenBox.hidden = true;
    tokenBox.tabIndex = 0; // scrollable: reachable by keyboard
    var link = el("p", "qrlogin-link");
    link.hidden = true;
    root.appendChild(stage); root.appendChild(live);
    root.appendChild(countdown); root.appendChild(link); root.appendChild(tokenBox);
    button.addEventListener("click", onButton);

    // --- timers and requests that destroy() must be able to stop ---------
    function later(fn, ms) {
      var id = setTimeout(function () {
        s.timers = s.timers.filter(function (x) { return x !== id; });
        if (!s.destroyed) fn();
      }, ms);
      s.timers.push(id);
    }
    function clearTimers() { s.timers.forEach(clearTimeout); s.timers = []; }

    function request(path, init) {
      var ctl = typeof AbortController !== "undefined" ? new AbortController() : null;
      if (ctl) { init.signal = ctl.signal; s.requests.push(ctl); }
      var done = function () { s.requests = s.requests.filter(function (c) { return c !== ctl; }); };
      return fetch(base + path, init).then(function (r) { done(); return r; }, function (e) { done(); throw e; });
    }

    function closeTransports() {
      if (s.ws) {
        var w = s.ws; s.ws = null;
        w.onopen = w.onclose = w.onerror = w.onmessage = null;
        try { w.close(1000); } catch (e) {}
      }
      var open = s.requests; s.requests = [];
      open.forEach(function (c) { c.abort(); });
    }

    function backoff() {
      var ms = Math.min(MAX_BACKOFF, 500 * Math.pow(2, s.attempt));
      s.attempt++;
      return ms / 2 + Math.random() * ms / 2; // jitter: a restart's browsers do not return all at once
    }

    // --- countdown ------------------------------------------------------
    function startCountdown(expiresAt, words) {
      var end = Date.parse(expiresAt) - s.skew;
      if (!end) { stopCountdown(); return; }
      var draw = function () {
        var left = Math.max(0, Math.round((end - Date.now()) / 1000));
        remaining.textContent = words.replace("{s}", left);
        var total = Math.max(s.total, left, 1);
        fill.style.transform = "scaleX(" + (left / total) + ")";
        bar.setAttribute("aria-valuemax", String(total));
        bar.setAttribute("aria-valuenow", String(left));
        countdown.classList.toggle("qrlogin-countdown-low", left <= 15);
      };
      if (s.tick) clearInterval(s.tick);
      countdown.hidden = false;
      draw();
      s.tick = setInterval(draw, 1000);
    }
    function stopCountdown() {
      if (s.tick) clearInterval(s.tick);
      s.tick = null;
      countdown.hidden = true;
    }

    // --- rendering a state ----------------------------------------------
    function say(text, more) {
      status.textContent = text;
      hint.textContent = more || "";
    }

    function showUser(user) {
      who.textContent = "";
      who.hidden = true;
      if (!user || !(user.nickname || user.avatar)) return;
      var name = user.nickname || "";
      var initial = el("span", "qrlogin-avatar qrlogin-initial", (name.trim()[0] || "?").toUpperCase());
      initial.setAttribute("aria-hidden", "true");
      if (user.avatar) {
        var a = el("img", "qrlogin-avatar");
        a.alt = "";
        a.width = 40; a.height = 40;
        a.onerror = function () { if (a.parentNode) a.parentNode.replaceChild(initial, a); };
        a.src = user.avatar;
        who.appendChild(a);
      } else {
        who.appendChild(initial);
      }
      if (name) who.appendChild(el("span", "qrlogin-nickname", name));
      who.hidden = false;
    }

    /** `showLink`: a dev code's phone link as text, to copy into a second
     *  window (only an http(s) link: WeChat's codes are not for copying). */
    function showLink(tk) {
      link.textContent = "";
      var url = options.showLink === true && tk && tk.provider === "dev" && tk.qr_content;
      link.hidden = !(url && /^https?:\/\//.test(url));
      if (link.hidden) return;
      var a = el("a", null, url);
      a.href = url;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      link.appendChild(document.createTextNode(t.phoneLink + " "));
      link.appendChild(a);
    }

    function showOverlay(name, withButton, label) {
      badge.textContent = "";
      if (name) badge.appendChild(icon(name));
      overlay.hidden = !name;
      overlay.setAttribute("data-icon", name || "");
      button.hidden = !withButton;
      if (withButton) button.textContent = label;
    }

    function show(st) {
      root.setAttribute("data-status", st.status);
      if (st.status !== "pending") link.hidden = true;
      showUser(st.status === "scanned" || st.status === "confirmed" ? st.user : null);
      tokenBox.hidden = true;
      switch (st.status) {
        case "pending":
          showOverlay(null);
          if (viaWechat()) say(t.pendingWechat, t.pendingWechatHint);
          else say(t.pending, t.pendingHint);
          startCountdown(st.expires_at, t.expiresIn);
          break;
        case "scanned":
          showOverlay("scanned");
          say(t.scanned, t.scannedHint);
          startCountdown(st.expires_at, t.confirmWithin);
          break;
        case "confirmed":
          showOverlay("confirmed");
          say(t.confirmed, t.confirmedHint);
          stopCountdown();
          if (st.token && options.showToken === true) {
            tokenBox.textContent = t.token + ":\n" + st.token;
            tokenBox.hidden = false;
          }
          break;
        case "denied":
          showOverlay("denied", true, t.retry);
          say(t.denied, t.deniedHint);
          stopCountdown();
          break;
        case "expired":
          stopCountdown();
          if (s.renewals < AUTO_RENEWALS) {
            showOverlay("expired");
            say(t.renewing);
          } else {
            showOverlay("expired", true, t.refresh);
            say(t.expired, t.expiredHint);
          }
          break;
        default:
          say(st.status);
      }
    }

    /** Codes only WeChat can read (every provider but `dev`). */
    function viaWechat() {
      var p = (s.ticket && s.ticket.provider) || options.provider || "dev";
      return p !== "dev";
    }

    function emit(st) {
      if (!st || !st.status) return;
      if (st.sealed_token && !st.token) { unseal(st); return; }
      var changed = st.status !== s.status;
      s.lost = 0;
      if (st.status === "scanned") s.renewals = 0;
      s.status = st.status;
      var taken = null;
      if (FINAL[st.status]) { closeTransports(); forget(); }
      if (st.status === "confirmed" && st.token && typeof options.onToken === "function") {
        try { taken = options.onToken(st.token, st); } catch (e) { report(e); }
      }
      if (taken && typeof taken.then === "function") {
        // The product is still taking the token: not "Logged in" yet.
        accepting(st, taken);
      } else {
        show(st);
      }
      if (changed && typeof options.onState === "function") {
        try { options.onState(st.status, st, s.ticket); } catch (e) { report(e); }
      }
      if (st.status === "expired" && s.renewals < AUTO_RENEWALS) {
        s.renewals++;
        later(start, 600); // long enough to read "here is a new one"
      }
    }

    /** A sealed `confirmed`: open it with this ticket's key, then emit it
     * as the plain flow would. Final already, so the transports stop now. */
    function unseal(st) {
      var tk = s.ticket;
      if (!tk || s.unsealing === tk) return;
      s.unsealing = tk;
      closeTransports();
      var held = s.keys[tk.ticket];
      (held ? Promise.resolve(held) : sealKeys("get", tk.ticket)).then(function (key) {
        if (!key) throw new Error("this ticket's key is gone");
        return openSealed(key, st.sealed_token);
      }).then(function (jwt) {
        return jwt;
      }, function (e) {
        report(e);
        return null;
      }).then(function (jwt) {
        delete s.keys[tk.ticket];
        sealKeys("delete", tk.ticket);
        if (s.destroyed || s.ticket !== tk) return;
        if (!jwt) { // never "Logged in" without a token: a new code instead
          say(t.error);
          later(start, backoff());
          return;
        }
        var open = {};
        for (var k in st) if (k !== "sealed_token") open[k] = st[k];
        if (jwt) open.token = jwt;
        emit(open);
      });
    }

    /** `onToken`'s promise: "Logged in" once it resolves; its rejection's
     *  message and a button for a new code when it rejects. */
    function accepting(st, taken) {
      var tk = s.ticket;
      root.setAttribute("data-status", "checking");
      showUser(st.user);
      showOverlay("scanned");
      stopCountdown();
      say(t.checking);
      taken.then(function () {
        if (s.destroyed || s.ticket !== tk) return;
        show(st);
      }, function (e) {
        if (s.destroyed || s.ticket !== tk) return;
        var why = e && e.message ? String(e.message) : String(e || "");
        local("rejected", t.rejected, why, t.retry);
      });
    }

    function report(e) { if (global.console) console.error("qrlogin: a callback failed", e); }

    function onButton() {
      s.renewals = 0;
      s.lost = 0;
      root.focus(); // the button disappears: keep focus inside the widget
      start();
    }
    root.tabIndex = -1;

    // --- remembering the ticket across a reload (WeChat's redirect back) --
    function remember(tk) { try { sessionStorage.setItem(storageKey, JSON.stringify(tk)); } catch (e) {} }
    function forget() { try { sessionStorage.removeItem(storageKey); } catch (e) {} }
    function remembered() {
      try {
        var tk = JSON.parse(sessionStorage.getItem(storageKey) || "null");
        if (tk && tk.secret && Date.parse(tk.expires_at) > Date.now() + 2000) return tk;
      } catch (e) {}
      return null;
    }

    // --- a ticket ---------------------------------------------------------
    function start() {
      closeTransports();
      clearTimers();
      var resumed = remembered();
      var back = handoff;
      handoff = null;
      if (back) {
        // Back from WeChat at top level: only the browser that made this
        // ticket has it (and its secret) stored, under the same state.
        if (!resumed || !resumed.authorize_url || stateOf(resumed) !== back.state) {
          local("elsewhere", t.elsewhere, t.elsewhereHint, t.newCode);
          return;
        }
        follow(resumed, true);
        handOver(resumed, back);
        return;
      }
      if (resumed) { follow(resumed); return; }
      say(t.connecting);
      var body = options.provider ? { provider: options.provider } : {};
      var sealing = options.seal !== false && canSeal()
        ? makeSealKey().then(null, function () { return null; }) // no key: the plain flow
        : Promise.resolve(null);
      var key = null;
      sealing.then(function (k) {
        key = k;
        if (key) body.seal = key.jwk;
        return request(ticketPath, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
          credentials: "same-origin"
        });
      }).then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      }).then(function (tk) {
        if (s.destroyed) return;
        if (!key) return tk;
        tk.sealed = true;
        s.keys[tk.ticket] = key.privateKey;
        // Kept before the page may leave for WeChat ("top"), so the page
        // that comes back can still open its token.
        return sealKeys("put", tk.ticket, key.privateKey).then(function () { return tk; });
      }).then(function (tk) {
        if (!tk || s.destroyed) return;
        s.attempt = 0;
        // Count down on this computer's clock, whatever its offset.
        s.skew = Date.parse(tk.expires_at) - (Date.now() + tk.expires_in * 1000);
        tk.skew = s.skew;
        remember(tk);
        follow(tk);
      }).catch(function (e) {
        if (s.destroyed || (e && e.name === "AbortError")) return;
        if (serviceOrigin !== location.origin && e instanceof TypeError) { refusedOrNot(); return; }
        say(t.error);
        later(start, backoff());
      });
    }

    /** The ticket request failed without an answer. From another origin
     *  that is either an unreachable service or one that refuses this
     *  page's origin (CORS hides which): an opaque request that does not
     *  need CORS tells them apart. A refusal waits for the person: no
     *  amount of retrying fixes a setting. */
    function refusedOrNot() {
      request("/healthz", { mode: "no-cors", cache: "no-store", credentials: "omit" }).then(function () {
        if (s.destroyed) return;
        local("origin", t.originRefused, t.originRefusedHint.replace("{origin}", location.origin), t.retry);
      }, function (e) {
        if (s.destroyed || (e && e.name === "AbortError")) return;
        say(t.error);
        later(start, backoff());
      });
    }

    function follow(tk, returning) {
      s.ticket = tk;
      s.status = null;
      s.skew = tk.skew || 0;
      s.total = tk.expires_in || 0;
      frame.textContent = "";
      if (tk.authorize_url && returning) {
        img.hidden = true;
        stage.classList.add("qrlogin-stage-wechat");
      } else if (tk.authorize_url && options.embedWechat !== false) {
        img.hidden = true;
        stage.classList.add("qrlogin-stage-wechat");
        var f = el("iframe", "qrlogin-wechat");
        f.title = t.wechat;
        f.width = 300; f.height = 400;
        f.src = wechatFrameUrl(tk.authorize_url);
        // As wxLogin.js does: WeChat navigates the frame to the callback
        // ("iframe"), or this whole page ("top").
        f.setAttribute("sandbox", "allow-scripts allow-same-origin" + (topRedirect ? " allow-top-navigation" : ""));
        frame.appendChild(f);
      } else {
        img.hidden = false;
        stage.classList.remove("qrlogin-stage-wechat");
        img.src = base + tk.qr_svg;
      }
      showLink(tk);
      show({ status: "pending", expires_at: tk.expires_at });
      root.setAttribute("data-status", "pending");
      connect();
    }

    /** WeChat's embedded QR: the iframe wxLogin.js would build. */
    function wechatFrameUrl(authorizeUrl) {
      var u = new URL(authorizeUrl);
      u.hash = "";
      u.searchParams.set("login_type", "jssdk");
      u.searchParams.set("self_redirect", topRedirect ? "false" : "true");
      u.searchParams.set("stylelite", "1");
      if (lang === "en") u.searchParams.set("lang", "en");
      return u.toString();
    }

    // --- wechat-web: the code WeChat handed back -------------------------
    /** The `state` WeChat sends back for `tk` (from its authorize_url). */
    function stateOf(tk) {
      try { return new URL(tk.authorize_url).searchParams.get("state") || ""; } catch (e) { return ""; }
    }

    /** A top-level return from the callback: the fragment's code and state,
     *  taken out of the address bar (and history) at once. */
    function takeHandoff() {
      if (!/[#&]qrlogin_state=/.test(location.hash)) return null;
      var f = new URLSearchParams(location.hash.slice(1));
      try { history.replaceState(null, "", location.pathname + location.search); } catch (e) {}
      return { state: f.get("qrlogin_state") || "", code: f.get("qrlogin_code") || "" };
    }

    /** The frame's message: only from our callback's origin, only from the
     *  frame this page made, only with this ticket's state. */
    function onMessage(ev) {
      var tk = s.ticket, f = frame.querySelector("iframe");
      if (!tk || !tk.authorize_url || !f || ev.source !== f.contentWindow) return;
      if (ev.origin !== serviceOrigin) return;
      var d = ev.data;
      if (!d || d.type !== "qrlogin:wechat-web" || typeof d.state !== "string") return;
      if (!stateOf(tk) || d.state !== stateOf(tk)) return;
      frame.textContent = "";
      handOver(tk, { state: d.state, code: typeof d.code === "string" ? d.code : "" });
    }

    /** Redeem the code with the secret; the token comes on the socket. */
    function handOver(tk, back) {
      if (!back.code) {
        forget();
        local("refused", t.wechatRefused, t.wechatRefusedHint, t.retry);
        return;
      }
      request("/api/v1/tickets/" + encodeURIComponent(tk.ticket) + "/wechat-web", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + tk.secret },
        body: JSON.stringify({ code: back.code, state: back.state })
      }).then(function (r) {
        if (s.destroyed || s.ticket !== tk) return;
        // 409: finished already; the socket tells how.
        if (r.ok || r.status === 409) return;
        forget();
        local("failed", t.wechatFailed, t.wechatFailedHint, t.newCode);
      }).catch(function (e) {
        if (s.destroyed || (e && e.name === "AbortError") || s.ticket !== tk) return;
        forget();
        local("failed", t.wechatFailed, t.wechatFailedHint, t.newCode);
      });
    }

    /** A state only this page knows (nothing to follow on the server):
     *  everything stops until the person asks for a new code. */
    function local(name, text, more, label) {
      closeTransports();
      clearTimers();
      stopCountdown();
      s.ticket = null;
      s.status = name;
      frame.textContent = "";
      img.hidden = true;
      img.removeAttribute("src");
      root.setAttribute("data-status", name);
      showUser(null);
      tokenBox.hidden = true;
      link.hidden = true;
      showOverlay(name === "elsewhere" || name === "rejected" || name === "origin" ? "denied" : "expired", true, label);
      say(text, more);
      if (typeof options.onState === "function") {
        try { options.onState(name, { status: name }); } catch (e) { report(e); }
      }
    }

    function connect() {
      if (s.destroyed || !s.ticket || FINAL[s.status]) return;
      if (s.wsBlocked) poll(); else connectWs();
    }

    function wsUrl(path) {
      var u = new URL(base + path, location.href);
      u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
      return u.toString();
    }

    function offline() {
      status.textContent = t.offline;
    }

    function connectWs() {
      var tk = s.ticket, opened = false, ws;
      try { ws = new WebSocket(wsUrl(tk.ws), ["qrlogin.v1", "secret." + tk.secret]); }
      catch (e) { probe(tk); return; }
      s.ws = ws;
      ws.onopen = function () { opened = true; s.attempt = 0; };
      ws.onmessage = function (ev) {
        var m; try { m = JSON.parse(ev.data); } catch (e) { return; }
        if (m && m.type === "state" && s.ticket === tk) emit(m);
      };
      ws.onclose = function (ev) {
        if (s.ws !== ws) return;
        s.ws = null;
        if (FINAL[s.status]) return;
        if (opened) {
          // Dropped after working (1012: the service restarts): come back.
          offline();
          later(connect, ev.code === 1012 ? 250 + Math.random() * 750 : backoff());
        } else {
          // Refused or unreachable: a browser cannot tell which. Ask.
          probe(tk);
        }
      };
    }

    /** One immediate long-poll after a socket failed to open: it tells a
     *  lost ticket (404) from a server that is down (network error) from a
     *  network that blocks WebSockets (it answers). */
    function probe(tk) {
      request(tk.poll + "?wait=0", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + tk.secret },
        body: "{}"
      }).then(function (r) {
        if (s.destroyed || s.ticket !== tk) return;
        if (r.status === 404 || r.status === 401) { gone(tk); return; }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json().then(function (st) {
          if (s.destroyed || s.ticket !== tk) return;
          s.attempt = 0;
          emit(st);
          if (canPoll) { s.wsBlocked = true; later(poll, 0); }
          else later(connect, backoff());
        });
      }).catch(function (e) {
        if (s.destroyed || (e && e.name === "AbortError")) return;
        offline();
        later(connect, backoff());
      });
    }

    function poll() {
      if (s.destroyed || FINAL[s.status]) return;
      var tk = s.ticket;
      request(tk.poll + "?wait=25", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + tk.secret },
        body: JSON.stringify(s.status ? { status: s.status } : {})
      }).then(function (r) {
        if (s.destroyed || s.ticket !== tk) return;
        if (r.status === 404 || r.status === 401) { gone(tk); return; }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json().then(function (st) {
          if (s.destroyed || s.ticket !== tk) return;
          s.attempt = 0;
          emit(st);
          later(poll, 0);
        });
      }).catch(function (e) {
        if (s.destroyed || (e && e.name === "AbortError")) return;
        offline();
        later(poll, backoff());
      });
    }

    /** The service no longer knows the ticket. Past its expiry that is an
     *  expiry; before it, the service lost it (a restart with the in-memory
     *  store), which is nobody's fault: get a new code without counting it. */
    function gone(tk) {
      forget();
      if (Date.parse(tk.expires_at) - s.skew <= Date.now() + 1000 || s.lost >= LOST_RENEWALS) {
        s.lost = 0;
        emit({ status: "expired" });
        return;
      }
      s.lost++;
      s.status = null;
      say(t.lost);
      later(start, 250 + Math.random() * 500); // the service answers again: no need to wait long
    }

    global.addEventListener("message", onMessage);
    start();

    return {
      /** Stop everything: sockets, requests, timers; empties the element. */
      destroy: function () {
        s.destroyed = true;
        closeTransports();
        clearTimers();
        stopCountdown();
        button.removeEventListener("click", onButton);
        global.removeEventListener("message", onMessage);
        root.innerHTML = "";
        root.removeAttribute("data-status");
      },
      /** Start over with a new code. */
      refresh: function () { if (!s.destroyed) onButton(); },
      get status() { return s.status; },
      get transport() { return s.ws ? "websocket" : (s.requests.length ? "poll" : null); }
    };
  }

  global.QRLogin = { mount: mount, version: "1" };
})(typeof window !== "undefined" ? window : this);
