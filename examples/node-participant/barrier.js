// The saga barrier of docs/participants.md ("The barrier, step by step") on PostgreSQL:
// one txc_barrier row per (gid, branch, op), written in the same local transaction as the
// business change, holding the reply that is answered again to every repeat.
'use strict';

const OK = 'OUTCOME_OK';
const FAILED = 'OUTCOME_FAILED';
const RETRY = 'OUTCOME_RETRY';
const CODES = { OUTCOME_OK: 1, OUTCOME_FAILED: 2, OUTCOME_RETRY: 3 };
const NAMES = { 1: OK, 2: FAILED, 3: RETRY };
const UNDO = { compensate: ['execute', 'null-compensation'], abort: ['prepare', 'rollback'] };

// A business refusal: answered FAILED, the business writes rolled back.
class Refused extends Error {}

// SQLSTATEs worth another try: serialization failure, deadlock, lock timeout, query
// cancelled, too many connections, server shutting down, connection exceptions (class 08).
const TRANSIENT = new Set(['40001', '40P01', '55P03', '57014', '53300', '57P01', '57P02', '57P03',
  'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT']); // and Node's own lost connections

function isTransient(err) {
  const code = err && err.code;
  if (typeof code !== 'string') return false;
  return TRANSIENT.has(code) || code.startsWith('08');
}

function reply(outcome, result, message) {
  return { outcome, result: result || Buffer.alloc(0), message: message || '' };
}

// Runs fn(client) in one transaction; transient errors are retried a few times, then RETRY.
async function inTransaction(pool, fn, attempts = 3) {
  for (let attempt = 1; ; attempt++) {
    const client = await pool.connect().catch((err) => err);
    if (client instanceof Error) {
      if (attempt >= attempts) return reply(RETRY, null, `database unavailable: ${client.code || client.message}`);
      continue;
    }
    try {
      await client.query('BEGIN');
      const answer = await fn(client);
      await client.query(answer.rollback ? 'ROLLBACK' : 'COMMIT');
      return answer.reply;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      if (!isTransient(err)) throw err;
      if (attempt >= attempts) return reply(RETRY, null, `transient database error: ${err.code}`);
      await new Promise((r) => setTimeout(r, 10 * 2 ** attempt * Math.random()));
    } finally {
      client.release();
    }
  }
}

async function insertRow(client, gid, branch, op, reason) {
  const res = await client.query(
    `INSERT INTO txc_barrier (gid, branch, op, reason, created_at) VALUES ($1, $2, $3, $4, now())
     ON CONFLICT (gid, branch, op) DO NOTHING`, [gid, branch, op, reason]);
  return res.rowCount === 1;
}

async function readRow(client, gid, branch, op) {
  // FOR SHARE: waits for a twin still writing the row, then reads its committed reply.
  const res = await client.query(
    `SELECT reason, outcome, result, message FROM txc_barrier
     WHERE gid = $1 AND branch = $2 AND op = $3 FOR SHARE`, [gid, branch, op]);
  const row = res.rows[0];
  return { reason: row.reason, reply: reply(NAMES[row.outcome] || OK, row.result, row.message) };
}

async function storeReply(client, gid, branch, op, answer) {
  await client.query(
    `UPDATE txc_barrier SET outcome = $4, result = $5, message = $6
     WHERE gid = $1 AND branch = $2 AND op = $3`,
    [gid, branch, op, CODES[answer.outcome], answer.result, (answer.message || '').slice(0, 512) || null]);
  return answer;
}

// Runs the business function; a forward op's refusal is remembered (savepoint), an undo's
// refusal rolls everything back so that the coordinator's retry runs it again.
async function runBusiness(client, req, op, fn) {
  const keep = op === 'execute';
  if (keep) await client.query('SAVEPOINT business');
  try {
    const result = await fn(client);
    return { reply: await storeReply(client, req.gid, req.branch, op, reply(OK, result)) };
  } catch (err) {
    if (!(err instanceof Refused)) throw err;
    if (!keep) return { reply: reply(FAILED, null, err.message), rollback: true };
    await client.query('ROLLBACK TO SAVEPOINT business');
    return { reply: await storeReply(client, req.gid, req.branch, op, reply(FAILED, null, err.message)) };
  }
}

// Execute: exactly once, refused if its compensation came first (hanging request).
async function forward(client, req, op, fn) {
  if (await insertRow(client, req.gid, req.branch, op, op)) return runBusiness(client, req, op, fn);
  const row = await readRow(client, req.gid, req.branch, op);
  if (row.reason !== op) {
    return { reply: reply(FAILED, null, `${op} refused: its undo already ran (${row.reason}); hanging request`) };
  }
  return { reply: row.reply }; // a repeat: the stored answer
}

// Compensate: own row first, then the forward row (one lock order for every undo).
async function undo(client, req, op, fn) {
  if (!(await insertRow(client, req.gid, req.branch, op, op))) {
    return { reply: (await readRow(client, req.gid, req.branch, op)).reply };
  }
  const [fwd, reason] = UNDO[op];
  if (await insertRow(client, req.gid, req.branch, fwd, reason)) {
    const note = `null ${op}: ${fwd} never ran`; // the new row also blocks the late forward call
    return { reply: await storeReply(client, req.gid, req.branch, op, reply(OK, null, note)) };
  }
  const forwardRow = await readRow(client, req.gid, req.branch, fwd);
  if (forwardRow.reply.outcome !== OK) {
    const note = `nothing to undo: ${fwd} was refused`;
    return { reply: await storeReply(client, req.gid, req.branch, op, reply(OK, null, note)) };
  }
  return runBusiness(client, req, op, fn);
}

// One saga call through the barrier: op is 'execute' or 'compensate'.
function barrierCall(pool, op, req, fn) {
  const step = op === 'execute' ? forward : undo;
  return inTransaction(pool, (client) => step(client, req, op, fn));
}

module.exports = { barrierCall, inTransaction, isTransient, Refused, reply, OK, FAILED, RETRY };
