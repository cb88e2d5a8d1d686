// What the console's modules share: the node as last read, the sessions table, the selected
// session's view, and the node's pending approvals.

// ?limit=N in the page URL sets the size of the sessions pages the console asks for.
export const PAGE_LIMIT = Math.max(1, Math.min(1000,
  Number(new URLSearchParams(location.search).get("limit")) || 100));
export const ROWS_STEP = 50;
export const RETRY_MIN_MS = 500;

export const node = {mode: null, lastSeq: null};
export const table = {sessions: [], shown: ROWS_STEP, more: false, loading: false};
// view.cursor is the highest event seq folded (the transcript's lastSeq to begin with): every
// event at or below it is a duplicate, and a reconnect asks for after=cursor, so nothing is
// lost or doubled.
export const view = {
  id: null, session: null, cursor: null, ws: null, retryMs: RETRY_MIN_MS, retryTimer: null,
  reconnects: 0, generation: 0, turnId: null, outputItems: new Map(), older: null,
};
// Pending approvals of the whole node, counted by session.
export const pending = {bySession: new Map(), total: 0};
