// Values both ways: statements and their parameters, integers in the
// chosen intMode, rows as objects.

/**
 * How the client returns integers (row values, `lsn`, `lastInsertRowId`,
 * CDC positions):
 * - `'number'` (default): JS numbers. An INTEGER beyond ±(2^53−1) throws a
 *   RangeError instead of losing precision. Results are `JSON.stringify`-safe.
 * - `'bigint'`: row values beyond ±(2^53−1) are BigInts (smaller ones stay
 *   numbers: the wire does not tell 1 from 1.0); `lsn` and
 *   `lastInsertRowId` are always BigInts.
 * - `'string'`: row values beyond ±(2^53−1) are decimal strings; `lsn` and
 *   `lastInsertRowId` are decimal strings. Results are `JSON.stringify`-safe.
 */
export type IntMode = 'number' | 'bigint' | 'string';

/** The type of an integer the client returns in mode M. */
export type IntOf<M extends IntMode> = M extends 'bigint' ? bigint : M extends 'string' ? string : number;

/** An LSN as the client takes it: any of the three forms. */
export type LsnInput = number | bigint | string;

/** A value that can be bound to a parameter. */
export type SqlValue = null | undefined | boolean | number | bigint | string | Uint8Array | ArrayBuffer | Date;

/** Positional (`?`, `?NNN`) or named (`:name`, `@name`, `$name`) parameters. */
export type Params = readonly SqlValue[] | Readonly<Record<string, SqlValue>>;

/**
 * A statement and its parameters, as the `sql` tag builds it. Every
 * interpolated value becomes a `?` parameter; an interpolated Statement is
 * spliced in with its own parameters.
 */
export class Statement {
  readonly sql: string;
  readonly params: SqlValue[];

  constructor(sql: string, params: SqlValue[] = []) {
    this.sql = sql;
    this.params = params;
  }
}

/**
 * Build a statement from a template: ``sql`SELECT * FROM t WHERE id = ${id}` ``
 * is `{sql: 'SELECT * FROM t WHERE id = ?', params: [id]}`. Values are
 * never pasted into the SQL text.
 */
export function sql(strings: TemplateStringsArray, ...values: (SqlValue | Statement)[]): Statement {
  let text = strings[0] ?? '';
  const params: SqlValue[] = [];
  values.forEach((v, i) => {
    if (v instanceof Statement) {
      text += v.sql;
      params.push(...v.params);
    } else {
      text += '?';
      params.push(v);
    }
    text += strings[i + 1] ?? '';
  });
  return new Statement(text, params);
}

/** A parameter value as the server takes it over Cap'n Web. */
function encodeValue(v: SqlValue): unknown {
  if (v === undefined) return null;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (v instanceof Uint8Array && v.constructor !== Uint8Array) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (typeof v === 'number' && !Number.isFinite(v)) throw new RangeError(`${v} cannot be sent as a parameter`);
  return v;
}

export function encodeParams(p: Params | undefined): unknown {
  if (p === undefined) return undefined;
  if (Array.isArray(p)) return p.map(encodeValue);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) out[k] = encodeValue(v as SqlValue);
  return out;
}

export function toBigLsn(v: LsnInput): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`an LSN is a whole number: ${v}`);
    return BigInt(v);
  }
  if (!/^[0-9]+$/.test(v)) throw new RangeError(`an LSN is a whole number: ${JSON.stringify(v)}`);
  return BigInt(v);
}

const MAX = BigInt(Number.MAX_SAFE_INTEGER);
const MIN = -MAX;

/** An integer field (lsn, lastInsertRowId, rowid) in mode m. */
export function intField(v: unknown, m: IntMode): any {
  if (v === null || v === undefined) return v;
  if (typeof v !== 'bigint' && typeof v !== 'number') return v;
  switch (m) {
    case 'bigint':
      return typeof v === 'bigint' ? v : Number.isInteger(v) ? BigInt(v) : v;
    case 'string':
      return String(v);
    default:
      if (typeof v === 'bigint') {
        if (v > MAX || v < MIN) throw new RangeError(`integer ${v} is beyond ±(2^53−1): use intMode 'bigint' or 'string'`);
        return Number(v);
      }
      return v;
  }
}

/** A row value in mode m: only BigInts (integers beyond ±(2^53−1)) change. */
export function rowValue(v: unknown, m: IntMode): unknown {
  if (typeof v !== 'bigint') return v;
  if (m === 'bigint') return v;
  if (m === 'string') return v.toString();
  throw new RangeError(`integer ${v} is beyond ±(2^53−1): use intMode 'bigint' or 'string'`);
}

