/** The frame of a ticket's state (the service's API: user, expires_at, …). */
export interface LoginState {
  status: "pending" | "scanned" | "confirmed" | "denied" | "expired";
  expires_at?: string;
  token?: string;
  user?: { nickname?: string; avatar?: string; [key: string]: unknown };
  [key: string]: unknown;
}

/** The statuses only the page knows (nothing to follow on the service). */
export type LocalStatus = "elsewhere" | "refused" | "failed" | "rejected" | "origin";

export interface MountOptions {
  /** Origin (and path prefix) of the qrlogin service; default: this page's origin. */
  baseUrl?: string;
  /** An enabled provider; default: the service's first. */
  provider?: "dev" | "wechat" | "wechat-web" | "wechat-mp" | "miniprogram" | "app" | string;
  /** "en" or "zh-CN"; default: <html lang>, then the browser's. */
  lang?: "en" | "zh-CN" | string;
  onState?: (status: LoginState["status"] | LocalStatus, state: LoginState, ticket?: object) => void;
  /** The signed JWT once confirmed. A returned promise: "Logged in" only when it
   *  resolves; a rejection shows its message and a button for a new code. */
  onToken?: (token: string, state: LoginState) => void | Promise<unknown>;
  /** Default false: the token is not shown on the page. */
  showToken?: boolean;
  /** Default false: a dev code's phone link as text. */
  showLink?: boolean;
  /** Default true: the widget's own scoped rules; false leaves styling to the page. */
  styles?: boolean;
  /** Default ["websocket", "poll"]. */
  transports?: Array<"websocket" | "poll">;
  /** wechat-web: "iframe" (default) or "top". */
  wechatRedirect?: "iframe" | "top";
  /** Default true where WebCrypto exists: the token is sealed to this page. */
  seal?: boolean;
  /** Where tickets are created; default "/api/v1/tickets". */
  ticketPath?: string;
}

export interface LoginHandle {
  /** Stops every timer, socket and request and empties the element. */
  destroy(): void;
  /** A new code now. */
  refresh(): void;
  readonly status: string | null;
  readonly transport: "websocket" | "poll" | null;
}

export function mount(root: HTMLElement, options?: MountOptions): LoginHandle;
export const version: string;
declare const QRLogin: { mount: typeof mount; version: string };
export default QRLogin;
