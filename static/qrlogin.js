/*! qrlogin.js — the dependency-free browser client of qrlogin.
 *
 * QRLogin.mount(element, {baseUrl, provider, lang, onState, onToken}) creates
 * a ticket, shows its QR and follows it: WebSocket first, long-poll when
 * WebSockets fail, reconnect with backoff and jitter (the first frame after a
 * reconnect is the current state, so nothing is missed), and a new code when
 * one expires. Returns {destroy()}, which stops every timer and socket.
 */
(function (global) {
  "use strict";

  var TEXT = {
    "en": {
      waiting: "Scan the code with your phone",
      scanned: "Scanned — confirm on your phone",
      confirmed: "Logged in",
      denied: "Cancelled on the phone",
      expired: "The code expired",
      retry: "Try again",
      refresh: "Refresh",
      expiresIn: "Expires in {s} s",
      connecting: "Connecting…",
      offline: "Connection lost — retrying…",
      error: "Could not start a login — retrying…",
      token: "Token received by the page",
      wechat: "Scan with WeChat",
      qrAlt: "QR code to scan with your phone"
    },
    "zh-CN": {
      waiting: "请使用手机扫描二维码",
      scanned: "已扫描 — 请在手机上确认",
      confirmed: "已登录",
      denied: "已在手机上取消",
      expired: "二维码已过期",
      retry: "重试",
      refresh: "刷新",
      expiresIn: "{s} 秒后过期",
      connecting: "正在连接…",
      offline: "连接中断 — 正在重试…",
      error: "无法开始登录 — 正在重试…",
      token: "页面已收到令牌",
      wechat: "使用微信扫码",
      qrAlt: "用手机扫描的二维码"
    }
  };

  var MAX_AUTO_RENEW = 2; // expiries with no scan before asking for a click

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function mount(root, options) {
    options = options || {};
    var base = (options.baseUrl || "").replace(/\/$/, "");
    var lang = TEXT[options.lang] ? options.lang : (String(options.lang || navigator.language || "en").toLowerCase().indexOf("zh") === 0 ? "zh-CN" : "en");
    var t = TEXT[lang];
    var transports = options.transports || ["websocket", "poll"];
    var state = { destroyed: false, ticket: null, status: null, ws: null, pollAbort: null, timers: [], attempt: 0, renewals: 0, useWs: transports.indexOf("websocket") >= 0 && typeof WebSocket !== "undefined" };
    var storageKey = "qrlogin.ticket";

    // --- view ---
    root.classList.add("qrlogin");
    root.innerHTML = "";
    var box = el("div", "qrlogin-box");
    var img = el("img", "qrlogin-qr");
    img.alt = t.qrAlt;
    img.width = 220; img.height = 220;
    var frame = el("div", "qrlogin-frame");
    var icon = el("div", "qrlogin-icon");
    icon.setAttribute("aria-hidden", "true");
    var status = el("p", "qrlogin-status", t.connecting);
    status.setAttribute("role", "status");
    status.setAttribute("aria-live", "polite");
    var who = el("div", "qrlogin-user");
    var countdown = el("p", "qrlogin-countdown");
    var button = el("button", "qrlogin-button", t.refresh);
    button.type = "button";
    button.hidden = true;
    var tokenBox = el("pre", "qrlogin-token");
    tokenBox.hidden = true;
    box.appendChild(img); box.appendChild(frame); box.appendChild(icon); box.appendChild(status);
    box.appendChild(who); box.appendChild(countdown); box.appendChild(button); box.appendChild(tokenBox);
    root.appendChild(box);
    button.addEventListener("click", onButton);

    function later(fn, ms) {
      var id = setTimeout(function () {
        state.timers = state.timers.filter(function (x) { return x !== id; });
        if (!state.destroyed) fn();
      }, ms);
      state.timers.push(id);
      return id;
    }
    function clearTimers() { state.timers.forEach(clearTimeout); state.timers = []; }

    var tick = null;
    function startCountdown(expiresAt) {
      stopCountdown();
      var end = Date.parse(expiresAt);
      if (!end) return;
      var draw = function () {
        var s = Math.max(0, Math.round((end - Date.now()) / 1000));
        countdown.textContent = t.expiresIn.replace("{s}", s);
      };
      draw();
      tick = setInterval(draw, 1000);
    }
    function stopCountdown() { if (tick) clearInterval(tick); tick = null; countdown.textContent = ""; }

    function show(s) {
      root.setAttribute("data-status", s.status);
      icon.className = "qrlogin-icon qrlogin-icon-" + s.status;
      who.textContent = "";
      if (s.user && (s.user.nickname || s.user.avatar)) {
        if (s.user.avatar) { var a = el("img", "qrlogin-avatar"); a.src = s.user.avatar; a.alt = ""; who.appendChild(a); }
        if (s.user.nickname) who.appendChild(el("span", "qrlogin-nickname", s.user.nickname));
      }
      var words = { pending: t.waiting, scanned: t.scanned, confirmed: t.confirmed, denied: t.denied, expired: t.expired };
      status.textContent = words[s.status] || s.status;
      button.hidden = true;
      if (s.status === "pending") { startCountdown(s.expires_at); }
      else { stopCountdown(); }
      if (s.status === "denied") { button.textContent = t.retry; button.hidden = false; }
      if (s.status === "confirmed" && s.token) {
        tokenBox.textContent = t.token + ":\n" + s.token;
        tokenBox.hidden = options.showToken === false;
      }
    }

    function emit(s) {
      var changed = s.status !== state.status;
      state.status = s.status;
      show(s);
      if (changed && typeof options.onState === "function") { try { options.onState(s.status, s); } catch (e) {} }
      if (s.status === "scanned") state.renewals = 0;
      if (s.status === "confirmed") {
        forget();
        if (s.token && typeof options.onToken === "function") { try { options.onToken(s.token, s); } catch (e) {} }
      }
      if (s.status === "denied") forget();
      if (s.status === "expired") {
        forget();
        if (state.renewals < MAX_AUTO_RENEW) { state.renewals++; later(start, 300); }
        else { button.textContent = t.refresh; button.hidden = false; }
      }
      if (s.status === "confirmed" || s.status === "denied" || s.status === "expired") closeTransports();
    }

    function onButton() { state.renewals = 0; start(); }

    function remember(ticket) { try { sessionStorage.setItem(storageKey, JSON.stringify(ticket)); } catch (e) {} }
    function forget() { try { sessionStorage.removeItem(storageKey); } catch (e) {} }
    function remembered() {
      try {
        var tk = JSON.parse(sessionStorage.getItem(storageKey) || "null");
        if (tk && Date.parse(tk.expires_at) > Date.now() && (!options.provider || tk.provider === options.provider)) return tk;
      } catch (e) {}
      return null;
    }

    function closeTransports() {
      if (state.ws) { var w = state.ws; state.ws = null; w.onclose = w.onerror = w.onmessage = null; try { w.close(1000); } catch (e) {} }
      if (state.pollAbort) { state.pollAbort.abort(); state.pollAbort = null; }
    }

    function backoff() {
      var ms = Math.min(10000, 500 * Math.pow(2, state.attempt));
      state.attempt++;
      return ms / 2 + Math.random() * ms / 2; // jitter: reconnects spread out
    }

    // --- a ticket ---
    function start() {
      closeTransports();
      clearTimers();
      var resumed = remembered();
      if (resumed) { follow(resumed); return; }
      status.textContent = t.connecting;
      var body = options.provider ? { provider: options.provider } : {};
      fetch(base + "/api/v1/tickets", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (tk) { if (state.destroyed) return; state.attempt = 0; remember(tk); follow(tk); })
        .catch(function () { if (state.destroyed) return; status.textContent = t.error; later(start, backoff()); });
    }

    function follow(tk) {
      state.ticket = tk;
      state.status = null;
      img.hidden = false;
      frame.innerHTML = "";
      if (tk.authorize_url && options.embedWechat !== false) {
        img.hidden = true;
        var f = el("iframe", "qrlogin-wechat");
        f.title = t.wechat;
        f.src = wechatFrameUrl(tk.authorize_url);
        f.setAttribute("sandbox", "allow-scripts allow-top-navigation allow-same-origin");
        frame.appendChild(f);
      } else {
        img.src = base + tk.qr_svg;
      }
      connect();
    }

    function wechatFrameUrl(url) {
      // wxLogin.js builds the same iframe: qrconnect with login_type=jssdk.
      return url.replace("#wechat_redirect", "") + "&login_type=jssdk&self_redirect=false&stylelite=1#wechat_redirect";
    }

    function connect() {
      if (state.destroyed || !state.ticket) return;
      if (state.useWs) connectWs(); else poll();
    }

    function wsUrl(path) {
      var u = new URL(base + path, location.href);
      u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
      return u.toString();
    }

    function connectWs() {
      var tk = state.ticket, opened = false, ws;
      try { ws = new WebSocket(wsUrl(tk.ws), ["qrlogin.v1", "secret." + tk.secret]); }
      catch (e) { state.useWs = false; poll(); return; }
      state.ws = ws;
      ws.onopen = function () { opened = true; state.attempt = 0; };
      ws.onmessage = function (ev) {
        var m; try { m = JSON.parse(ev.data); } catch (e) { return; }
        if (m && m.type === "state") emit(m);
      };
      ws.onclose = function (ev) {
        if (state.ws !== ws) return;
        state.ws = null;
        if (isFinal()) return;
        if (!opened && state.attempt >= 1 && transports.indexOf("poll") >= 0) { state.useWs = false; poll(); return; }
        status.textContent = t.offline;
        later(connect, backoff());
      };
    }

    function isFinal() { return state.status === "confirmed" || state.status === "denied" || state.status === "expired"; }

    function poll() {
      if (state.destroyed || isFinal()) return;
      var tk = state.ticket;
      var ctl = typeof AbortController !== "undefined" ? new AbortController() : null;
      state.pollAbort = ctl;
      fetch(base + tk.poll + "?wait=25", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + tk.secret },
        body: JSON.stringify(state.status ? { status: state.status } : {}),
        signal: ctl ? ctl.signal : undefined
      }).then(function (r) {
        if (r.status === 404) return { status: "expired" };
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      }).then(function (s) {
        if (state.destroyed || state.ticket !== tk) return;
        state.attempt = 0;
        emit(s);
        if (!isFinal()) later(poll, 0);
      }).catch(function (e) {
        if (state.destroyed || (e && e.name === "AbortError")) return;
        status.textContent = t.offline;
        later(poll, backoff());
      });
    }

    start();

    return {
      destroy: function () {
        state.destroyed = true;
        closeTransports();
        clearTimers();
        stopCountdown();
        button.removeEventListener("click", onButton);
        root.innerHTML = "";
      },
      get status() { return state.status; },
      get transport() { return state.ws ? "websocket" : (state.pollAbort ? "poll" : null); }
    };
  }

  global.QRLogin = { mount: mount, version: "1" };
})(typeof window !== "undefined" ? window : this);
