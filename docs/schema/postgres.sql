-- mqueue table for PostgreSQL (one table per queue, named after it: here
-- "cdr"). VARCHAR, not TEXT: db_postgres reads TEXT as an escaped blob and
-- drops backslashes.
CREATE TABLE cdr (
    id SERIAL PRIMARY KEY,
    key VARCHAR NOT NULL DEFAULT '',
    val VARCHAR NOT NULL DEFAULT ''
);
