#!/usr/bin/env node
// duckdb.mjs - DuckDB (the npm package, which ships its own engine) as the tests' Parquet
// reader: a real analytics engine reading row groups and column chunks by range, as training
// and feature pipelines read structured data.
//
//   node duckdb.mjs make FILE.parquet ROWS     a table of ROWS rows, row groups of 100,000
//   node duckdb.mjs query FILE.parquet SQL     SQL over the file (named t), rows as JSON
import { DuckDBInstance } from '@duckdb/node-api';

const [cmd, file, arg] = process.argv.slice(2);
if (!['make', 'query'].includes(cmd) || !file || !arg) {
    console.error('usage: duckdb.mjs make FILE ROWS | query FILE SQL');
    process.exit(2);
}
const quoted = `'${file.replaceAll("'", "''")}'`;
const db = await DuckDBInstance.create(':memory:');
const con = await db.connect();
if (cmd === 'make') {
    const rows = Number.parseInt(arg, 10);
    await con.run(`COPY (SELECT i AS id, i % 97 AS k, md5(i::VARCHAR) AS s, hash(i) % 1000003 AS v
                         FROM range(${rows}) t(i))
                   TO ${quoted} (FORMAT parquet, ROW_GROUP_SIZE 100000)`);
} else {
    await con.run(`CREATE VIEW t AS SELECT * FROM read_parquet(${quoted})`);
    const r = await con.runAndReadAll(arg);
    console.log(JSON.stringify(r.getRows(), (_, v) => (typeof v === 'bigint' ? v.toString() : v)));
}