function put(o: Record<string, unknown>, k: string, v: unknown) {
  if (k === '__proto__') Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  else o[k] = v;
}

/** Row arrays with their values in mode m. */
export function rowArrays(rows: readonly unknown[][], m: IntMode): unknown[][] {
  return rows.map((r) => (r.some((v) => typeof v === 'bigint') ? r.map((v) => rowValue(v, m)) : r));
}

/** Rows (arrays, already in their mode) as objects keyed by column name; of duplicate names the first column wins. */
export function rowObjects(columns: readonly string[], rows: readonly unknown[][]): Record<string, unknown>[] {
  return rows.map((r) => {
    const o: Record<string, unknown> = {};
    for (let i = 0; i < columns.length; i++) {
      const c = columns[i]!;
      if (!Object.prototype.hasOwnProperty.call(o, c)) put(o, c, r[i]);
    }
    return o;
  });
}

/** An object of row values (CDC before/after/primaryKey) in mode m. */
export function valueObject(o: unknown, m: IntMode): Record<string, unknown> | undefined {
  if (o === null || o === undefined || typeof o !== 'object') return undefined;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) put(out, k, rowValue(v, m));
  return out;
}

/**
 * A `JSON.stringify` replacer for results in intMode 'bigint': BigInts
 * become decimal strings and byte arrays base64.
 * `JSON.stringify(result, jsonReplacer)`.
 */
export function jsonReplacer(this: unknown, _key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Uint8Array) {
    let s = '';
    for (const b of value) s += String.fromCharCode(b);
    return btoa(s);
  }
  return value;
}

type Tok = { k: 'w'; v: string } | { k: '(' | ')' | ';' };

/** The words (upper case) and parentheses and semicolons of SQL, without comments, strings and quoted names. */
function tokens(text: string): Tok[] {
  const out: Tok[] = [];
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text[i]!;
    if (c === '-' && text[i + 1] === '-') {
      const e = text.indexOf('\n', i);
      i = e < 0 ? n : e + 1;
    } else if (c === '/' && text[i + 1] === '*') {
      const e = text.indexOf('*/', i + 2);
      i = e < 0 ? n : e + 2;
    } else if (c === "'" || c === '"' || c === '`' || c === '[') {
      const close = c === '[' ? ']' : c;
      i++;
      while (i < n) {
        if (text[i] === close) {
          if (close !== ']' && text[i + 1] === close) { i += 2; continue; }
          break;
        }
        i++;
      }
      i++;
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][A-Za-z0-9_$]*/.exec(text.slice(i, i + 64))!;
      let j = i + m[0].length;
      while (j < n && /[A-Za-z0-9_$]/.test(text[j]!)) j++;
      out.push({ k: 'w', v: text.slice(i, j).toUpperCase() });
      i = j;
    } else if (c === '(' || c === ')' || c === ';') {
      out.push({ k: c });
      i++;
    } else i++;
  }
  return out;
}

/**
 * Whether SQL only reads: one statement that is a SELECT, VALUES or
 * EXPLAIN, or a WITH whose main statement is a SELECT or VALUES.
 * Anything else (a PRAGMA, several statements) counts as a write: the
 * safe side for bookmarks and idempotency keys.
 */
export function isReadOnlySql(text: string): boolean {
  const toks = tokens(text);
  // One statement: nothing but semicolons after the first one.
  const semi = toks.findIndex((t) => t.k === ';');
  if (semi >= 0 && toks.slice(semi).some((t) => t.k !== ';')) return false;
  const stmt = semi >= 0 ? toks.slice(0, semi) : toks;
  const first = stmt[0];
  if (!first || first.k !== 'w') return false;
  if (first.v === 'SELECT' || first.v === 'VALUES' || first.v === 'EXPLAIN') return true;
  if (first.v !== 'WITH') return false;
  // The first statement keyword outside the common table expressions.
  let depth = 0;
  for (const t of stmt.slice(1)) {
    if (t.k === '(') depth++;
    else if (t.k === ')') depth--;
    else if (t.k === 'w' && depth === 0 && ['SELECT', 'VALUES', 'INSERT', 'UPDATE', 'DELETE', 'REPLACE'].includes(t.v))
      return t.v === 'SELECT' || t.v === 'VALUES';
  }
  return false;
}
