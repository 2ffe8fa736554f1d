// Reads the text PostgreSQL writes for a composite value (record_out): `(id,"a name",,t)`. A query that returns each
// row as one such text costs node-postgres one string a row instead of one a column.

/**
 * The `columns` fields of the record `text`, null for a NULL. record_out leaves a value unquoted unless it is empty or
 * holds a quote, backslash, parenthesis, comma or white space; inside quotes it doubles every quote and backslash.
 */
export function parseRecord(text: string, columns: number): Array<string | null> {
  const fields = new Array<string | null>(columns);
  const end = text.length;
  if (text.charCodeAt(0) !== 40 /* ( */) throw malformed(text, 0);
  let i = 1;
  // The next backslash, -1 when none is left: only quoted values hold one, and they are read in order.
  let backslash = text.indexOf('\\');
  for (let c = 0; c < columns; c++) {
    if (text.charCodeAt(i) === 34 /* " */) {
      let value = '';
      let from = i + 1;
      for (;;) {
        const quote = text.indexOf('"', from);
        if (quote < 0) throw malformed(text, i);
        if (backslash !== -1 && backslash < quote) {
          // A backslash stands for the character after it (record_out writes \\ for \).
          value += text.slice(from, backslash) + text.charAt(backslash + 1);
          from = backslash + 2;
          backslash = text.indexOf('\\', from);
        } else if (text.charCodeAt(quote + 1) === 34) {
          value += text.slice(from, quote + 1);
          from = quote + 2;
        } else {
          value += text.slice(from, quote);
          i = quote + 1;
          break;
        }
      }
      fields[c] = value;
    } else {
      let j = i;
      for (let ch = text.charCodeAt(j); ch !== 44 /* , */ && ch !== 41 /* ) */ && j < end; ch = text.charCodeAt(++j));
      // An empty unquoted field is a NULL; an empty string is written "".
      fields[c] = j === i ? null : text.slice(i, j);
      i = j;
    }
    if (text.charCodeAt(i) !== (c === columns - 1 ? 41 /* ) */ : 44) /* , */) throw malformed(text, i);
    i++;
  }
  if (i !== end) throw malformed(text, i);
  return fields;
}

function malformed(text: string, at: number): Error {
  return new Error(`unexpected record text at character ${at}: ${JSON.stringify(text.slice(Math.max(0, at - 20), at + 20))}`);
}
