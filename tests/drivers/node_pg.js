// node-postgres (pg) against a running Freshet: parameterized queries
// (extended protocol), typed results, a materialized view kept up to date,
// errors with SQLSTATEs. Usage: node node_pg.js PORT  (NODE_PATH: pg's dir)
const assert = require('assert');
const { Client } = require('pg');

async function main() {
  const client = new Client({ host: '127.0.0.1', port: Number(process.argv[2]), user: 'freshet', database: 'freshet' });
  await client.connect();
  try {
    await client.query('DROP TABLE IF EXISTS node_t CASCADE');
    await client.query('CREATE TABLE node_t (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, ok BOOLEAN, seen TIMESTAMP)');
    await client.query('CREATE MATERIALIZED VIEW node_count AS SELECT count(*) AS n, sum(score) AS total FROM node_t');
    for (const row of [[1, 'ada', 1.5, true, '2026-01-02 03:04:05'], [2, 'bob', -2, false, null], [3, 'cé', null, null, null]]) {
      await client.query('INSERT INTO node_t VALUES ($1, $2, $3, $4, $5)', row);
    }
    const result = await client.query('SELECT id, name, score, ok FROM node_t WHERE id >= $1 ORDER BY id', [1]);
    assert.deepStrictEqual(result.fields.map((f) => f.name), ['id', 'name', 'score', 'ok']);
    // BIGINT arrives as a string in node-postgres (as with Postgres).
    assert.deepStrictEqual(result.rows, [
      { id: '1', name: 'ada', score: 1.5, ok: true },
      { id: '2', name: 'bob', score: -2, ok: false },
      { id: '3', name: 'cé', score: null, ok: null },
    ]);
    const seen = await client.query('SELECT seen FROM node_t WHERE id = $1', [1]);
    assert.ok(seen.rows[0].seen instanceof Date, 'a TIMESTAMP arrives as a Date');
    const view = await client.query('SELECT n, total FROM node_count');
    assert.deepStrictEqual(view.rows, [{ n: '3', total: -0.5 }]);
    const update = await client.query('UPDATE node_t SET score = $1 WHERE id = $2', [10, 2]);
    assert.strictEqual(update.rowCount, 1);
    const after = await client.query({ text: 'SELECT total FROM node_count', rowMode: 'array' });
    assert.deepStrictEqual(after.rows, [[11.5]]);
    await assert.rejects(client.query('SELECT * FROM node_missing'), (error) => error.code === '42P01');
    const still = await client.query('SELECT $1::text AS greeting', ['hello']);
    assert.strictEqual(still.rows[0].greeting, 'hello');
  } finally {
    await client.end();
  }
  console.log('ok node-postgres');
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
