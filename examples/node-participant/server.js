// accounts: a txcoord participant in Node.js on PostgreSQL (docs/participants.md).
//
//   TXC_PG_URL=postgresql://user@host/db LISTEN=0.0.0.0:7001 node server.js
//
// Saga: Execute accounts.debit / Compensate accounts.refund. 2PC: Prepare, Commit, Abort of
// accounts.debit. Execute accounts.balance reads a balance (for `txc participant check`).
// Payloads are JSON: {"account": "alice", "amount": 30}. Unary methods only: Batch answers
// UNIMPLEMENTED, and the coordinator then uses the unary methods.
// TLS: TXC_TLS_CERT + TXC_TLS_KEY (PEM files); TXC_TLS_CLIENT_CA also requires client certificates.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { Pool } = require('pg');
const { barrierCall, Refused, reply, FAILED, RETRY } = require('./barrier');
const twoPhase = require('./twophase');
const { SCHEMA } = require('./schema');

const PROTO = process.env.TXC_PROTO || path.join(__dirname, '..', '..', 'protos', 'txc', 'v1', 'participant.proto');
const MAX_ID = 128; // gid and branch: the coordinator's limit, and the barrier's columns

function decode(payload) {
  try {
    const body = JSON.parse(Buffer.from(payload).toString('utf8'));
    if (typeof body.account !== 'string' || !Number.isSafeInteger(body.amount)) throw new Error('shape');
    return body;
  } catch {
    throw new Refused('payload cannot be decoded: {"account": string, "amount": integer} expected');
  }
}

// The business steps: each gets the barrier's client, inside its transaction.
async function debit(client, payload) {
  const t = decode(payload);
  const res = await client.query('SELECT amount FROM balances WHERE account = $1 FOR UPDATE', [t.account]);
  if (res.rows.length === 0) throw new Refused(`no account ${t.account}`);
  const balance = Number(res.rows[0].amount);
  if (balance < t.amount) throw new Refused('insufficient funds');
  await client.query('UPDATE balances SET amount = amount - $2 WHERE account = $1', [t.account, t.amount]);
  return Buffer.from(JSON.stringify({ balance: balance - t.amount }));
}

async function refund(client, payload) {
  const t = decode(payload);
  await client.query('UPDATE balances SET amount = amount + $2 WHERE account = $1', [t.account, t.amount]);
  return Buffer.alloc(0);
}

async function balance(pool, payload) {
  // A read: safe to repeat, so it needs no barrier row.
  const { account } = JSON.parse(Buffer.from(payload).toString('utf8'));
  const res = await pool.query('SELECT amount FROM balances WHERE account = $1', [account]);
  if (res.rows.length === 0) return reply(FAILED, null, `no account ${account}`);
  return reply('OUTCOME_OK', Buffer.from(JSON.stringify({ balance: Number(res.rows[0].amount) })));
}

function routes(pool) {
  const saga = (op, fn) => (req) => barrierCall(pool, op, req, (client) => fn(client, req.payload));
  return {
    Execute: {
      'accounts.debit': saga('execute', debit),
      'accounts.balance': (req) => balance(pool, req.payload),
    },
    Compensate: { 'accounts.refund': saga('compensate', refund) },
    Prepare: { 'accounts.debit': (req) => twoPhase.prepare(pool, req, (client) => debit(client, req.payload)) },
    Commit: { 'accounts.debit': (req) => twoPhase.commit(pool, req) },
    Abort: { 'accounts.debit': (req) => twoPhase.abort(pool, req) },
  };
}

function invalid(req) {
  for (const field of ['gid', 'branch']) {
    if (!req[field] || req[field].length > MAX_ID) return `invalid request: ${field} must be 1-${MAX_ID} characters`;
  }
  return '';
}

// One unary method: validation, routing by operation, and every exception to an outcome.
function method(name, table) {
  return (call, callback) => {
    const req = call.request;
    const problem = invalid(req);
    const handler = table[req.operation];
    if (!problem && !handler) {
      // A name this service does not serve is a misconfiguration, not a business refusal:
      // UNIMPLEMENTED, which the coordinator does not retry and does not compensate as a "no".
      const served = Object.keys(table).sort().join(', ') || 'none';
      callback({ code: grpc.status.UNIMPLEMENTED,
        details: `unknown operation '${req.operation}' for ${name} (this service has: ${served})` });
      return;
    }
    const work = problem ? Promise.resolve(reply(FAILED, null, problem)) : handler(req);
    work.then((answer) => callback(null, answer), (err) => {
      // A bug or an unclassified database error: unknown outcome, retried with the same key.
      console.error(`${name} ${req.operation}: ${err.code || ''} ${err.message}`);
      callback(null, reply(RETRY, null, `unexpected error: ${err.code || err.name}`));
    });
  };
}

function credentials() {
  const { TXC_TLS_CERT: cert, TXC_TLS_KEY: key, TXC_TLS_CLIENT_CA: ca } = process.env;
  if (!cert) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(ca ? fs.readFileSync(ca) : null,
    [{ cert_chain: fs.readFileSync(cert), private_key: fs.readFileSync(key) }], Boolean(ca));
}

async function main() {
  const pool = new Pool({ connectionString: process.env.TXC_PG_URL, max: 20 });
  await pool.query(SCHEMA);
  const definition = protoLoader.loadSync(PROTO, { keepCase: true, longs: String, enums: String, defaults: true });
  const { Participant } = grpc.loadPackageDefinition(definition).txc.v1;
  const server = new grpc.Server();
  const table = routes(pool);
  const impl = {};
  for (const name of Object.keys(table)) impl[name] = method(name, table[name]);
  server.addService(Participant.service, impl);
  const listen = process.env.LISTEN || '0.0.0.0:7001';
  server.bindAsync(listen, credentials(), (err, port) => {
    if (err) { console.error(err.message); process.exit(1); }
    console.log(`listening on ${listen.replace(/:\d+$/, '')}:${port}`);
  });
  const stop = () => server.tryShutdown(() => pool.end().then(() => process.exit(0)));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => { console.error(err.message); process.exit(1); });
