/**
 * History offsets, as the node writes them: `<milliseconds>-<sequence>` (a Redis
 * stream id; a bare `<milliseconds>` means sequence 0). Both parts are unsigned 64-bit
 * integers, more than a JavaScript number holds exactly, so they are compared as
 * decimal strings: the SDK's dedupe and resume depend on ordering them exactly as
 * the server does.
 */

const FORM = /^(\d+)(?:-(\d+))?$/;

/** Whether `text` is an offset the server could have written. */
export function isOffset(text: unknown): text is string {
  return typeof text === "string" && FORM.test(text);
}

/** Compares two decimal strings of any length by value. */
function compareDigits(a: string, b: string): number {
  a = a.replace(/^0+(?=\d)/, "");
  b = b.replace(/^0+(?=\d)/, "");
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

/**
 * Orders two offsets as the server does: negative when `a` came first, 0 when they are
 * the same message, positive when `a` came later. Throws a `TypeError` on a string that
 * is not an offset.
 */
export function compareOffsets(a: string, b: string): number {
  const x = FORM.exec(a);
  const y = FORM.exec(b);
  if (!x || !y) throw new TypeError(`not an offset: ${JSON.stringify(x ? b : a)}`);
  return compareDigits(x[1], y[1]) || compareDigits(x[2] || "0", y[2] || "0");
}
