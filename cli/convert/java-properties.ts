/**
 * Reads a Java `.properties` file (Spring Boot's application.properties) as java.util.Properties
 * does: `key=value`, `key: value` or `key value`; `#` and `!` comments; a trailing backslash
 * continues a line; `\t`, `\n`, `\uXXXX` and an escaped separator in keys and values. Spring Boot's
 * `#---` document separator is a comment here, so every document's keys are read, later ones
 * winning, as Spring Boot does when no profile condition sets them apart.
 */
export function parseJavaProperties(text: string): Map<string, string> {
  const entries = new Map<string, string>();
  for (const line of logicalLines(text)) {
    const { key, value } = splitEntry(line);
    entries.set(unescape(key), unescape(value));
  }
  return entries;
}

/** The file's lines joined at continuations, without comments or blank lines, leading blanks removed. */
function logicalLines(text: string): string[] {
  const lines: string[] = [];
  let pending: string | undefined;
  for (const raw of text.split(/\r\n|\r|\n/)) {
    const line = raw.replace(/^[ \t\f]+/, "");
    if (pending === undefined && (line === "" || line.startsWith("#") || line.startsWith("!"))) continue;
    const joined = (pending ?? "") + line;
    if (endsWithContinuation(joined)) {
      pending = joined.slice(0, -1);
      continue;
    }
    pending = undefined;
    lines.push(joined);
  }
  if (pending !== undefined && pending !== "") lines.push(pending);
  return lines;
}

/** An odd number of backslashes at the end: the last one escapes the line break. */
function endsWithContinuation(line: string): boolean {
  const trailing = /\\*$/.exec(line)?.[0].length ?? 0;
  return trailing % 2 === 1;
}

/** The key runs to the first unescaped `=`, `:` or blank; blanks and one separator follow it. */
function splitEntry(line: string): { key: string; value: string } {
  let index = 0;
  while (index < line.length) {
    const char = line[index]!;
    if (char === "\\") index += 2;
    else if (char === "=" || char === ":" || char === " " || char === "\t" || char === "\f") break;
    else index++;
  }
  const key = line.slice(0, index);
  const rest = /^[ \t\f]*[=:]?[ \t\f]*/.exec(line.slice(index))?.[0].length ?? 0;
  return { key, value: line.slice(index + rest) };
}

function unescape(text: string): string {
  return text.replace(/\\(u[0-9a-fA-F]{4}|.)/g, (_match, escaped: string) => {
    if (escaped.length === 5) return String.fromCharCode(parseInt(escaped.slice(1), 16));
    return { t: "\t", n: "\n", r: "\r", f: "\f" }[escaped] ?? escaped;
  });
}
