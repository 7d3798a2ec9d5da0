// 2PC branches of docs/participants.md ("Two-phase commit") on PostgreSQL: the local
// transaction is PREPAREd under an XID derived from (gid, branch); txc_xa, committed before
// it, maps the XID back and records the vote; its row lock serialises calls for a branch.
'use strict';

const crypto = require('crypto');
const { Refused, reply, OK, FAILED, RETRY } = require('./barrier');

// 'txc:' + 40 hex digits of SHA-256 over the length-prefixed gid and branch (the Python
// SDK's xid_for): the same XID on every retry and in every process.
function xidFor(gid, branch) {
  const hash = crypto.createHash('sha256');
  for (const part of [gid, branch]) {
    const data = Buffer.from(part, 'utf8');
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    hash.update(length).update(data);
  }
  return 'txc:' + hash.digest('hex').slice(0, 40);
}

const BUSY = reply(RETRY, null, 'busy: another call for this branch is in progress');

// Runs fn(client, row) holding the branch's txc_xa row lock; RETRY at once if a twin has it
// (waiting would let in-doubt branches tie up every pooled connection).
async function withBranchLock(pool, xid, fn) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const res = await client.query(
      'SELECT state, result, message FROM txc_xa WHERE xid = $1 FOR UPDATE SKIP LOCKED', [xid]);
    if (res.rows.length === 0) {
      await client.query('ROLLBACK');
      const exists = await pool.query('SELECT 1 FROM txc_xa WHERE xid = $1', [xid]);
      return exists.rows.length ? BUSY : null;
    }
    const answer = await fn(client, res.rows[0]);
    await client.query('COMMIT');
    return answer;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

async function setState(client, xid, state, extra = {}) {
  await client.query(
    `UPDATE txc_xa SET state = $2, result = $3, message = $4, updated_at = now() WHERE xid = $1`,
    [xid, state, extra.result || null, (extra.message || '').slice(0, 512) || null]);
}

async function isPrepared(pool, xid) {
  const res = await pool.query('SELECT 1 FROM pg_prepared_xacts WHERE gid = $1', [xid]);
  return res.rows.length > 0;
}

// Runs the business step in its own transaction with the branch's barrier row, and
// prepares it: the vote. A refusal rolls back and is remembered as a no.
async function prepareLocal(pool, xid, req, fn) {
  const work = await pool.connect();
  try {
    await work.query('BEGIN');
    await work.query("SET LOCAL lock_timeout = '2s'");
    const result = await fn(work);
    // Visible exactly when the branch commits: how a later Commit that finds no XID tells
    // "already committed" from "never prepared".
    await work.query(
      `INSERT INTO txc_barrier (gid, branch, op, reason, outcome, created_at)
       VALUES ($1, $2, 'prepare', 'prepare', 1, now())`, [req.gid, req.branch]);
    await work.query(`PREPARE TRANSACTION '${xid}'`);
    return { vote: reply(OK, result), state: 'prepared' };
  } catch (err) {
    await work.query('ROLLBACK').catch(() => {});
    if (!(err instanceof Refused)) throw err;
    return { vote: reply(FAILED, null, err.message), state: 'refused' };
  } finally {
    work.release();
  }
}

async function prepare(pool, req, fn) {
  const xid = xidFor(req.gid, req.branch);
  // The claim is committed first: a prepared transaction is invisible to recovery.
  await pool.query(
    `INSERT INTO txc_xa (xid, gid, branch, operation, state, created_at, updated_at)
     VALUES ($1, $2, $3, $4, 'preparing', now(), now()) ON CONFLICT (xid) DO NOTHING`,
    [xid, req.gid, req.branch, req.operation]);
  const answer = await withBranchLock(pool, xid, async (client, row) => {
    if (row.state === 'prepared' || row.state === 'committed') return reply(OK, row.result, row.message);
    if (row.state === 'refused') return reply(FAILED, null, row.message || 'refused');
    if (row.state === 'aborted') return reply(FAILED, null, 'prepare refused: its abort already ran; hanging request');
    if (await isPrepared(pool, xid)) { // died after PREPARE, before recording the vote
      await setState(client, xid, 'prepared', { message: 'already prepared' });
      return reply(OK, null, 'already prepared');
    }
    const { vote, state } = await prepareLocal(pool, xid, req, fn);
    await setState(client, xid, state, { result: vote.result, message: vote.message });
    return vote;
  });
  return answer || BUSY; // the claim was there: only a twin can hide it
}

// COMMIT PREPARED / ROLLBACK PREPARED; false when the XID is not (any more) prepared.
async function finish(pool, statement, xid) {
  try {
    await pool.query(`${statement} '${xid}'`);
    return true;
  } catch (err) {
    if (err.code === '42704') return false; // undefined_object: no such prepared transaction
    throw err;
  }
}

async function committedEarlier(pool, req) {
  const res = await pool.query(
    "SELECT 1 FROM txc_barrier WHERE gid = $1 AND branch = $2 AND op = 'prepare'", [req.gid, req.branch]);
  return res.rows.length > 0;
}

async function commit(pool, req) {
  const xid = xidFor(req.gid, req.branch);
  const answer = await withBranchLock(pool, xid, async (client, row) => {
    if (row.state === 'committed') return reply(OK, null, 'already committed');
    if (row.state !== 'prepared' && row.state !== 'preparing') {
      return reply(FAILED, null, `cannot commit: this branch is ${row.state}`);
    }
    if (!(await finish(pool, 'COMMIT PREPARED', xid)) && !(await committedEarlier(pool, req))) {
      return reply(FAILED, null, 'cannot commit: never prepared (or rolled back)');
    }
    await setState(client, xid, 'committed', { result: row.result });
    return reply(OK);
  });
  return answer || reply(FAILED, null, 'cannot commit: unknown branch, never prepared here');
}

async function abort(pool, req) {
  const xid = xidFor(req.gid, req.branch);
  // No row yet: a null abort. The row it leaves makes a late Prepare vote no.
  const fresh = await pool.query(
    `INSERT INTO txc_xa (xid, gid, branch, operation, state, created_at, updated_at)
     VALUES ($1, $2, $3, $4, 'aborted', now(), now()) ON CONFLICT (xid) DO NOTHING`,
    [xid, req.gid, req.branch, req.operation]);
  if (fresh.rowCount === 1) return reply(OK, null, 'null abort: never prepared; a late prepare votes no');
  const answer = await withBranchLock(pool, xid, async (client, row) => {
    if (row.state === 'aborted' || row.state === 'refused') return reply(OK, null, 'nothing to roll back');
    if (row.state === 'committed') return reply(FAILED, null, 'cannot abort: already committed');
    await finish(pool, 'ROLLBACK PREPARED', xid);
    await setState(client, xid, 'aborted');
    return reply(OK);
  });
  return answer || BUSY;
}

module.exports = { prepare, commit, abort, xidFor };
