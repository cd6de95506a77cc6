-- mqueue table for SQLite (one table per queue, named after it: here "cdr").
CREATE TABLE cdr (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key VARCHAR(255) NOT NULL DEFAULT '',
    val TEXT NOT NULL DEFAULT ''
);
